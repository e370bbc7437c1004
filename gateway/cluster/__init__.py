"""Cluster mode: many workers, one API, on PostgreSQL (the job table, engine accounting,
membership) and an object store (every job's files). See docs/cluster-design.md.

May import: gateway.jobs, gateway.transcript, gateway.errors, gateway.settings, shared.
Nothing in gateway.jobs imports this package; gateway/cli.py composes the worker.
"""
