"""Streaming multipart/form-data: small fields kept in memory (capped), the `data_file`
part written straight to the job's folder as it arrives. Past the size limit the request
is refused with 413 before the rest of the body is read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from gateway.errors import ChorusError, InvalidRequest, UploadTooLarge
from gateway.jobs.worker import Upload

MAX_FIELD_BYTES = 1 << 20
MAX_PARTS = 32
FILE_FIELD = "data_file"


def too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"the upload is larger than the {limit // (1 << 20)} MiB limit "
                                               "(--max-upload-mb)")


class _Parts:
    """python-multipart's callbacks: small fields kept (capped), file bytes handed on."""

    def __init__(self) -> None:
        self.upload = Upload(fields={})
        self.count = 0
        self.error: InvalidRequest | None = None
        self.file_bytes = bytearray()  # data_file bytes waiting to be written
        self._name: str | None = None
        self._is_file = False
        self._header = b""
        self._headers: dict[bytes, bytes] = {}
        self._buffer = bytearray()

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end")}

    def on_part_begin(self) -> None:
        self._headers, self._name, self._is_file = {}, None, False
        self.count += 1

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self._header = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == FILE_FIELD and b"filename" in options:
            self._is_file = True
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")
        self._buffer = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.file_bytes.extend(data[start:end])
        elif len(self._buffer) + end - start <= MAX_FIELD_BYTES:
            self._buffer.extend(data[start:end])
        else:
            self.error = InvalidRequest(f"the field {self._name!r} is larger than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self._is_file and self._name:
            try:
                self.upload.fields[self._name] = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                self.error = InvalidRequest(f"the field {self._name!r} is not UTF-8 text")


def _boundary(request: Request, limit: int) -> bytes:
    """The multipart boundary, once the headers say the body is one that may be read."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidRequest("the request must be multipart/form-data with a 'config' field and a 'data_file' file",
                             kind="Malformed request")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    return params[b"boundary"]


async def receive(request: Request, target: Path, limit: int) -> Upload:
    """Parse the request body as it streams in; the data_file part goes to `target`."""
    parts = _Parts()
    parser = MultipartParser(_boundary(request, limit), callbacks=parts.callbacks())
    received = 0
    with open(target, "wb") as out:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large(limit)
                parser.write(chunk)
                if parts.error:
                    raise parts.error
                if parts.count > MAX_PARTS:
                    raise InvalidRequest(f"more than {MAX_PARTS} multipart parts")
                if parts.file_bytes:
                    data = bytes(parts.file_bytes)
                    parts.file_bytes.clear()
                    await asyncio.to_thread(out.write, data)
                    parts.upload.size += len(data)
            parser.finalize()
        except ChorusError:
            raise
        except (MultipartParseError, ValueError, LookupError, TypeError) as exc:  # whatever the parser raises
            raise InvalidRequest(f"the multipart body is malformed: {exc}", kind="Malformed request") from None
        except ClientDisconnect:
            raise InvalidRequest("the client disconnected before the upload ended") from None
    return parts.upload
