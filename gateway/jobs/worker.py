"""The gateway's state and the job lifecycle: admit, start, delete, forget, drain.

Everything here runs on the event loop; the only awaits are on engines, worker threads and
the job store's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgspec

from gateway.jobs.admission import Admission
from gateway.http.errors import ApiError
from gateway.transcript.config import ParsedConfig, ProcessingData
from gateway.jobs.table import DELETED, RUNNING, Job, JobTable
from gateway.jobs.metrics import Metrics
from gateway.jobs.blobs import JobFolder, JobLog
from gateway.jobs.pool import EnginePool
from gateway.jobs.runner import Runner, SplitSettings
from gateway.transcript.speaker_id import SpeakerKeys
from gateway.jobs.store import JobStore
from shared import messages as m

log = logging.getLogger("chorus.worker")


class WorkerSettings(msgspec.Struct, frozen=True):
    output_dir: str
    max_job_history: int
    max_audio_seconds: float
    split: SplitSettings = SplitSettings()
    queue_size: int = 0
    drain_timeout: float = 600.0
    max_upload_bytes: int = 2048 << 20
    api_key: str | None = None
    hang_timeout: float = 300.0  # a busy engine silent this long is killed as hung


class Worker:
    def __init__(self, settings: WorkerSettings, engines: list[m.EngineSettings]) -> None:
        self.settings = settings
        self.root = Path(settings.output_dir)
        self.metrics = Metrics()
        self.pool = EnginePool(engines, settings.hang_timeout,
                               on_restart=lambda e: self.metrics.restarts.labels(str(e.index)).inc(),
                               on_hang=lambda e: self.metrics.hangs.labels(str(e.index)).inc())
        self.admission = Admission(len(engines), settings.queue_size)
        self.table = JobTable(settings.max_job_history)
        self.store = JobStore(self.root)
        self.speaker_keys = SpeakerKeys.from_env()
        self.runner = Runner(self.pool, self.admission, settings.max_audio_seconds, settings.split,
                             self.speaker_keys, self.metrics, self._finished, settings.max_upload_bytes)
        self.shutting_down = False

    # ---- life of the worker ------------------------------------------------------------

    async def start(self) -> None:
        stored, evicted = await self.store.open()
        self.table.remember_evicted(evicted)
        for record in stored:
            job = Job.restore(record)
            self.table.add(job)
            if job.status == RUNNING:  # it was running when the worker died
                job.reject("worker restarted: the job was interrupted and did not finish")
                await asyncio.to_thread(self._mark_interrupted, job)
                await self.store.update(job)
        if stored:
            log.info("job table: %d job(s) restored from %s", len(stored), self.store.path)
        self.pool.start()

    def _mark_interrupted(self, job: Job) -> None:
        folder = JobFolder(self.root, job.id)
        if folder.path.is_dir():
            JobLog(folder.log)("job rejected: worker restarted before the job finished", "ERROR")
            folder.drop_audio()

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

    # ---- jobs --------------------------------------------------------------------------

    def reserve(self, job_id: str, processing: ProcessingData) -> list[int] | None:
        """Take the job's engines now, or queue it (None); 503 if neither. The caller
        releases them if the submission fails."""
        if self.shutting_down:
            raise ApiError(503, "Server busy", "the worker is shutting down and takes no new jobs")
        try:
            return self.admission.acquire(job_id, processing.engines)
        except Exception:
            self.metrics.refused.inc()
            raise

    def check_features(self, parsed: ParsedConfig) -> None:
        """Refuse at submit what this worker is not set up to do."""
        tc = parsed.transcription
        if tc.diarization == "speaker" and not self.diarization_enabled:
            raise ApiError(400, "Requested product not available",
                           "speaker diarization is not enabled on this worker (--diarization-model none)")
        sdc = tc.speaker_config
        if (sdc.get_speakers or sdc.speakers) and not self.speaker_keys.configured:
            raise ApiError(400, "Requested product not available",
                           "speaker identification needs secrets: set SM_SPEAKER_ID_SECRETS_DIR to a folder "
                           "of s.<n> files (none are configured on this worker)")

    @property
    def diarization_enabled(self) -> bool:
        return all(s.diarization for s in self.pool.settings)

    async def start_job(self, job: Job, slots: list[int] | None, size: int) -> None:
        """Make the job durable and visible, and start it (engines held, or queued)."""
        folder = JobFolder(self.root, job.id)
        job_log = JobLog(folder.log)
        job_log(f"received job {job.id}: data_name={job.data_name!r}, {size} bytes, "
                f"model={job.parsed.model}, language={job.parsed.transcription.language}, "
                f"parallel_engines={job.engines}" + (f", user_id={job.user_id}" if job.user_id else ""))
        self.metrics.upload_bytes.inc(size)
        await self.store.insert(job)
        self.table.add(job)
        job.task = asyncio.create_task(self.runner.run(job, folder, job_log, slots), name=f"job-{job.id}")

    async def delete(self, job: Job, force: bool) -> Job:
        if not job.finished:
            if not force:
                raise ApiError(423, "Resource Locked",
                               f"job {job.id} is still running; pass force=true to stop and delete it")
            job.status = DELETED
            JobLog(JobFolder(self.root, job.id).log)("job deleted while running (force=true): cancelling it")
            if job.task is not None:
                job.task.cancel()  # its engines are told to cancel; the runner releases them once they have
            await self.store.update(job)
            return job  # the runner removes the folder when its engines come back
        job.status = DELETED
        await self.store.update(job)
        await asyncio.to_thread(JobFolder(self.root, job.id).remove)
        return job

    async def _finished(self, job: Job) -> None:
        await self.store.update(job)
        evicted = self.table.evict_over_limit()
        await self.store.evict([old.id for old in evicted])
        for old in evicted:
            await asyncio.to_thread(JobFolder(self.root, old.id).remove)

    def running_progress(self) -> dict[str, float]:
        """Job id -> fraction done, for every running job."""
        return {job.id: job.progress.fraction for job in self.table.all() if job.status == RUNNING}

    def jobs_by_status(self) -> dict[str, int]:
        counts = {"running": 0, "done": 0, "rejected": 0, "deleted": 0}
        for job in self.table.all():
            counts[job.status] += 1
        return counts

    # ---- health ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return not self.shutting_down and self.pool.all_loaded_once and self.admission.unused > 0
