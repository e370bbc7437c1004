"""The HTTP edge: the Starlette app, its routes, the edge middleware (auth, latency), the one
table from domain errors to HTTP answers, the OpenAPI document, and the streaming upload
parser. Handlers ask the worker (gateway/jobs/worker.py) and encode its answers.

May import: gateway.jobs, gateway.transcript, gateway.errors, gateway.settings, shared.
"""
