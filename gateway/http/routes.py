"""HTTP routes: the v2 job API and the worker's health endpoints (api-reference §4)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import PurePosixPath, PureWindowsPath

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from gateway.jobs.admission import Busy
from gateway.http.errors import ApiError, bad_request, carries_body, error_response, json_response
from gateway.transcript.config import parse_config, parse_processing_data
from gateway.jobs.table import DELETED, DONE, REJECTED, RUNNING, Job, JobDetails, iso_ms, new_job_id
from gateway.jobs.blobs import JobFolder
from gateway.http.openapi import build as build_openapi
from gateway.http.upload import receive
from gateway.jobs.worker import Worker

TRANSCRIPT_FORMATS = {None: "json", "json": "json", "json-v2": "json", "json_v2": "json",
                      "txt": "txt", "srt": "srt"}
TEXT = "text/plain; charset=utf-8"


class Created(msgspec.Struct):
    id: str
    created_at: str


class JobEnvelope(msgspec.Struct):
    job: JobDetails


class JobList(msgspec.Struct):
    jobs: list[JobDetails]


class JobProgressBody(msgspec.Struct):
    """A route of its own, so that the job object the official clients parse stays as it is."""

    job_id: str
    status: str
    step: str  # what the job is doing: "queued", "decoding", "transcribing", "diarizing: embeddings", ...
    progress: float  # 0-1: seconds of audio covered over the seconds the job's engine tasks cover
    audio_seconds_done: float
    audio_seconds_total: float


class ActiveJob(msgspec.Struct):
    job_id: str
    parallel_engines: int


class Capacity(msgspec.Struct, omit_defaults=True):
    active_jobs: list[ActiveJob]
    max_engines: int
    unused_engines: int
    queued_jobs: list[ActiveJob] | None = None  # with --queue-size: waiting, in arrival order


def _worker(request: Request) -> Worker:
    return request.app.state.worker


def _data_name(filename: str | None) -> str:
    """Only the base name of what the client called the file, for display; never a path."""
    name = PureWindowsPath(PurePosixPath(filename or "").name).name
    return "".join(ch for ch in name if ch.isprintable())[:255]


async def create_job(request: Request) -> Response:
    worker = _worker(request)
    processing = parse_processing_data(request.headers.get("x-sm-processing-data"))
    # Reserve engines first, so a busy server refuses before reading a large upload.
    job_id = new_job_id()
    try:
        slots = worker.reserve(job_id, processing)
    except Busy as exc:
        return error_response(503, "Server busy", str(exc), close=carries_body(request.headers))
    folder = JobFolder(worker.root, job_id)
    started = False
    try:
        await asyncio.to_thread(folder.path.mkdir, parents=True)
        upload = await receive(request, folder.upload, worker.settings.max_upload_bytes)
        if "config" not in upload.fields:
            raise bad_request("the multipart field 'config' is missing", error="Job rejected")
        config_text = upload.fields["config"]
        parsed = parse_config(config_text)
        worker.check_features(parsed)
        fetch = parsed.config.fetch_data
        if upload.filename is None and fetch is None:
            raise bad_request("the multipart field 'data_file' (an uploaded file) is missing"
                              + (": it came as a plain field" if "data_file" in upload.fields else ""),
                              error="Missing data_file")
        if upload.filename is not None and fetch is not None:
            raise bad_request("send either data_file or config.fetch_data, not both")
        await asyncio.to_thread(folder.write_config, config_text)
        job = Job(job_id, parsed, "" if fetch else _data_name(upload.filename), processing.engines,
                  processing.user_id, config_text)
        await worker.start_job(job, slots, upload.size)
        started = True
    finally:
        if not started:
            worker.admission.release(job_id)
            await asyncio.to_thread(folder.remove)
    return json_response(Created(id=job.id, created_at=iso_ms(job.created)), 201)


def _query_time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "Unprocessable Entity", f"{name} must be an ISO-8601 timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


async def list_jobs(request: Request) -> Response:
    raw_limit = request.query_params.get("limit", "100")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise ApiError(422, "Unprocessable Entity", f"limit must be an integer from 1 to 100, got {raw_limit!r}")
    jobs = _worker(request).table.listing(
        limit, _query_time(request, "created_before"), _query_time(request, "created_after")
    )
    return json_response(JobList(jobs=[j.details() for j in jobs]))


MAX_WAIT_S = 300


def _job(request: Request) -> Job:
    return _worker(request).table.get(request.path_params["job_id"])


async def _waited_job(request: Request) -> Job:
    """The job, after the SaaS `wait` long-poll: up to `wait` seconds for it to end."""
    job = _job(request)
    raw = request.query_params.get("wait")
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            raise ApiError(422, "Unprocessable Entity", f"wait must be a number of seconds, got {raw!r}") from None
        if not 0 <= seconds <= MAX_WAIT_S:  # also refuses nan and inf
            raise ApiError(422, "Unprocessable Entity", f"wait must be between 0 and {MAX_WAIT_S} seconds")
        await job.wait(seconds)
    return job


async def get_job(request: Request) -> Response:
    return json_response(JobEnvelope(job=(await _waited_job(request)).details()))


async def get_transcript(request: Request) -> Response:
    job = await _waited_job(request)
    requested = request.query_params.get("format")
    fmt = TRANSCRIPT_FORMATS.get(requested)
    if fmt is None:
        raise ApiError(404, "Format Not Supported",
                       f"unsupported format {requested!r}: use json-v2, json, txt or srt")
    if job.status == DELETED:
        raise ApiError(410, "File Expired", f"job {job.id} was deleted")
    if job.status == REJECTED:
        raise ApiError(404, "Job rejected",
                       f"job {job.id} was rejected: " + "; ".join(e.message for e in job.errors))
    if job.status != DONE:
        raise ApiError(404, "Transcription not ready",
                       f"job {job.id} is not finished (status {job.status}, request_id {job.id})")
    path = JobFolder(_worker(request).root, job.id).transcript(fmt)
    media = "application/json" if fmt == "json" else TEXT
    return FileResponse(path, media_type=media)


async def get_progress(request: Request) -> Response:
    job = _job(request)
    if job.status == DELETED:
        raise ApiError(410, "File Expired", f"job {job.id} was deleted")
    p = job.progress
    done = job.status == DONE
    return json_response(JobProgressBody(
        job_id=job.id, status=job.status, step="done" if done else p.step if job.status == RUNNING else job.status,
        progress=1.0 if done else round(p.fraction, 4), audio_seconds_done=round(p.audio_done, 2),
        audio_seconds_total=round(p.audio_total, 2)))


async def get_log(request: Request) -> Response:
    job = _job(request)
    if job.status == DELETED:
        raise ApiError(410, "File Expired", f"job {job.id} was deleted")
    path = JobFolder(_worker(request).root, job.id).log
    try:
        # Read whole, not streamed: the log grows while the job runs, and a streamed file
        # would outgrow the Content-Length taken from its size.
        content = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise ApiError(404, "Log file not available", f"Log for job ID {job.id} not found") from None
    return Response(content, media_type=TEXT)


async def delete_job(request: Request) -> Response:
    force_text = request.query_params.get("force", "false").lower()
    if force_text not in ("true", "false", "1", "0"):
        raise ApiError(422, "Unprocessable Entity", "force must be true or false")
    job = await _worker(request).delete(_job(request), force=force_text in ("true", "1"))
    return json_response(JobEnvelope(job=job.details()))


async def capacity(request: Request) -> Response:
    admission = _worker(request).admission
    return json_response(
        Capacity(
            active_jobs=[ActiveJob(job_id=j, parallel_engines=k) for j, k in admission.active().items()],
            max_engines=admission.total,
            unused_engines=admission.unused,
            queued_jobs=[ActiveJob(job_id=j, parallel_engines=k) for j, k in admission.queued().items()]
            if admission.queue_size else None,
        )
    )


async def live(request: Request) -> Response:
    failing = _worker(request).pool.failing()
    if failing:
        return json_response({"live": False, "reason": "; ".join(failing)}, 503)
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    worker = _worker(request)
    ok = worker.ready
    return json_response({"ready": ok, "engines_used": worker.admission.in_use}, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    registry = _worker(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


_OPENAPI: bytes | None = None


async def openapi(request: Request) -> Response:
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = msgspec.json.encode(build_openapi(
            {"Created": Created, "JobEnvelope": JobEnvelope, "JobList": JobList, "Capacity": Capacity,
             "JobProgressBody": JobProgressBody}))
    return Response(_OPENAPI, media_type="application/json")


routes = [
    Route("/v2/jobs", create_job, methods=["POST"]),
    Route("/v2/jobs", list_jobs, methods=["GET"]),
    Route("/v2/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v2/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/v2/jobs/{job_id}/transcript", get_transcript, methods=["GET"]),
    Route("/v2/jobs/{job_id}/log", get_log, methods=["GET"]),
    Route("/v2/jobs/{job_id}/progress", get_progress, methods=["GET"]),
    Route("/jobs", capacity, methods=["GET"]),
    Route("/live", live, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
