"""The worker: the one object the HTTP layer talks to. It owns the job table, the durable store,
the job files, admission and the engines, and each job's life: admit, receive, start, run,
make durable, notify, clean up, delete, forget, drain.

Everything here runs on the event loop; the only awaits are on engines, worker threads and
the job store's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

import msgspec

from gateway.errors import (
    ChorusError,
    FeatureUnavailable,
    FormatNotSupported,
    InvalidRequest,
    JobDeleted,
    JobLocked,
    JobRejected,
    LogNotAvailable,
    ShuttingDown,
    TranscriptNotReady,
)
from gateway.jobs.admission import Admission, InProcessAdmission
from gateway.jobs.blobs import BlobStore, JobFolders, JobLog
from gateway.jobs.metrics import Metrics, WorkerCollector
from gateway.jobs.pool import EnginePool
from gateway.jobs.remote import callback_body, notify
from gateway.jobs.runner import Runner
from gateway.jobs.settle import settled
from gateway.jobs.store import JobStore, SqliteJobStore
from gateway.jobs.table import DELETED, DONE, REJECTED, RUNNING, Job, JobTable
from gateway.settings import Settings
from gateway.transcript.config import ParsedConfig, ProcessingData, parse_config
from gateway.transcript.render import FORMAT_NAMES
from gateway.transcript.speaker_id import SpeakerKeys

log = logging.getLogger("chorus.worker")


class Upload(msgspec.Struct):
    """What a submission's body held (gateway/http/upload.py parses it)."""

    fields: dict[str, str]  # the small form fields: config, …
    filename: str | None = None  # the data_file part's filename, as the client sent it
    size: int = 0  # bytes of data_file received


class CapacityView(msgspec.Struct):
    """What `GET /jobs` shows: the jobs holding engines and waiting, and what the next job can ask for."""

    active: dict[str, int]  # job id -> engines it holds, in admission order
    queued: dict[str, int] | None  # waiting job id -> engines asked for, in arrival order; None: no queue
    max_engines: int
    unused_engines: int
    workers: list[dict] | None = None  # cluster mode: each live worker's engines


