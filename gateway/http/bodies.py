"""The JSON bodies of the API's answers (api-reference §4), as msgspec structs: the handlers
encode them, and /openapi.json describes them from the same structs."""

from __future__ import annotations

import msgspec

from gateway.jobs.progress import TaskState
from gateway.jobs.table import JobDetails


class Created(msgspec.Struct):
    id: str
    created_at: str


class JobEnvelope(msgspec.Struct):
    job: JobDetails


class JobList(msgspec.Struct):
    jobs: list[JobDetails]


class ActiveJob(msgspec.Struct):
    job_id: str
    parallel_engines: int


class Capacity(msgspec.Struct, omit_defaults=True):
    active_jobs: list[ActiveJob]
    max_engines: int
    unused_engines: int
    queued_jobs: list[ActiveJob] | None = None  # with --queue-size: waiting, in arrival order
    workers: list[dict] | None = None  # cluster mode: each live worker's id, url, engines and engines in use


class JobProgressBody(msgspec.Struct):
    """A route of its own, so that the job object the official clients parse stays as it is."""

    job_id: str
    status: str
    step: str  # what the job is doing: "queued", "decoding", "transcribing", "diarizing: embeddings", …
    progress: float  # 0-1: seconds of audio covered over the seconds the job's engine tasks cover
    audio_seconds_done: float
    audio_seconds_total: float
    tasks: list[TaskState]  # each engine task: its span, its cuts, the engine (and pid) that took it


SCHEMAS: dict[str, type] = {"Created": Created, "JobEnvelope": JobEnvelope, "JobList": JobList,
                            "Capacity": Capacity, "JobProgressBody": JobProgressBody}
