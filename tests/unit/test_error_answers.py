"""gateway.http.errors: every domain error has its one answer (status and the reference's text)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from starlette.requests import Request

from gateway import errors
from gateway.http.errors import ANSWERS, handle_chorus_error


def domain_errors() -> list[type]:
    found, todo = [], [errors.ChorusError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


@pytest.mark.parametrize("cls", domain_errors(), ids=lambda c: c.__name__)
def test_every_domain_error_has_an_answer(cls):
    assert cls in ANSWERS and 400 <= ANSWERS[cls][0] < 600


def answer(exc: errors.ChorusError, headers: list | None = None) -> tuple[int, dict, dict]:
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers or []})
    response = asyncio.run(handle_chorus_error(request, exc))
    return response.status_code, msgspec.json.decode(response.body), dict(response.headers)


def test_answers_are_the_references_json():
    assert answer(errors.JobNotFound("abc"))[:2] == (
        404, {"code": 404, "error": "Job not found", "detail": "no job with id 'abc'"})
    assert answer(errors.InvalidRequest("config is not valid JSON", kind="Job rejected"))[1]["error"] == "Job rejected"
    status, body, headers = answer(errors.Busy(2, 2, 2), headers=[(b"content-length", b"100")])
    assert (status, body["detail"]) == (503, "Server busy: 2 engines not available (2 engines in use, 2 parallel allowed)")
    assert headers["connection"] == "close"  # its body may be unread: the client must not reuse the connection
    assert "connection" not in answer(errors.JobLocked("abc"))[2]
