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


async def receive(request: Request, target: Path, limit: int) -> Upload:
    """Parse the request body; the data_file part goes to `target`."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidRequest("the request must be multipart/form-data with a 'config' field and a 'data_file' file",
                          kind="Malformed request")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)

    upload = Upload(fields={})
    state: dict = {"name": None, "file": False, "header_field": b"", "headers": {}, "buffer": bytearray(),
                   "parts": 0, "error": None}
    pending = bytearray()  # file bytes waiting to be written

    def on_part_begin() -> None:
        state["headers"], state["name"], state["file"] = {}, None, False
        state["parts"] += 1

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = state["header_field"].lower()
        state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["header_field"] = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = options.get(b"name", b"").decode("utf-8", "replace")
        is_file = b"filename" in options
        if state["name"] == FILE_FIELD and is_file:
            state["file"] = True
            upload.filename = options[b"filename"].decode("utf-8", "replace")
        state["buffer"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["file"]:
            pending.extend(data[start:end])
        elif len(state["buffer"]) + end - start <= MAX_FIELD_BYTES:
            state["buffer"].extend(data[start:end])
        else:
            state["error"] = InvalidRequest(f"the field {state['name']!r} is larger than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        if not state["file"] and state["name"]:
            try:
                upload.fields[state["name"]] = state["buffer"].decode("utf-8")
            except UnicodeDecodeError:
                state["error"] = InvalidRequest(f"the field {state['name']!r} is not UTF-8 text")

    parser = MultipartParser(params[b"boundary"], callbacks={
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    received = 0
    with open(target, "wb") as out:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large(limit)
                parser.write(chunk)
                if state["error"]:
                    raise state["error"]
                if state["parts"] > MAX_PARTS:
                    raise InvalidRequest(f"more than {MAX_PARTS} multipart parts")
                if pending:
                    data = bytes(pending)
                    pending.clear()
                    await asyncio.to_thread(out.write, data)
                    upload.size += len(data)
            parser.finalize()
        except ChorusError:
            raise
        except (MultipartParseError, ValueError, LookupError, TypeError) as exc:  # whatever the parser raises
            raise InvalidRequest(f"the multipart body is malformed: {exc}", kind="Malformed request") from None
        except ClientDisconnect:
            raise InvalidRequest("the client disconnected before the upload ended") from None
    return upload
