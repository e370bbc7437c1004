"""The job table: the gateway's live record of every job, and the job as the API shows it.

A job's status changes only through its methods here (done, reject, delete): one place decides
what may follow what.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgspec

from gateway.errors import JobExpired, JobNotFound
from gateway.jobs.progress import JobProgress
from gateway.transcript.config import ParsedConfig, parse_config

RUNNING, DONE, REJECTED, DELETED = "running", "done", "rejected", "deleted"
STATUSES = (RUNNING, DONE, REJECTED, DELETED)
FINISHED = (DONE, REJECTED, DELETED)


def now() -> datetime:
    """UTC now at millisecond precision: what the API shows is what filters compare."""
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def iso_ms(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def new_job_id() -> str:
    return secrets.token_hex(10)  # 20 lowercase hex characters, like the worker's ids


class JobErrorItem(msgspec.Struct):
    timestamp: str
    message: str


class StoredJob(msgspec.Struct, frozen=True):
    """A job as the durable store keeps it (gateway/jobs/store.py)."""

    id: str
    created_at: datetime
    data_name: str
    config: str  # the submitted config text
    engines: int
    user_id: str | None
    status: str
    duration: int
    errors: list[JobErrorItem]


class JobDetails(msgspec.Struct):
    id: str
    created_at: str
    data_name: str
    text_name: None
    duration: int
    status: str
    config: dict[str, Any]
    request_id: str
    errors: list[JobErrorItem]


class Job:
    def __init__(
        self, job_id: str, parsed: ParsedConfig, data_name: str, engines: int, user_id: str | None,
        config_text: str, log: Callable[..., None], created: datetime | None = None,
    ) -> None:
        self.id = job_id
        self.log = log  # the job's log: log(message, level="INFO")
        self.created = created or now()
        self.parsed = parsed
        self.config_text = config_text
        self.data_name = data_name
        self.engines = engines
        self.user_id = user_id
        self._status = RUNNING
        self.duration = 0
        self.errors: list[JobErrorItem] = []
        self.task: asyncio.Task | None = None
        self.attempt = 1  # cluster mode: +1 each time another worker takes the job over
        self.progress = JobProgress()
        self.ended = asyncio.Event()  # set once its end is durable (Worker._life), or when restored

    async def wait(self, seconds: float) -> None:
        """Long-poll (`?wait=N`): return when the job ends or after `seconds`."""
        if seconds > 0 and not self.ended.is_set():
            try:
                await asyncio.wait_for(self.ended.wait(), seconds)
            except asyncio.TimeoutError:
                pass

    @property
    def status(self) -> str:
        return self._status

    @property
    def finished(self) -> bool:
        return self._status in FINISHED

    def done(self) -> None:
        """Its outputs are written; a job deleted meanwhile stays deleted."""
        if self._status == RUNNING:
            self._status = DONE

    def reject(self, message: str) -> None:
        """A running job fails; one already deleted stays deleted, without an error."""
        if self._status == RUNNING:
            self.errors.append(JobErrorItem(timestamp=iso_ms(now()), message=message))
            self._status = REJECTED

    def delete(self) -> None:
        self._status = DELETED

    def note_error(self, message: str) -> None:
        """An error that does not fail the job (a callback that could not be delivered)."""
        self.errors.append(JobErrorItem(timestamp=iso_ms(now()), message=message))

    def stored(self) -> StoredJob:
        return StoredJob(id=self.id, created_at=self.created, data_name=self.data_name, config=self.config_text,
                         engines=self.engines, user_id=self.user_id, status=self.status,
                         duration=self.duration, errors=list(self.errors))

    @classmethod
    def restore(cls, stored: StoredJob, log: Callable[..., None]) -> Job:
        job = cls(stored.id, parse_config(stored.config, max_depth=None), stored.data_name, stored.engines,
                  stored.user_id, stored.config, log, stored.created_at)
        job._status, job.duration, job.errors = stored.status, stored.duration, list(stored.errors)
        job.ended.set()
        return job

    def details(self) -> JobDetails:
        return JobDetails(
            id=self.id,
            created_at=iso_ms(self.created),
            data_name=self.data_name,
            text_name=None,
            duration=self.duration,
            status=self.status,
            config=self.parsed.echo,
            request_id=self.id,
            errors=self.errors,
        )


class JobTable:
    """Jobs by id in creation order; finished ones beyond `max_history` are evicted (410)."""

    def __init__(self, max_history: int) -> None:
        self.max_history = max_history
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._evicted: deque[str] = deque(maxlen=100_000)
        self._evicted_set: set[str] = set()

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job

    def remember_evicted(self, ids: list[str]) -> None:
        for job_id in ids:
            self._evicted.append(job_id)
            self._evicted_set.add(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    def find(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def forget(self, job_id: str) -> None:
        """Cluster mode: a job leaves this worker's table when it ends here (its row stays the truth)."""
        self._jobs.pop(job_id, None)

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        if job_id in self._evicted_set:
            raise JobExpired(job_id)
        raise JobNotFound(job_id)

    def listing(self, limit: int, before: datetime | None, after: datetime | None) -> list[Job]:
        """Newest first; deleted jobs are not listed (as SaaS without include_deleted)."""
        out: list[Job] = []
        for job in reversed(self._jobs.values()):
            if job.status == DELETED:
                continue
            if before is not None and job.created >= before:
                continue
            if after is not None and job.created <= after:
                continue
            out.append(job)
            if len(out) == limit:
                break
        return out

    def evict_over_limit(self, ending: Job | None = None) -> list[Job]:
        """Forget the oldest finished jobs beyond the history bound; returns them. Only jobs that
        have ended count (and `ending`, whose end is being recorded): a force-deleted job still
        settling with its engines stays."""
        finished = [j for j in self._jobs.values() if j.finished and (j.ended.is_set() or j is ending)]
        evicted = finished[: max(0, len(finished) - self.max_history)]
        for job in evicted:
            del self._jobs[job.id]
            if len(self._evicted) == self._evicted.maxlen:
                self._evicted_set.discard(self._evicted[0])
            self._evicted.append(job.id)
            self._evicted_set.add(job.id)
        return evicted
