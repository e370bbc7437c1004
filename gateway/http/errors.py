"""Every error is JSON: {"code": N, "error": "<SaaS enum text>", "detail": "<what is wrong>"}.

The one table from domain errors (gateway/errors.py) to HTTP answers, and the handlers that
Starlette calls with them (gateway/http/app.py registers `EXCEPTION_HANDLERS`)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway import errors


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


# Domain error -> (status, the reference's error text); InvalidRequest carries its own text.
ANSWERS: dict[type[errors.ChorusError], tuple[int, str]] = {
    errors.InvalidRequest: (400, "Bad Request"),
    errors.FeatureUnavailable: (400, "Requested product not available"),
    errors.JobNotFound: (404, "Job not found"),
    errors.TranscriptNotReady: (404, "Transcription not ready"),
    errors.JobRejected: (404, "Job rejected"),
    errors.FormatNotSupported: (404, "Format Not Supported"),
    errors.LogNotAvailable: (404, "Log file not available"),
    errors.JobExpired: (410, "Job Expired"),
    errors.JobDeleted: (410, "File Expired"),
    errors.UploadTooLarge: (413, "Payload Too Large"),
    errors.InvalidQuery: (422, "Unprocessable Entity"),
    errors.JobLocked: (423, "Resource Locked"),
    errors.Busy: (503, "Server busy"),
    errors.ShuttingDown: (503, "Server busy"),
}


async def handle_chorus_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ChorusError)
    status, text = next(ANSWERS[cls] for cls in type(exc).__mro__ if cls in ANSWERS)
    if isinstance(exc, errors.InvalidRequest):
        text = exc.kind
    return error_response(status, text, exc.detail, close=carries_body(request.headers))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method, broken multipart) as JSON too."""
    assert isinstance(exc, HTTPException)
    error = _STARLETTE_ERRORS.get(exc.status_code, "Bad Request")
    return error_response(exc.status_code, error, exc.detail, close=carries_body(request.headers))


EXCEPTION_HANDLERS = {errors.ChorusError: handle_chorus_error, HTTPException: handle_http_exception}