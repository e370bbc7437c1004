"""HTTP routes: the v2 job API, the worker's health endpoints (api-reference §4), and the web
console (a page and its static files, which speak only the public API).

Each handler reads its parameters, asks the worker, and encodes the answer; errors are raised
as domain errors (gateway/errors.py) and answered by gateway/http/errors.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.errors import InvalidQuery, JobDeleted
from gateway.http import openapi as openapi_document
from gateway.http.bodies import ActiveJob, Capacity, Created, JobEnvelope, JobList, JobProgressBody
from gateway.http.errors import json_response
from gateway.http.upload import receive
from gateway.jobs.table import DELETED, DONE, RUNNING, Job, iso_ms, new_job_id
from gateway.jobs.worker import Worker
from gateway.settings import MAX_WAIT_S
from gateway.transcript.config import parse_processing_data
from gateway.transcript.render import MEDIA_TYPES

MAX_LIST = 100


def _worker(request: Request) -> Worker:
    return request.app.state.worker


async def create_job(request: Request) -> Response:
    worker = _worker(request)
    processing = parse_processing_data(request.headers.get("x-sm-processing-data"))
    job = await worker.submit(new_job_id(), processing,
                              lambda target: receive(request, target, worker.settings.max_upload_bytes))
    return json_response(Created(id=job.id, created_at=iso_ms(job.created)), 201)


def _query_time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQuery(f"{name} must be an ISO-8601 timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


async def list_jobs(request: Request) -> Response:
    raw_limit = request.query_params.get("limit", str(MAX_LIST))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIST}, got {raw_limit!r}")
    jobs = await _worker(request).jobs(limit, _query_time(request, "created_before"), _query_time(request, "created_after"))
    return json_response(JobList(jobs=[j.details() for j in jobs]))


async def _waited_job(request: Request) -> Job:
    """The job (404, 410 first), after the SaaS `wait` long-poll: up to `wait` s for it to end."""
    return await _worker(request).waited_job(request.path_params["job_id"], _wait_seconds(request))


def _wait_seconds(request: Request) -> float | None:
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise InvalidQuery(f"wait must be a number of seconds, got {raw!r}") from None
    if not 0 <= seconds <= MAX_WAIT_S:  # also refuses nan and inf
        raise InvalidQuery(f"wait must be between 0 and {MAX_WAIT_S} seconds")
    return seconds


async def get_job(request: Request) -> Response:
    return json_response(JobEnvelope(job=(await _waited_job(request)).details()))


async def get_transcript(request: Request) -> Response:
    job = await _waited_job(request)
    path, fmt = await _worker(request).transcript(job, request.query_params.get("format"))
    return FileResponse(path, media_type=MEDIA_TYPES[fmt])


async def get_log(request: Request) -> Response:
    worker = _worker(request)
    # Read whole, not streamed: the log grows while the job runs.
    job = await worker.job(request.path_params["job_id"])
    return Response(await worker.log_of(job), media_type=MEDIA_TYPES["txt"])


async def get_progress(request: Request) -> Response:
    job = await _worker(request).job(request.path_params["job_id"])
    if job.status == DELETED:
        raise JobDeleted(job.id)
    p, done = job.progress, job.status == DONE
    return json_response(JobProgressBody(
        job_id=job.id, status=job.status, step="done" if done else p.step if job.status == RUNNING else job.status,
        progress=1.0 if done else round(p.fraction, 4), audio_seconds_done=round(p.audio_done, 2),
        audio_seconds_total=round(p.audio_total, 2), tasks=p.tasks))


async def delete_job(request: Request) -> Response:
    force_text = request.query_params.get("force", "false").lower()
    if force_text not in ("true", "false", "1", "0"):
        raise InvalidQuery("force must be true or false")
    job = await _worker(request).delete(request.path_params["job_id"], force=force_text in ("true", "1"))
    return json_response(JobEnvelope(job=job.details()))


async def capacity(request: Request) -> Response:
    view = await _worker(request).capacity()
    return json_response(Capacity(
        active_jobs=[ActiveJob(job_id=j, parallel_engines=k) for j, k in view.active.items()],
        max_engines=view.max_engines,
        unused_engines=view.unused_engines,
        queued_jobs=None if view.queued is None else [ActiveJob(job_id=j, parallel_engines=k)
                                                      for j, k in view.queued.items()],
        workers=view.workers,
    ))


async def live(request: Request) -> Response:
    failing = _worker(request).failing()
    if failing:
        return json_response({"live": False, "reason": "; ".join(failing)}, 503)
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    worker = _worker(request)
    ok = worker.ready
    return json_response({"ready": ok, "engines_used": worker.engines_in_use}, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(_worker(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


_OPENAPI = msgspec.json.encode(openapi_document.build())
CONSOLE = Path(__file__).parent / "console"
_CONSOLE_PAGE = (CONSOLE / "index.html").read_text(encoding="utf-8")


async def console(request: Request) -> Response:
    """The web console's page; it tells the script whether the API wants a key, so that the
    console asks for one before its first request instead of after a 401."""
    auth = "required" if _worker(request).settings.api_key else "none"
    return HTMLResponse(_CONSOLE_PAGE.replace("{{auth}}", auth), headers={"Cache-Control": "no-cache"})


async def openapi(request: Request) -> Response:
    return Response(_OPENAPI, media_type="application/json")


routes = [
    Route("/", console, methods=["GET"]),
    Mount("/console", StaticFiles(directory=CONSOLE), name="console"),
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
