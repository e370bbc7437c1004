"""Runs one admitted job on its engines, a method per phase: wait for engines (queued jobs),
fetch, decode, identify the language, plan the split, run the tasks, write the outputs.

Every step that costs CPU happens in an engine process; building and writing the transcript
files happens in a worker thread. The job's tasks (gateway/jobs/tasks.py) form a queue that
its engines drain side by side; the first failure stops the rest. The engines go back to the
free set however the job ends, and only once each has said it stopped working for the job.

One cancellation path: a force DELETE or the drain deadline cancels the job's asyncio task.
Whatever engine call it awaits then sends Cancel and waits for the engine's answer
(gateway/jobs/pool.py), the task queue stops, and the slots are released last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TypeVar

from gateway.jobs.admission import Admission
from gateway.jobs.blobs import BlobStore
from gateway.jobs.costs import TaskCosts, shares_with_diarization
from gateway.jobs.metrics import Metrics
from gateway.jobs.pool import EngineDied, EngineHandle, EnginePool
from gateway.jobs.progress import TaskState
from gateway.jobs.remote import FetchFailed, fetch
from gateway.jobs.settle import all_settled, settled
from gateway.jobs.table import Job
from gateway.jobs.tasks import Source, Task, TaskGroups, build_tasks
from gateway.settings import Settings
from gateway.transcript import language_id, languages
from gateway.transcript.build import Heard, JobFacts, channel_labels, render_outputs
from gateway.transcript.config import LanguageIdentificationConfig
from gateway.transcript.model import LanguageIdentification
from gateway.transcript.speaker_id import SpeakerKeys
from shared import messages as m

log = logging.getLogger("chorus.runner")
Expected = TypeVar("Expected", m.Decoded, m.Planned, m.Identified)


class TaskFailed(Exception):
    """The job cannot go on: a step failed, or an engine died (or hung) twice on one task."""


def choose_model(requested: str, language: str, engine: m.Ready, job: Job) -> str:
    """The model that serves the job: a language the requested model lacks goes to one that has it."""
    infos = {info.name: info for info in engine.models}
    wanted = infos[requested]
    whisper = None if language == "auto" else languages.to_whisper(language)
    if (whisper is None and wanted.multilingual) or whisper in wanted.languages:
        return requested
    for info in engine.models:
        if info.multilingual and (whisper is None or whisper in info.languages):
            reason = "language identification" if whisper is None else f"language {language!r}"
            job.log(f"model {requested} ({wanted.source}) cannot serve {reason}; "
                    f"using the {info.name} model ({info.source}) instead")
            return info.name
    raise ValueError(f"no configured model supports language {language!r}")


def _raise_if_failed(reply: m.Reply, failure: str) -> None:
    """TaskFailed for an engine's Failed (its reason after `failure`), or Cancelled (the engine
    was told to stop: shutdown)."""
    match reply:
        case m.Failed():
            raise TaskFailed(f"{failure}{reply.reason}")
        case m.Cancelled():
            raise TaskFailed(f"{failure}cancelled")


def _seconds(samples: int) -> float:
    return samples / m.SAMPLE_RATE


def _span(plan: m.SegmentPlan) -> str:
    return (f"[{_seconds(plan.keep_start):.2f}, {_seconds(plan.keep_end):.2f}) s "
            f"(transcribed {_seconds(plan.start):.2f}-{_seconds(plan.end):.2f} s), "
            f"cut {plan.cut_before}/{plan.cut_after}")


class Runner:
    def __init__(self, settings: Settings, pool: EnginePool, admission: Admission, blobs: BlobStore,
                 metrics: Metrics, speaker_keys: SpeakerKeys) -> None:
        self.settings = settings
        self.pool = pool
        self.admission = admission
        self.blobs = blobs
        self.metrics = metrics
        self.speaker_keys = speaker_keys
        self.costs = TaskCosts()

    async def run(self, job: Job, slots: list[int] | None) -> None:
        """The job from admission to its end (done or rejected); its engines are released last.
        A cancellation (force DELETE, drain deadline) ends it too, and is passed on."""
        started = time.perf_counter()
        try:
            if slots is None:
                slots = await self._wait_turn(job, started)
            await self._run(job, [self.pool[i] for i in slots])
        except (EngineDied, TaskFailed, FetchFailed) as exc:
            job.reject(f"{exc}")
        except asyncio.CancelledError:
            job.reject("the worker shut down before the job finished")
            raise
        except Exception as exc:  # a bug: the job fails, the server stays up
            log.exception("job %s failed", job.id)
            job.reject(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.admission.release(job.id)
            for message in job.errors:
                job.log(f"job rejected: {message.message}", "ERROR")
            job.log(f"job {job.status} after {time.perf_counter() - started:.2f} s; engines {slots or []} released")
            for slot in slots or ():
                self.metrics.jobs.labels(str(slot), job.status).inc()

    async def _wait_turn(self, job: Job, started: float) -> list[int]:
        position = self.admission.position(job.id)
        if position:  # else its engines came free while its upload arrived
            job.log(f"queued: waiting for {job.engines} engine(s), position {position} in the queue")
        slots = await self.admission.wait_turn(job.id)
        job.log(f"left the queue after {time.perf_counter() - started:.2f} s")
        return slots

    async def _run(self, job: Job, engines: list[EngineHandle]) -> None:
        job.log(f"engines {[e.index for e in engines]} reserved (parallel_engines={job.engines})")
        if job.parsed.config.fetch_data is not None:
            await self._fetch(job)
        first = engines[0]
        decoded = await self._decode(job, first)
        model, language, identification = await self._language(job, first)
        source = await self._source(job, first, decoded, len(engines))
        groups = build_tasks(job.id, source, job.parsed.transcription, job.parsed.config.translation_config,
                             model, language, translator=next(
                                 (i.name for i in first.info.models if i.multilingual), None))
        replies = await self._run_tasks(job, engines, groups)
        await self._write(job, source, groups, groups.collect(replies), language, identification)

    # ---- phases ------------------------------------------------------------------------

    async def _fetch(self, job: Job) -> None:
        fetch_data = job.parsed.config.fetch_data
        started = time.perf_counter()
        size = await fetch(fetch_data.url, fetch_data.auth_headers, self.blobs.upload_path(job.id),
                           self.settings.max_upload_bytes)
        self.metrics.upload_bytes.inc(size)
        job.log(f"fetched {size} bytes from {fetch_data.url} in {time.perf_counter() - started:.2f} s")

    async def _decode(self, job: Job, engine: EngineHandle) -> m.Decoded:
        if not engine.ready.is_set():
            job.log(f"waiting for engine {engine.index} to load its models")
        by_channel = job.parsed.transcription.diarization == "channel"
        decoded = await self._request(job, engine, m.Decode(
            job_id=job.id, source_path=str(self.blobs.upload_path(job.id)),
            audio_path=str(self.blobs.audio_path(job.id)), max_seconds=self.settings.max_audio_seconds,
            split_channels=by_channel), m.Decoded, "decoding", failure="")
        job.duration = int(round(decoded.duration))
        job.log(f"decoded {decoded.duration:.2f} s of audio ({decoded.samples} samples at {m.SAMPLE_RATE} Hz"
                + (f", {decoded.channels} channels" if by_channel else "")
                + f") in {decoded.seconds:.2f} s on engine {engine.index} (pid {engine.pid})")
        return decoded

    async def _language(self, job: Job, engine: EngineHandle) -> tuple[str, str, LanguageIdentification | None]:
        """The model and the Whisper language to transcribe in; with language "auto", Whisper
        scores the first speech among the expected languages, and the job goes on in the
        winner (or is rejected, as low_confidence_action says)."""
        tc, info = job.parsed.transcription, engine.info
        model = choose_model(job.parsed.model, tc.language, info, job)
        identification = None
        if tc.language == "auto":
            lid = job.parsed.config.language_identification_config or LanguageIdentificationConfig()
            expected = [languages.to_whisper(c) for c in lid.expected_languages or ()] or None
            found = await self._request(job, engine, m.Identify(
                job_id=job.id, audio_path=str(self.blobs.audio_path(job.id)), model=model, expected=expected),
                m.Identified, "language identification", failure="language identification failed: ")
            verdict = language_id.decide(found, lid)
            job.log(f"language identification over {found.start:.2f}-{found.end:.2f} s in {found.seconds:.2f} s: "
                    + (", ".join(f"{languages.from_whisper(s.language)} {s.probability:.2f}" for s in found.scores)
                       or "no speech") + f"; {verdict.log}")
            if verdict.reject:
                raise TaskFailed(verdict.log)
            language, identification = verdict.language, verdict.metadata
            # The requested model again, if it serves the language found (tiny.en for English).
            model = choose_model(job.parsed.model, languages.from_whisper(language), info, job)
        else:
            language = languages.to_whisper(tc.language)
        source = next(i.source for i in info.models if i.name == model)
        job.log(f"transcribing with the {model} model ({source}), language {language}, {info.device}, "
                f"{info.compute_type}, {info.threads} thread(s) per engine"
                + (f", batches of {info.batch_size}" if info.batch_size > 1 else ""))
        return model, language, identification

    async def _source(self, job: Job, engine: EngineHandle, decoded: m.Decoded, engines: int) -> Source:
        """What the ASR tasks transcribe: each channel, the whole mix, or the mix cut for k engines."""
        whole = m.SegmentPlan(start=0, end=decoded.samples, keep_start=0, keep_end=decoded.samples,
                              cut_before="start", cut_after="end")
        audio = str(self.blobs.audio_path(job.id))
        if job.parsed.transcription.diarization == "channel":
            return Source(audio, decoded.duration, [whole] * decoded.channels,
                          channel_labels(job.parsed.transcription, decoded.channels))
        plans = [whole] if engines == 1 else await self._plan(job, engine, engines)
        return Source(audio, decoded.duration, plans)

    async def _plan(self, job: Job, engine: EngineHandle, count: int) -> list[m.SegmentPlan]:
        split = self.settings.split
        shares = None
        if job.parsed.transcription.diarization == "speaker":  # one engine diarizes too: balance the split
            ratio = self.costs.diarization_ratio(job.parsed.model)
            shares = shares_with_diarization(count, ratio)
            job.log(f"plan: diarization costs about {ratio:.2f}x the transcription here; speech shares "
                    + ", ".join(f"{s:.2f}" for s in shares))
        planned = await self._request(job, engine, m.Plan(
            job_id=job.id, audio_path=str(self.blobs.audio_path(job.id)), segments=len(shares) if shares else count,
            window_seconds=split.window_seconds, overlap_seconds=split.overlap_seconds, shares=shares),
            m.Planned, "planning", failure="planning the split failed: ")
        plans = planned.segments
        job.log(f"plan: {len(plans)} segment(s) for {count} engines from {planned.speech_seconds:.2f} s of "
                f"speech in {planned.speech_regions} region(s), planned in {planned.seconds:.2f} s on engine "
                f"{engine.index}" + ("" if len(plans) == (len(shares) if shares else count) else
                                     "; fewer segments than engines: the other engines stay reserved"))
        pauses = iter(planned.pauses)
        for i, plan in enumerate(plans):
            pause = f", pause {next(pauses):.2f} s" if plan.cut_after != "end" else ""
            job.log(f"plan: segment {i} {_span(plan)}{pause}")
        return plans

    async def _write(self, job: Job, source: Source, groups: TaskGroups, collected, language: str,
                     identification: LanguageIdentification | None) -> None:
        heard = Heard(plans=source.plans, replies=collected.asr, language=language,
                      channels=len(source.plans) if source.channel_labels is not None else 1,
                      diarized=collected.diarized, identification=identification,
                      translated=collected.translated, translation_errors=groups.translation_errors)
        facts = JobFacts(id=job.id, created_at=job.details().created_at, data_name=job.data_name,
                         duration=job.duration, user_id=job.user_id)
        # Written whole even if the job is cancelled meanwhile, so that a deleted job's files
        # are removed only after the last one was written.
        writing = asyncio.ensure_future(asyncio.to_thread(self._render_and_store, job, facts, heard))
        await settled(writing)
        words = writing.result()  # a failed write fails the job
        job.done()
        job.log(f"wrote json-v2, txt and srt: {words} words")

    def _render_and_store(self, job: Job, facts: JobFacts, heard: Heard) -> int:
        rendered = render_outputs(facts, job.parsed, heard, self.speaker_keys, job.log)
        self.blobs.write_outputs(job.id, rendered.files, attempt=job.attempt)
        return rendered.words

    # ---- engine calls ------------------------------------------------------------------

    async def _request(self, job: Job, engine: EngineHandle, request: m.Decode | m.Plan | m.Identify,
                       expect: type[Expected], name: str, failure: str) -> Expected:
        """A step on one engine, its reply typed; retried once on a fresh engine if the engine
        dies or hangs. TaskFailed (with `failure` before the engine's reason) if it fails."""
        job.progress.step = name
        for attempt in (1, 2):
            try:
                reply = await engine.call(request, on_progress=job.progress.sink(None))
            except EngineDied as exc:
                if attempt == 2:
                    raise TaskFailed(f"{name} failed: {exc} (after one retry)") from None
                job.log(f"{name}: {exc}; retrying once on its respawned engine", "WARNING")
                continue
            _raise_if_failed(reply, failure)
            if isinstance(reply, expect):
                return reply
            raise TypeError(f"{name}: engine {engine.index} answered {type(reply).__name__}")
        raise AssertionError("unreachable")

    def _count(self, engine: EngineHandle, reply: m.Reply | None) -> None:
        index = str(engine.index)
        if isinstance(reply, (m.Transcribed, m.Diarized)):
            self.metrics.segments.labels(index, "done").inc()
            self.metrics.audio.labels(index).inc(reply.audio_seconds)
            self.metrics.processing.labels(index).inc(reply.seconds)
            if reply.audio_seconds > 0:
                self.metrics.rtf.labels(index).observe(reply.seconds / reply.audio_seconds)
        else:
            self.metrics.segments.labels(index, "failed").inc()

    async def _run_tasks(self, job: Job, engines: list[EngineHandle], groups: TaskGroups) -> list[m.Reply]:
        """Each engine takes the next task from the queue until none is left. A task whose
        engine dies goes back to the head of the queue once, for whichever engine of the
        job is free first (the dead one's fresh replacement included)."""
        tasks = groups.queue()
        replies: list[m.Reply | None] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        retried: set[int] = set()
        job.progress.start_tasks([_state(t) for t in tasks])

        async def drain(engine: EngineHandle) -> None:
            while queue:
                await engine.ready.wait()  # after a death: the fresh process, and its pid
                if not queue:
                    break
                index = queue.popleft()
                task = tasks[index]
                job.log(f"{task.name} -> engine {engine.index} (pid {engine.pid})")
                job.progress.assign(index, engine.index, engine.pid)
                try:
                    reply = await engine.call(task.request, on_progress=job.progress.sink(
                        index, after=lambda: self._log_progress(job)))
                except EngineDied as exc:
                    self._count(engine, None)
                    if index in retried:
                        raise TaskFailed(f"{task.name} failed: {exc} while working on it (after one retry)") from None
                    retried.add(index)
                    queue.appendleft(index)
                    job.log(f"{task.name}: {exc} while working on it; retrying once", "WARNING")
                    continue
                self._count(engine, reply)
                replies[index] = self._task_reply(job, engine, task, reply)
                self._observe(task, reply)
                job.progress.finish(index)
                self._log_progress(job)

        # The engine whose task died loops on, so a retried task is never left behind. However
        # the queue ends (done, a failure, the job cancelled), every worker is cancelled and
        # awaited: each engine still working for the job is told to cancel, and has answered,
        # before the job lets its engines go.
        workers = [asyncio.create_task(drain(e)) for e in engines[: len(tasks)]]
        try:
            await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            queue.clear()
            for w in workers:
                w.cancel()
            await all_settled(workers)
        failed = next((w.exception() for w in workers if not w.cancelled() and w.exception()), None)
        if failed is not None:
            raise failed
        return replies  # type: ignore[return-value]

    def _observe(self, task: Task, reply: m.Reply) -> None:
        """Learn what diarization costs against transcription (translations are neither)."""
        match task.request, reply:
            case m.Diarize(), m.Diarized():
                self.costs.observe("diarization", reply.audio_seconds, reply.seconds)
            case m.Transcribe(task="transcribe"), m.Transcribed():
                self.costs.observe(f"asr:{task.request.model}", reply.audio_seconds, reply.seconds)

    @staticmethod
    def _task_reply(job: Job, engine: EngineHandle, task: Task, reply: m.Reply) -> m.Transcribed | m.Diarized:
        _raise_if_failed(reply, f"{task.name} failed: ")
        match reply:
            case m.Transcribed() | m.Diarized():
                what = (f"{len(reply.words)} words" if isinstance(reply, m.Transcribed)
                        else f"{len(reply.centroids)} speakers in {len(reply.turns)} turns")
                job.log(f"{task.name} done on engine {engine.index}: {reply.audio_seconds:.2f} s in "
                        f"{reply.seconds:.2f} s (RTF {reply.seconds / max(reply.audio_seconds, 1e-9):.3f}), {what}")
                return reply
        raise TypeError(f"{task.name}: engine {engine.index} answered {type(reply).__name__}")

    @staticmethod
    def _log_progress(job: Job) -> None:
        if job.progress.due_for_log():
            p = job.progress
            job.log(f"progress: {p.fraction:.0%} ({p.audio_done:.1f} of {p.audio_total:.1f} s of audio "
                    f"across the job's tasks)")


def _state(task: Task) -> TaskState:
    """How the progress route shows a task before an engine takes it."""
    request, plan = task.request, task.plan
    if isinstance(request, m.Diarize) or plan is None:
        return TaskState(name=task.name, kind="diarization", seconds=round(task.seconds, 3))
    return TaskState(name=task.name, kind="translation" if request.task == "translate" else "transcription",
                     seconds=round(task.seconds, 3), segment=request.segment,
                     start=round(_seconds(plan.start), 3), end=round(_seconds(plan.end), 3),
                     keep_start=round(_seconds(plan.keep_start), 3), keep_end=round(_seconds(plan.keep_end), 3),
                     cut_before=plan.cut_before, cut_after=plan.cut_after)
