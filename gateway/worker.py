"""The gateway's state and the job lifecycle: admit, start, delete, forget.

Everything here runs on the event loop; the only awaits are on engines and worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import IO

import msgspec

from gateway.admission import Admission
from gateway.errors import ApiError
from gateway.jobconfig import ParsedConfig, ProcessingData
from gateway.jobs import DELETED, Job, JobTable
from gateway.outputs import JobFolder, JobLog
from gateway.pool import EngineHandle, EnginePool
from gateway.runner import Runner, SplitSettings
from gateway.speaker_id import SpeakerKeys
from shared import messages as m

log = logging.getLogger("chorus.worker")


class WorkerSettings(msgspec.Struct, frozen=True):
    output_dir: str
    max_job_history: int
    max_audio_seconds: float
    split: SplitSettings = SplitSettings()


class Worker:
    def __init__(self, settings: WorkerSettings, engines: list[m.EngineSettings]) -> None:
        self.settings = settings
        self.root = Path(settings.output_dir)
        self.pool = EnginePool(engines)
        self.admission = Admission(len(engines))
        self.table = JobTable(settings.max_job_history)
        self.speaker_keys = SpeakerKeys.from_env()
        self.runner = Runner(self.pool, self.admission, self.table, settings.max_audio_seconds,
                             settings.split, self.speaker_keys, self._finished)
        self.shutting_down = False

    # ---- life of the worker ------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self.pool.start()

    async def stop(self) -> None:
        self.shutting_down = True
        tasks = [j.task for j in self._running() if j.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.stop()

    # ---- jobs --------------------------------------------------------------------------

    def reserve(self, job_id: str, processing: ProcessingData) -> list[int]:
        """Take the job's engines now (503 if short); the caller releases them on failure."""
        if self.shutting_down:
            raise ApiError(503, "Server busy", "the worker is shutting down")
        return self.admission.acquire(job_id, processing.engines)

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

    async def start_job(
        self, job: Job, slots: list[int], config_text: str, upload: IO[bytes]
    ) -> None:
        """Store the job's files, make it visible, and start it (engines already held)."""
        folder = JobFolder(self.root, job.id)
        job_log = JobLog(folder.log)

        def store() -> None:
            folder.create(config_text)
            with open(folder.upload, "wb") as out:
                shutil.copyfileobj(upload, out, 1 << 20)
            size = folder.upload.stat().st_size
            job_log(f"received job {job.id}: data_name={job.data_name!r}, {size} bytes, "
                    f"model={job.parsed.model}, language={job.parsed.transcription.language}, "
                    f"parallel_engines={job.engines}" + (f", user_id={job.user_id}" if job.user_id else ""))

        await asyncio.to_thread(store)
        self.table.add(job)
        job.task = asyncio.create_task(self.runner.run(job, folder, job_log, slots), name=f"job-{job.id}")

    async def delete(self, job: Job, force: bool) -> Job:
        if not job.finished:
            if not force:
                raise ApiError(423, "Resource Locked",
                               f"job {job.id} is still running; pass force=true to stop and delete it")
            job.status = DELETED
            JobLog(JobFolder(self.root, job.id).log)("job deleted while running (force=true)")
            for slot_engine in self._engines_of(job):
                slot_engine.cancel(job.id)
            return job  # the runner removes the folder when its engines come back
        job.status = DELETED
        await asyncio.to_thread(JobFolder(self.root, job.id).remove)
        return job

    def _engines_of(self, job: Job) -> list[EngineHandle]:
        return [self.pool[i] for i in self.admission.slots_of(job.id)]

    def _running(self) -> list[Job]:
        return [job for job_id in self.admission.active() if (job := self.table.find(job_id))]

    def _finished(self, job: Job) -> None:
        for old in self.table.evict_over_limit():
            asyncio.get_running_loop().run_in_executor(None, JobFolder(self.root, old.id).remove)

    # ---- health ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return not self.shutting_down and self.pool.all_loaded_once and self.admission.unused > 0
