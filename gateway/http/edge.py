"""ASGI middleware at the edge of the app: optional bearer-key auth on the job API, and
the request-latency histogram by route."""

from __future__ import annotations

import hmac
import time

import msgspec
from starlette.datastructures import Headers
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.errors import ErrorBody, carries_body
from gateway.jobs.metrics import Metrics


class Edge:
    def __init__(self, app: ASGIApp, routes: list[Route], metrics: Metrics, api_key: str | None) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return "unmatched"

    def _authorised(self, scope: Scope) -> bool:
        """Only /v2/* needs the key; health, capacity and metrics stay open. Without a key
        configured nothing is refused (the official client always sends some key)."""
        if self.api_key is None or not scope["path"].startswith("/v2/"):
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self._authorised(scope):
                await self.app(scope, receive, observe)
            else:
                body = msgspec.json.encode(ErrorBody(
                    code=401, error="Permission Denied",
                    detail="this worker requires 'Authorization: Bearer <key>' (--api-key)"))
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                           (b"content-length", str(len(body)).encode())]
                if carries_body(Headers(scope=scope)):  # its body is never read
                    headers.append((b"connection", b"close"))
                await observe({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:
            self.metrics.requests.labels(scope["method"], self._route(scope), str(status)).observe(
                time.perf_counter() - started)