class Worker:
    def __init__(self, settings: Settings, store: JobStore | None = None, blobs: BlobStore | None = None,
                 admission: Admission | None = None) -> None:
        self.settings = settings
        root = Path(settings.output_dir)
        self.metrics = Metrics()
        self.pool = EnginePool(settings.engines, settings.hang_timeout,
                               on_restart=lambda e: self.metrics.restarts.labels(str(e.index)).inc(),
                               on_hang=lambda e: self.metrics.hangs.labels(str(e.index)).inc())
        self.admission: Admission = admission or InProcessAdmission(len(settings.engines), settings.queue_size)
        self.table = JobTable(settings.max_job_history)
        self.store: JobStore = store or SqliteJobStore(root)
        self.blobs: BlobStore = blobs or JobFolders(root)
        self.speaker_keys = SpeakerKeys.from_dir(settings.speaker_secrets_dir)
        self.runner = Runner(settings, self.pool, self.admission, self.blobs, self.metrics, self.speaker_keys)
        self.shutting_down = False
        self.metrics.registry.register(WorkerCollector(
            engines=lambda: self.pool.engines, jobs_by_status=self.table.by_status,
            in_use=lambda: self.admission.in_use, total=self.admission.total,
            running_progress=self.running_progress))

    # ---- life of the worker ------------------------------------------------------------

    async def start(self) -> None:
        stored, evicted = await self.store.open()
        self.table.remember_evicted(evicted)
        for record in stored:
            try:
                job = Job.restore(record, JobLog(self.blobs, record.id))
            except ChorusError as exc:  # a config no parser of this version reads: keep the others
                log.error("job %s could not be restored: %s", record.id, exc.detail)
                continue
            self.table.add(job)
            if job.status == RUNNING:  # it was running when the worker died
                job.reject("worker restarted: the job was interrupted and did not finish")
                await asyncio.to_thread(self._mark_interrupted, job)
                await self.store.update(job.stored())
        if stored:
            log.info("job table: %d job(s) restored", len(stored))
        self.pool.start()

    def _mark_interrupted(self, job: Job) -> None:
        job.log("job rejected: worker restarted before the job finished", "ERROR")
        self.blobs.drop_audio(job.id)

    async def drain(self) -> None:
        """SIGTERM: refuse new jobs at once, let running ones finish (up to the drain
        timeout), then cancel what is left, which rejects it (the same path as a force DELETE)."""
        self.shutting_down = True
        tasks = [j.task for j in self.table.all() if j.task and not j.task.done()]
        log.info("draining: %d job(s) running, up to %.0f s", len(tasks), self.settings.drain_timeout)
        started = time.monotonic()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("drained in %.1f s", time.monotonic() - started)

    async def stop(self) -> None:
        self.shutting_down = True
        tasks = [j.task for j in self.table.all() if j.task and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.stop()
        await self.store.close()

    # ---- submitting ----------------------------------------------------------------------

    async def submit(self, job_id: str, processing: ProcessingData,
                     receive: Callable[[Path], Awaitable[Upload]]) -> Job:
        """Admit the job (engines taken or queued, else Busy) before its body is read, so a busy
        worker refuses before a large upload; receive the upload; check the config; make the
        job durable and start it. On any failure nothing of the job is left."""
        slots = self._reserve(job_id, processing)
        started = False
        try:
            await asyncio.to_thread(self.blobs.create, job_id)
            upload = await receive(self.blobs.upload_path(job_id))
            job = await self._accept(job_id, processing, upload)
            await self._start(job, slots, upload.size)
            started = True
            return job
        finally:
            if not started:
                self.admission.release(job_id)
                await asyncio.to_thread(self.blobs.remove, job_id)

    def _reserve(self, job_id: str, processing: ProcessingData) -> list[int] | None:
        if self.shutting_down:
            raise ShuttingDown("the worker is shutting down and takes no new jobs")
        try:
            return self.admission.acquire(job_id, processing.engines)
        except Exception:
            self.metrics.refused.inc()
            raise

    async def _accept(self, job_id: str, processing: ProcessingData, upload: Upload) -> Job:
        if "config" not in upload.fields:
            raise InvalidRequest("the multipart field 'config' is missing", kind="Job rejected")
        config_text = upload.fields["config"]
        parsed = parse_config(config_text)
        self._check_features(parsed)
        fetch = parsed.config.fetch_data
        if upload.filename is None and fetch is None:
            raise InvalidRequest("the multipart field 'data_file' (an uploaded file) is missing"
                                 + (": it came as a plain field" if "data_file" in upload.fields else ""),
                                 kind="Missing data_file")
        if upload.filename is not None and fetch is not None:
            raise InvalidRequest("send either data_file or config.fetch_data, not both")
        await asyncio.to_thread(self.blobs.write_config, job_id, config_text)
        return Job(job_id, parsed, "" if fetch else data_name(upload.filename), processing.engines,
                   processing.user_id, config_text, JobLog(self.blobs, job_id))

    def _check_features(self, parsed: ParsedConfig) -> None:
        """Refuse at submit what this worker is not set up to do."""
        tc = parsed.transcription
        if tc.diarization == "speaker" and not all(s.diarization for s in self.settings.engines):
            raise FeatureUnavailable("speaker diarization is not enabled on this worker (--diarization-model none)")
        sdc = tc.speaker_config
        if (sdc.get_speakers or sdc.speakers) and not self.speaker_keys.configured:
            raise FeatureUnavailable("speaker identification needs secrets: set SM_SPEAKER_ID_SECRETS_DIR to a "
                                     "folder of s.<n> files (none are configured on this worker)")

    async def _start(self, job: Job, slots: list[int] | None, size: int) -> None:
        """Make the job durable and visible, and start it (engines held, or queued)."""
        job.log(f"received job {job.id}: data_name={job.data_name!r}, {size} bytes, "
                f"model={job.parsed.model}, language={job.parsed.transcription.language}, "
                f"parallel_engines={job.engines}" + (f", user_id={job.user_id}" if job.user_id else ""))
        self.metrics.upload_bytes.inc(size)
        await self.store.insert(job.stored())
        self.table.add(job)
        job.task = asyncio.create_task(self._life(job, slots), name=f"job-{job.id}")

    async def _life(self, job: Job, slots: list[int] | None) -> None:
        """Run the job; then make its end durable before anyone is told, wake its pollers,
        send its callbacks, and drop what it no longer needs."""
        try:
            await self.runner.run(job, slots)
        finally:
            # All of it, even if the job is cancelled again meanwhile (drain deadline, stop).
            await settled(self._after(job))

    async def _after(self, job: Job) -> None:
        await self._finished(job)
        job.ended.set()
        # Callbacks may retry for a while: after the job's end is visible, and before the
        # upload (which a "data" callback sends) is dropped.
        if job.status in (DONE, REJECTED) and await self._notify(job):
            await self._finished(job)  # a failed callback added to the job's errors
        await asyncio.to_thread(self.blobs.drop_audio if job.status in (DONE, REJECTED) else self.blobs.remove,
                                job.id)

    async def _notify(self, job: Job) -> bool:
        """Send the job's callbacks; True if one failed (and was added to its errors)."""
        failed = False
        status = "success" if job.status == DONE else (
            "fetch_error" if any("unable to fetch audio" in e.message for e in job.errors) else "error")
        jobinfo = msgspec.json.encode({"job": job.details()})
        for notification in job.parsed.config.notification_config or []:
            body = await asyncio.to_thread(callback_body, notification, self.blobs, job.id, jobinfo, job.attempt)
            failure = await notify(notification, job.id, status, body)
            if failure:
                job.log(failure, "ERROR")
                job.note_error(failure)
                failed = True
            else:
                job.log(f"notified {notification.url} (status={status})")
        return failed

    async def _finished(self, job: Job) -> None:
        await self.store.update(job.stored())
        evicted = self.table.evict_over_limit(ending=job)
        await self.store.evict([old.id for old in evicted])
        for old in evicted:
            await asyncio.to_thread(self.blobs.remove, old.id)

    # ---- reading and deleting -------------------------------------------------------------

    async def job(self, job_id: str) -> Job:
        """JobNotFound, or JobExpired for one forgotten beyond the history bound."""
        return self.table.get(job_id)

    async def waited_job(self, job_id: str, seconds: float | None) -> Job:
        """The job (404, 410 first), after the SaaS `wait` long-poll: up to `seconds` for it to end."""
        job = await self.job(job_id)
        if seconds:
            await job.wait(seconds)
        return job

    async def jobs(self, limit: int, before: datetime | None, after: datetime | None) -> list[Job]:
        return self.table.listing(limit, before, after)

    async def transcript(self, job: Job, requested: str | None) -> tuple[Path, str]:
        """A local file of the transcript in a format the API names (none: json-v2), and its
        canonical format."""
        fmt = FORMAT_NAMES.get("json-v2" if requested is None else requested)
        if fmt is None:
            raise FormatNotSupported(f"unsupported format {requested!r}: use json-v2, json, txt or srt")
        if job.status == DELETED:
            raise JobDeleted(job.id)
        if job.status == REJECTED:
            raise JobRejected(f"job {job.id} was rejected: " + "; ".join(e.message for e in job.errors))
        if job.status != DONE:
            raise TranscriptNotReady(f"job {job.id} is not finished (status {job.status}, request_id {job.id})")
        return await asyncio.to_thread(lambda: self.blobs.output_file(job.id, fmt, attempt=job.attempt)), fmt

    async def log_of(self, job: Job) -> bytes:
        if job.status == DELETED:
            raise JobDeleted(job.id)
        try:
            return await asyncio.to_thread(self.blobs.read_log, job.id)
        except FileNotFoundError:
            raise LogNotAvailable(job.id) from None

    async def delete(self, job_id: str, force: bool) -> Job:
        job = await self.job(job_id)
        if not job.finished:
            if not force:
                raise JobLocked(job.id)
            job.log("job deleted while running (force=true): cancelling it")
            job.delete()
            if job.task is not None:
                job.task.cancel()  # its engines are told to cancel; it releases them once they have
            await self.store.update(job.stored())
            return job  # its files are removed when its engines come back
        job.delete()
        await self.store.update(job.stored())
        await asyncio.to_thread(self.blobs.remove, job.id)
        return job

    # ---- capacity and health --------------------------------------------------------------

    async def capacity(self) -> CapacityView:
        return CapacityView(active=self.admission.active(),
                            queued=self.admission.queued() if self.admission.queue_size else None,
                            max_engines=self.admission.total, unused_engines=self.admission.unused)

    @property
    def engines_in_use(self) -> int:
        return self.admission.in_use

    def failing(self) -> list[str]:
        """Why the worker is not live: engines that keep dying at start-up or keep hanging."""
        return self.pool.failing()

    @property
    def ready(self) -> bool:
        return not self.shutting_down and self.pool.all_loaded_once and self.admission.unused > 0

    def running_progress(self) -> dict[str, float]:
        """Job id -> fraction done, for every running job."""
        return {job.id: job.progress.fraction for job in self.table.all() if job.status == RUNNING}


def data_name(filename: str | None) -> str:
    """Only the base name of what the client called the file, for display; never a path."""
    name = PureWindowsPath(PurePosixPath(filename or "").name).name
    return "".join(ch for ch in name if ch.isprintable())[:255]
