"""The worker in cluster mode: the embedded worker's job life, on PostgreSQL and an object store.

Any worker accepts any job and answers for every job. What differs from gateway/jobs/worker.py:
- admission is ClusterDB's (exact across workers, in one locked transaction); this worker's own
  InProcessAdmission only hands out local engine slots to the jobs placed here;
- every upload is streamed to the object store, so any worker can run the job (placed elsewhere
  because this one is full, or taken over after this one died);
- a job runs where ClusterDB places it: this worker starts the jobs it is told of
  (chorus_assign), and its end is written fenced by attempt, so a worker taken for dead cannot
  overwrite the rerun's result;
- reads come from PostgreSQL (status, list, progress) and the object store (outputs, logs); a
  `?wait=` long-poll wakes on chorus_ended from whichever worker ran the job;
- a heartbeat loop keeps the lease, takes over dead workers' jobs, and catches up on missed notices;
- SIGTERM drains as the embedded worker does, then hands what still runs to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from gateway.cluster.metrics import ClusterCollector, takeovers
from gateway.cluster.objects import ObjectBlobs, backend_from_url
from gateway.cluster.postgres import ASSIGN, CANCEL, ENDED, ClusterDB, Notice, PostgresJobStore, make_pool
from gateway.errors import JobExpired, JobNotFound, ShuttingDown
from gateway.jobs.admission import InProcessAdmission
from gateway.jobs.blobs import JobLog
from gateway.jobs.progress import JobProgress
from gateway.jobs.table import DELETED, DONE, REJECTED, RUNNING, Job, StoredJob
from gateway.jobs.worker import CapacityView, Upload, Worker
from gateway.settings import ClusterSettings, Settings
from gateway.transcript.config import ProcessingData, parse_config

log = logging.getLogger("chorus.cluster")

PROGRESS_EVERY_S = 1.0  # how often a running job's progress is shared


class ClusterWorker(Worker):
    def __init__(self, settings: Settings, cluster: ClusterSettings) -> None:
        self.cluster = cluster
        self.pg = make_pool(cluster.database_url, min_size=2, max_size=10)
        backend = backend_from_url(cluster.object_store, endpoint_url=cluster.s3_endpoint_url,
                                   access_key=cluster.s3_access_key, secret_key=cluster.s3_secret_key,
                                   region=cluster.s3_region)
        # Local engine slots for the jobs placed here: ClusterDB already counted them, so a job
        # waits here only for a previous job's engines to come back from a cancel.
        super().__init__(settings, store=PostgresJobStore(self.pg),
                         blobs=ObjectBlobs(backend, Path(settings.output_dir)),
                         admission=InProcessAdmission(len(settings.engines), queue_size=1 << 20))
        self.db = ClusterDB(self.pg, cluster.lease_seconds)
        self.me = cluster.worker_id
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.healthy_until = 0.0  # monotonic time up to which the last heartbeat vouches
        self.reporter = False  # the live worker with the lowest id exports the cluster gauges
        self.snapshot: CapacityView | None = None
        self._loops: list[asyncio.Task] = []
        self._starting: set[str] = set()
        self.takeovers = takeovers(self.metrics.registry)
        self.metrics.registry.register(ClusterCollector(lambda: self.snapshot if self.reporter else None))

    # ---- life of the worker ----------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()  # opens the pool and migrates the schema
        await self.db.register(self.me, self.cluster.advertise_url, len(self.settings.engines))
        self.healthy_until = time.monotonic() + self.cluster.lease_seconds
        self.pool.start()
        self._loops = [asyncio.create_task(self.db.listen(self._on_notice, on_listening=self._on_listening),
                                           name="cluster-listen"),
                       asyncio.create_task(self._heartbeats(), name="cluster-heartbeat"),
                       asyncio.create_task(self._share_progress(), name="cluster-progress")]
        log.info("cluster worker %s registered (%d engines, lease %.0f s)", self.me, len(self.settings.engines),
                 self.cluster.lease_seconds)

    async def drain(self) -> None:
        """SIGTERM: take no new jobs, let running ones finish up to the drain timeout, then hand
        the rest to other workers (a new attempt there) instead of rejecting them."""
        self.shutting_down = True
        await self.db.set_draining(self.me)
        tasks = [j.task for j in self.table.all() if j.task and not j.task.done()]
        log.info("draining: %d job(s) running, up to %.0f s", len(tasks), self.settings.drain_timeout)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout)
            if pending:
                await self._hand_over(pending)
        await self.db.deregister(self.me)

    async def _hand_over(self, pending: set[asyncio.Task]) -> None:
        running = [j for j in self.table.all() if j.task in pending]
        for job in running:
            job.log(f"worker {self.me} is shutting down: the job is handed over to another worker", "WARNING")
            await asyncio.to_thread(self.blobs.flush, job.id)
        moved = await self.db.deregister(self.me)  # attempts + 1: this worker's late results are refused
        self.takeovers.inc(len(moved))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await super().stop()  # cancels what still runs, stops the engines
        with contextlib.suppress(Exception):
            await self.db.deregister(self.me)
        await asyncio.to_thread(self.blobs.close)
        await self.pg.close()

    # ---- the heartbeat: lease, takeovers, catch-up, the capacity snapshot -------------------

    async def _heartbeats(self) -> None:
        period = self.cluster.lease_seconds / 3
        while True:
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: /ready says so once the lease has run out
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(period)

    async def _beat(self) -> None:
        if not await self.db.heartbeat(self.me):
            await self._rejoin()
        self.healthy_until = time.monotonic() + self.cluster.lease_seconds
        moved = await self.db.takeover()
        if moved:
            self.takeovers.inc(len(moved))
            log.warning("took over %d job(s) of dead workers: %s", len(moved),
                        ", ".join(f"{t.job_id} (attempt {t.attempt})" for t in moved))
        await self._drop_superseded()
        await self._catch_up()
        self.snapshot = await self.capacity()
        self.reporter = bool(self.snapshot.workers) and min(w["id"] for w in self.snapshot.workers) == self.me

    async def _rejoin(self) -> None:
        """This worker was taken for dead (paused, or cut off): its jobs now belong to others, so
        what still runs here stops (its results would be refused anyway), and it joins again."""
        stale = [j for j in self.table.all() if j.task and not j.task.done()]
        log.warning("worker %s was taken for dead; dropping %d stale job(s) and joining again", self.me, len(stale))
        for job in stale:
            job.task.cancel()
        await asyncio.gather(*(j.task for j in stale), return_exceptions=True)
        await self.db.register(self.me, self.cluster.advertise_url, len(self.settings.engines))

    async def _catch_up(self) -> None:
        for job_id in await self.db.assigned(self.me):
            self._run_assigned(job_id)

    def _on_listening(self) -> None:
        """(Re)listening: notices sent while the connection was down are lost, so read what is ours."""
        asyncio.create_task(self._catch_up(), name="cluster-catch-up")

    async def _drop_superseded(self) -> None:
        """Jobs running here that the cluster gave to another worker (this one was taken for dead
        while paused or cut off) stop: their results would be refused, and their engines are
        counted free already."""
        for job in [j for j in self.table.all() if j.task and not j.task.done()]:
            owner = await self.db.owner(job.id)
            if owner is not None and (owner.worker_id, owner.attempt) != (self.me, job.attempt):
                job.log(f"attempt {job.attempt} on worker {self.me} was superseded by attempt {owner.attempt} "
                        f"on worker {owner.worker_id}: stopping it", "WARNING")
                job.task.cancel()

    # ---- notices from other workers ---------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        if notice.channel == ASSIGN and notice.worker_id == self.me:
            self._run_assigned(notice.job_id)
        elif notice.channel == CANCEL:
            job = self.table.find(notice.job_id)
            if job is not None and job.task is not None and not job.task.done():
                job.log("job deleted while running (force=true) through another worker: cancelling it")
                job.delete()
                job.task.cancel()
        elif notice.channel == ENDED:
            for event in self.waiters.pop(notice.job_id, ()):
                event.set()

    def _run_assigned(self, job_id: str) -> None:
        if self.table.find(job_id) is not None or job_id in self._starting or self.shutting_down:
            return
        self._starting.add(job_id)
        asyncio.create_task(self._start_assigned(job_id), name=f"start-{job_id}")

    async def _start_assigned(self, job_id: str) -> None:
        """A job placed on this worker: its row, its audio from the store, local slots, then its life."""
        try:
            owner, record = await self.db.owner(job_id), await self.store.get(job_id)
            if owner is None or owner.worker_id != self.me or record is None or record.status != RUNNING:
                await self.db.release(job_id, self.me)  # deleted meanwhile: its engines go back
                return
            await asyncio.to_thread(self.blobs.create, job_id)  # its local folder: log, audio
            job = self._running_job(record, owner.attempt)
            if owner.attempt > 1:
                job.log(f"attempt {owner.attempt} on worker {self.me}: taken over from a worker that died "
                        "or shut down; rerun from the stored audio", "WARNING")
            else:
                job.log(f"running on worker {self.me}")
            if job.parsed.config.fetch_data is None:
                await asyncio.to_thread(self.blobs.fetch_upload, job_id)
            self.table.add(job)
            job.task = asyncio.create_task(self._life(job, self.admission.acquire(job_id, job.engines)),
                                           name=f"job-{job_id}")
        except Exception:
            log.exception("job %s could not start on worker %s", job_id, self.me)
        finally:
            self._starting.discard(job_id)

    def _running_job(self, record: StoredJob, attempt: int) -> Job:
        job = Job(record.id, parse_config(record.config, max_depth=None), record.data_name, record.engines,
                  record.user_id, record.config, JobLog(self.blobs, record.id, attempt), record.created_at)
        job.attempt = attempt
        return job

    # ---- submitting --------------------------------------------------------------------------

    async def submit(self, job_id: str, processing: ProcessingData,
                     receive: Callable[[Path], Awaitable[Upload]]) -> Job:
        """Admit across the cluster before reading the body (Busy: the reference's 503); receive
        and check the upload; store it and the job; the worker it is placed on starts it."""
        if self.shutting_down:
            raise ShuttingDown("the worker is shutting down and takes no new jobs")
        try:
            placement = await self.db.admit(job_id, processing.engines, self.me, self.settings.queue_size)
        except Exception:
            self.metrics.refused.inc()
            raise
        stored = False
        try:
            await asyncio.to_thread(self.blobs.create, job_id)
            upload = await receive(self.blobs.upload_path(job_id))
            job = await self._accept(job_id, processing, upload)
            await self._store_new(job, upload, placement.worker_id)
            stored = True
        finally:
            if not stored:
                await self.db.release(job_id)
                await asyncio.to_thread(self.blobs.remove, job_id)
        placed = await self.db.mark_stored(job_id)  # its worker is told now (this one too)
        if placed is None:  # this worker was taken for dead while the upload arrived: its hold is gone
            job.reject("the worker that received the job lost its lease before the job was stored; submit it again")
            await self.db.finish(job.id, job.attempt, job.status, job.duration, list(job.errors))
        elif placed.worker_id == self.me:
            self._run_assigned(job_id)
        return job

    async def _store_new(self, job: Job, upload: Upload, worker_id: str | None) -> None:
        where = f"placed on worker {worker_id}" if worker_id else "queued (cluster-wide, in arrival order)"
        job.log(f"received job {job.id} on worker {self.me}: data_name={job.data_name!r}, {upload.size} bytes, "
                f"model={job.parsed.model}, language={job.parsed.transcription.language}, "
                f"parallel_engines={job.engines}" + (f", user_id={job.user_id}" if job.user_id else "")
                + f"; {where}")
        self.metrics.upload_bytes.inc(upload.size)
        # The audio must be stored before the 201 (any worker may have to run the job), and so
        # must the row: side by side, as they do not depend on each other.
        publish = asyncio.to_thread(self.blobs.publish_upload, job.id) if upload.filename is not None else None
        await asyncio.gather(self.store.insert(job.stored()), *([publish] if publish else []))
        if worker_id != self.me:  # another worker continues this log: it must see these lines
            await asyncio.to_thread(self.blobs.flush, job.id)

    # ---- a job's end, fenced by its attempt -------------------------------------------------

    async def _after(self, job: Job) -> None:
        accepted = await self.db.finish(job.id, job.attempt, job.status, job.duration, list(job.errors))
        self.table.forget(job.id)
        job.ended.set()
        if not accepted:  # taken over meanwhile (or deleted through another worker)
            job.log(f"attempt {job.attempt} is no longer the job's current one: its result is dropped", "WARNING")
            await self.db.release(job.id, self.me)  # a no-op unless the hold is still this worker's
            record = await self.store.get(job.id)
            await asyncio.to_thread(self.blobs.remove if record is None or record.status == DELETED
                                    else self.blobs.drop_local, job.id)
            return
        await asyncio.to_thread(self.blobs.flush, job.id)
        await self.db.release(job.id, self.me)
        await self.db.notify_ended(job.id)
        if job.status in (DONE, REJECTED) and await self._notify(job):
            await self.db.finish(job.id, job.attempt, job.status, job.duration, list(job.errors))
        if job.status in (DONE, REJECTED):
            await asyncio.to_thread(self.blobs.drop_audio, job.id)
            await asyncio.to_thread(self.blobs.drop_local, job.id)
        else:
            await asyncio.to_thread(self.blobs.remove, job.id)
        await self._evict_beyond_history()

    async def _evict_beyond_history(self) -> None:
        """Forget the oldest finished jobs beyond the history bound, cluster-wide (they answer 410)."""
        old = await self.db.beyond_history(self.settings.max_job_history)
        if old:
            await self.store.evict(old)
            for job_id in old:
                await asyncio.to_thread(self.blobs.remove, job_id)

    # ---- reading and deleting ---------------------------------------------------------------

    async def job(self, job_id: str) -> Job:
        """The job as every worker sees it: its row (and, while it runs, its shared progress);
        a job running here is the live object itself."""
        local = self.table.find(job_id)
        if local is not None:
            return local
        record = await self.store.get(job_id)
        if record is None:
            raise JobExpired(job_id) if await self.store.is_evicted(job_id) else JobNotFound(job_id)
        return await self._view(record)

    async def _view(self, record: StoredJob) -> Job:
        view = Job.restore(record, JobLog(self.blobs, record.id))
        owner = await self.db.owner(record.id)
        view.attempt = owner.attempt if owner else 1
        if record.status == RUNNING:
            view.ended.clear()
            snapshot = await self.db.progress(record.id)
            if snapshot:
                view.progress = JobProgress.restore(snapshot)
        return view

    async def waited_job(self, job_id: str, seconds: float | None) -> Job:
        """`?wait=`: a job running here ends here; one running elsewhere wakes this long-poll with
        chorus_ended from its worker, and is read again."""
        job = await self.job(job_id)
        if not seconds or job.finished:
            return job
        if self.table.find(job_id) is not None:  # running here: its own end wakes the poll
            await job.wait(seconds)
            return job
        ended = asyncio.Event()
        self.waiters.setdefault(job_id, set()).add(ended)
        try:
            record = await self.store.get(job_id)  # it may have ended before this waiter was in place
            if record is not None and record.status == RUNNING:
                await asyncio.wait_for(ended.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            waiting = self.waiters.get(job_id, set())
            waiting.discard(ended)
            if not waiting:
                self.waiters.pop(job_id, None)
        return await self.job(job_id)

    async def jobs(self, limit: int, before: datetime | None, after: datetime | None) -> list[Job]:
        return [self.table.find(r.id) or Job.restore(r, JobLog(self.blobs, r.id))
                for r in await self.store.listing(limit, before, after)]

    async def delete(self, job_id: str, force: bool) -> Job:
        """A job running elsewhere is marked deleted here and cancelled by its worker (chorus_cancel),
        which then removes its files; anything else, as the embedded worker does."""
        if self.table.find(job_id) is not None:
            return await super().delete(job_id, force)
        job = await self.job(job_id)
        if job.status == RUNNING and force:
            job.delete()
            await self.db.finish(job.id, job.attempt, DELETED, job.duration, list(job.errors))
            owner = await self.db.owner(job.id)
            if owner is None or owner.worker_id is None:  # still queued: nobody runs it to cancel
                await self.db.release(job.id)
                await asyncio.to_thread(self.blobs.remove, job.id)
            else:
                await self.db.notify_cancel(job.id)
            return job
        return await super().delete(job_id, force)

    # ---- capacity and health ----------------------------------------------------------------

    async def capacity(self) -> CapacityView:
        c = await self.db.capacity()
        return CapacityView(
            active={job_id: hold.engines for job_id, hold in c.active.items()},
            queued=c.queued if self.settings.queue_size else None,
            max_engines=c.max_engines, unused_engines=c.unused_engines,
            workers=[{"id": w.id, "url": w.url, "engines": w.engines, "engines_in_use": w.in_use,
                      "draining": w.draining} for w in c.workers])

    @property
    def ready(self) -> bool:
        """This worker serves the API: engines loaded, the database reachable within the lease, not
        draining. Busy engines do not count: it places jobs on others and answers for every job."""
        return (not self.shutting_down and self.pool.all_loaded_once
                and time.monotonic() < self.healthy_until)

    async def _share_progress(self) -> None:
        shared: dict[str, bytes] = {}
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            for job in [j for j in self.table.all() if j.status == RUNNING]:
                snapshot = job.progress.snapshot()
                if shared.get(job.id) != snapshot:
                    with contextlib.suppress(Exception):
                        await self.db.set_progress(job.id, job.attempt, snapshot.decode())
                        shared[job.id] = snapshot
            shared = {k: v for k, v in shared.items() if self.table.find(k) is not None}
