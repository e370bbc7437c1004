"""gateway.http.upload: the streaming multipart parser, fed chunk by chunk as an ASGI server
would (no server, no socket)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from starlette.requests import Request

from gateway.errors import InvalidRequest, UploadTooLarge
from gateway.http.upload import MAX_FIELD_BYTES, MAX_PARTS, receive

BOUNDARY = b"XyZ"


def part(name: str, content: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + content + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def parse(data: bytes, target: Path, limit: int = 4 << 20, chunk: int = 4096,
          content_type: bytes = b"multipart/form-data; boundary=XyZ"):
    chunks = [data[i: i + chunk] for i in range(0, len(data), chunk)] or [b""]

    async def scenario():
        messages = iter([{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                         for i, c in enumerate(chunks)])

        async def receive_message():
            return next(messages)

        scope = {"type": "http", "method": "POST", "path": "/v2/jobs", "headers": [(b"content-type", content_type)]}
        return await receive(Request(scope, receive_message), target, limit)

    return asyncio.run(scenario())


def test_fields_in_memory_and_the_file_to_disk(tmp_path):
    audio = bytes(range(256)) * 40
    upload = parse(body(part("config", b'{"type": "transcription"}'), part("data_file", audio, "a b.wav")),
                   tmp_path / "upload", chunk=7)  # boundaries split anywhere
    assert upload.fields == {"config": '{"type": "transcription"}'}
    assert upload.filename == "a b.wav" and upload.size == len(audio)
    assert (tmp_path / "upload").read_bytes() == audio


def test_data_file_as_a_plain_field_is_a_field(tmp_path):
    upload = parse(body(part("config", b"{}"), part("data_file", b"not a file")), tmp_path / "upload")
    assert upload.filename is None and upload.fields["data_file"] == "not a file"


@pytest.mark.parametrize("data, content_type, why", [
    (b"", b"application/json", "must be multipart/form-data"),
    (b"", b"multipart/form-data", "must be multipart/form-data"),
    (b"garbage without any boundary", b"multipart/form-data; boundary=XyZ", "malformed"),
    (body(part("config", b"x" * (MAX_FIELD_BYTES + 1))), b"multipart/form-data; boundary=XyZ", "larger than"),
    (body(part("config", b"\xff\xfe")), b"multipart/form-data; boundary=XyZ", "not UTF-8"),
    (body(*[part(f"f{i}", b"x") for i in range(MAX_PARTS + 1)]), b"multipart/form-data; boundary=XyZ",
     f"more than {MAX_PARTS}"),
])
def test_malformed_bodies_are_invalid_requests(tmp_path, data, content_type, why):
    with pytest.raises(InvalidRequest) as caught:
        parse(data, tmp_path / "upload", content_type=content_type)
    assert why in caught.value.detail


def test_past_the_limit_while_streaming(tmp_path):
    with pytest.raises(UploadTooLarge):
        parse(body(part("config", b"{}"), part("data_file", b"\0" * 5000, "a.wav")), tmp_path / "upload",
              limit=4096, chunk=1000)
