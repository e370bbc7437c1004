"""Every error is JSON: {"code": N, "error": "<SaaS enum text>", "detail": "<what is wrong>"}."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class ErrorBody(msgspec.Struct):
    code: int
    error: str
    detail: Any


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def error_response(status: int, error: str, detail: Any, close: bool = False) -> Response:
    response = json_response(ErrorBody(code=status, error=error, detail=detail), status)
    if close or status == 413:
        response.headers["connection"] = "close"
    return response


def carries_body(headers: Headers) -> bool:
    """A refused request may leave body bytes unread (refused on its content type or size before
    they were read). The server then closes the connection, and a client that reuses it races
    that close; "Connection: close" tells it to open a new one instead."""
    length = headers.get("content-length", "0")
    return "transfer-encoding" in headers or not (length.isdigit() and int(length) == 0)


_STARLETTE_ERRORS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.detail, close=carries_body(request.headers))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method, broken multipart) as JSON too."""
    assert isinstance(exc, HTTPException)
    error = _STARLETTE_ERRORS.get(exc.status_code, "Bad Request")
    return error_response(exc.status_code, error, exc.detail, close=carries_body(request.headers))


def bad_request(detail: str, error: str = "Bad Request") -> ApiError:
    return ApiError(400, error, detail)
