"""The worker's outgoing HTTP: fetching a job's audio (`fetch_data`) and job-end callbacks
(`notification_config`, with the SaaS body rules of api-reference §6.5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gateway.jobs.blobs import BlobStore
from gateway.transcript.config import NotificationConfig as Notification

USER_AGENT = "Speechmatics-API/2.0"  # what the SaaS sends, and receivers may check
FETCH_TIMEOUT_S = 60.0
CALLBACK_ATTEMPTS = 4
CALLBACK_BACKOFF_S = 1.0
CALLBACK_TIMEOUT_S = 15.0


class FetchFailed(Exception):
    pass


def _headers(lines: list[str] | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    for line in lines or ():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    return headers


async def fetch(url: str, auth_headers: list[str] | None, target: Path, limit: int) -> int:
    """Stream `url` into `target`, at most `limit` bytes; returns the size."""
    if not url.lower().startswith(("http://", "https://")):
        raise FetchFailed(f"unable to fetch audio: {url!r} is not an http(s) URL")
    size = 0
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True) as client:
            async with client.stream("GET", url, headers=_headers(auth_headers)) as response:
                if response.status_code >= 400:
                    raise FetchFailed(f"unable to fetch audio: http status code {response.status_code}")
                with open(target, "wb") as out:
                    async for chunk in response.aiter_bytes(1 << 16):
                        size += len(chunk)
                        if size > limit:
                            raise FetchFailed(f"unable to fetch audio: larger than the {limit >> 20} MiB limit")
                        await asyncio.to_thread(out.write, chunk)
    except httpx.HTTPError as exc:
        raise FetchFailed(f"unable to fetch audio: {type(exc).__name__}: {exc}") from None
    return size


_PARTS = {  # content name -> (file in the job folder, media type)
    "transcript": ("json", "application/json"),
    "transcript.json-v2": ("json", "application/json"),
    "transcript.txt": ("txt", "text/plain"),
    "transcript.srt": ("srt", "text/plain"),
}


def callback_body(notification: Notification, blobs: BlobStore, job_id: str, jobinfo: bytes,
                  attempt: int = 1) -> dict:
    """httpx request arguments for one callback, by the SaaS body rules (blocking reads)."""

    def read(name: str) -> tuple[bytes, str]:
        try:
            if name == "jobinfo":
                return jobinfo, "application/json"
            if name in _PARTS:
                fmt, media = _PARTS[name]
                return blobs.read_output(job_id, fmt, attempt=attempt), media
            if name == "data":
                return blobs.upload_path(job_id).read_bytes(), "application/octet-stream"
        except FileNotFoundError:  # a rejected job has no transcript
            return b"", _PARTS.get(name, ("", "application/octet-stream"))[1]
        return b"", "text/plain"

    if notification.contents is None:  # backward compatible: the json-v2 transcript as a file
        data, media = read("transcript")
        return {"files": {"data_file": ("transcript.json", data, media)}}
    if not notification.contents:
        return {"content": b""}
    if len(notification.contents) == 1 and notification.contents[0] != "data":
        data, media = read(notification.contents[0])
        return {"content": data, "headers": {"Content-Type": media}}
    return {"files": {name: (name, *read(name)) for name in notification.contents}}


async def notify(notification: Notification, job_id: str, status: str, body: dict) -> str | None:
    """Send one callback, retrying with backoff until a 2xx; the last failure's text, or None."""
    params = {"id": job_id, "status": status}
    headers = {**_headers(notification.auth_headers), **body.pop("headers", {})}
    failure = None
    async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S) as client:
        for attempt in range(CALLBACK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(CALLBACK_BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = await client.request(notification.method.upper(), notification.url, params=params,
                                                headers=headers, **body)
                if response.is_success:
                    return None
                failure = f"http status code {response.status_code}"
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__}: {exc}"
    return f"notification to {notification.url} failed after {CALLBACK_ATTEMPTS} attempts: {failure}"
