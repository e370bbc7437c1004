"""Runs one admitted job on its reserved engines: decode, plan, transcribe (and diarize),
then build and write the outputs.

Every step that costs CPU happens in an engine process; building and writing the transcript
files happens in a worker thread. The job's tasks (ASR segments or channels, and speaker
diarization) form a queue that its engines drain side by side; the first failure stops the
rest. The engines go back to the free set however the job ends, and only once each has said
it stopped working for the job.

One cancellation path: a force DELETE or the drain deadline cancels the job's asyncio task.
Whatever engine call it awaits then sends Cancel and waits for the engine's answer
(gateway/pool.py), the task queue stops, and the slots are released last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec

from gateway.transcript import language_id
from gateway.jobs.admission import Admission
from gateway.transcript.config import LanguageIdentificationConfig, TranscriptionConfig
from gateway.jobs.table import DELETED, DONE, Job
from gateway.jobs.metrics import Metrics
from gateway.jobs.blobs import JobFolder, JobLog
from gateway.jobs.pool import EngineDied, EngineHandle, EnginePool
from gateway.jobs.settle import all_settled, settled
from gateway.jobs.remote import FetchFailed, callback_body, fetch, notify
from gateway.transcript.build import Heard, channel_labels, write_outputs
from gateway.transcript.speaker_id import SpeakerKeys
from gateway.transcript import languages
from shared import messages as m
from gateway.transcript.model import FeatureError, LanguageIdentification

log = logging.getLogger("chorus.runner")


class TaskFailed(Exception):
    pass


class SplitSettings(msgspec.Struct, frozen=True):
    window_seconds: float = 30.0
    overlap_seconds: float = 1.5


def choose_model(requested: str, language: str, engine: m.Ready, job_log: JobLog) -> str:
    """The model that serves the job: a language the requested model lacks goes to one that has it."""
    infos = {info.name: info for info in engine.models}
    wanted = infos[requested]
    whisper = None if language == "auto" else languages.to_whisper(language)
    if (whisper is None and wanted.multilingual) or whisper in wanted.languages:
        return requested
    for info in engine.models:
        if info.multilingual and (whisper is None or whisper in info.languages):
            reason = "language identification" if whisper is None else f"language {language!r}"
            job_log(f"model {requested} ({wanted.source}) cannot serve {reason}; "
                    f"using the {info.name} model ({info.source}) instead")
            return info.name
    raise ValueError(f"no configured model supports language {language!r}")


class DecodeOptions(msgspec.Struct, frozen=True):
    """What a job's options change in every Transcribe request it sends."""

    hotwords: str | None
    volume_threshold: float | None

    @classmethod
    def of(cls, tc: TranscriptionConfig) -> DecodeOptions:
        # The content and its sounds_like spellings: Whisper is steered towards any of them,
        # and a sounds_like spelling it writes is mapped back to the content afterwards.
        vocabulary = ", ".join(dict.fromkeys(s for v in tc.vocabulary for s in (v.content, *(v.sounds_like or ()))))
        filtering = tc.audio_filtering_config
        return cls(hotwords=vocabulary or None,
                   volume_threshold=filtering.volume_threshold if filtering is not None else None)


def _seconds(samples: int) -> float:
    return samples / m.SAMPLE_RATE


def _span(plan: m.SegmentPlan) -> str:
    return (f"[{_seconds(plan.keep_start):.2f}, {_seconds(plan.keep_end):.2f}) s "
            f"(transcribed {_seconds(plan.start):.2f}-{_seconds(plan.end):.2f} s), "
            f"cut {plan.cut_before}/{plan.cut_after}")


class Task(msgspec.Struct):
    name: str  # how the log and errors call it: "segment 1 (…)", "channel 2", "diarization"
    request: m.Transcribe | m.Diarize


def _task_seconds(request: m.Transcribe | m.Diarize, duration: float) -> float:
    """The seconds of audio a task covers: its sample range, or the whole file."""
    if isinstance(request, m.Transcribe):
        return _seconds(request.end_sample - request.start_sample)
    return duration


class Runner:
    def __init__(
        self,
        pool: EnginePool,
        admission: Admission,
        max_audio_seconds: float,
        split: SplitSettings,
        speaker_keys: SpeakerKeys,
        metrics: Metrics,
        on_finished: Callable[[Job], Awaitable[None]],
        max_upload_bytes: int,
    ) -> None:
        self.pool = pool
        self.admission = admission
        self.max_audio_seconds = max_audio_seconds
        self.split = split
        self.speaker_keys = speaker_keys
        self.metrics = metrics
        self.on_finished = on_finished
        self.max_upload_bytes = max_upload_bytes

    async def run(self, job: Job, folder: JobFolder, job_log: JobLog, slots: list[int] | None) -> None:
        started = time.perf_counter()
        try:
            if slots is None:
                job_log(f"queued: waiting for {job.engines} engine(s), position "
                        f"{self.admission.position(job.id)} in the queue")
                slots = await self.admission.wait_turn(job.id)
                job_log(f"left the queue after {time.perf_counter() - started:.2f} s")
            await self._run(job, folder, job_log, [self.pool[i] for i in slots])
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
                job_log(f"job rejected: {message.message}", "ERROR")
            job_log(f"job {job.status} after {time.perf_counter() - started:.2f} s; "
                    f"engines {slots or []} released")
            for slot in slots or ():
                self.metrics.jobs.labels(str(slot), job.status).inc()
            await self.on_finished(job)  # durable before anyone is told
            job.ended.set()
            # Callbacks may retry for a while: after the job's end is visible, and before the
            # upload (which a "data" callback sends) is dropped.
            if job.status != DELETED and await self._notify(job, folder, job_log):
                await self.on_finished(job)  # a failed callback added to the job's errors
            cleanup = folder.remove if job.status == DELETED else folder.drop_audio
            await asyncio.to_thread(cleanup)

    async def _notify(self, job: Job, folder: JobFolder, job_log: JobLog) -> bool:
        """Send the job's callbacks; True if one failed (and was added to its errors)."""
        notifications = job.parsed.config.notification_config or []
        failed = False
        status = "success" if job.status == DONE else (
            "fetch_error" if any("unable to fetch audio" in e.message for e in job.errors) else "error")
        jobinfo = msgspec.json.encode({"job": job.details()})
        for notification in notifications:
            body = await asyncio.to_thread(callback_body, notification, folder, jobinfo)
            failure = await notify(notification, job.id, status, body)
            if failure:
                job_log(failure, "ERROR")
                job.note_error(failure)
                failed = True
            else:
                job_log(f"notified {notification.url} (status={status})")
        return failed

    async def _call(self, job: Job, engine: EngineHandle, request: m.Request, name: str,
                    job_log: JobLog) -> m.Reply:
        """One request; if the engine dies (or hangs), once more on its fresh replacement."""
        job.progress.step = name
        for attempt in (1, 2):
            try:
                reply = await engine.call(request, on_progress=job.progress.sink(None))
            except EngineDied as exc:
                if attempt == 2:
                    raise TaskFailed(f"{name} failed: {exc} (after one retry)") from None
                job_log(f"{name}: {exc}; retrying once on its respawned engine", "WARNING")
                continue
            if isinstance(reply, m.Cancelled):  # the engine was told to stop (shutdown)
                raise TaskFailed(f"{name} was cancelled by engine {engine.index}")
            return reply
        raise AssertionError("unreachable")

    async def _run(self, job: Job, folder: JobFolder, job_log: JobLog, engines: list[EngineHandle]) -> None:
        tc = job.parsed.transcription
        first = engines[0]
        job_log(f"engines {[e.index for e in engines]} reserved (parallel_engines={job.engines})")
        fetch_data = job.parsed.config.fetch_data
        if fetch_data is not None:
            fetch_started = time.perf_counter()
            size = await fetch(fetch_data.url, fetch_data.auth_headers, folder.upload, self.max_upload_bytes)
            self.metrics.upload_bytes.inc(size)
            job_log(f"fetched {size} bytes from {fetch_data.url} in {time.perf_counter() - fetch_started:.2f} s")
        if not first.ready.is_set():
            job_log(f"waiting for engine {first.index} to load its models")
        by_channel = tc.diarization == "channel"
        decoded = await self._call(job, first, m.Decode(
            job_id=job.id, source_path=str(folder.upload), audio_path=str(folder.audio),
            max_seconds=self.max_audio_seconds, split_channels=by_channel), "decoding", job_log)
        if isinstance(decoded, m.Failed):
            job.reject(decoded.reason)
            return
        assert isinstance(decoded, m.Decoded)
        job.duration = int(round(decoded.duration))
        job_log(f"decoded {decoded.duration:.2f} s of audio ({decoded.samples} samples at "
                f"{m.SAMPLE_RATE} Hz" + (f", {decoded.channels} channels" if by_channel else "")
                + f") in {decoded.seconds:.2f} s on engine {first.index} (pid {first.pid})")
        if job.status == DELETED:
            return

        assert first.info is not None
        model = choose_model(job.parsed.model, tc.language, first.info, job_log)
        source = next(i.source for i in first.info.models if i.name == model)
        identification = None
        if tc.language == "auto":
            found = await self._identify(job, folder, job_log, first, model)
            if found is None:
                return
            language, identification = found
            # The requested model again, if it serves the language found (tiny.en for English).
            model = choose_model(job.parsed.model, languages.from_whisper(language), first.info, job_log)
            source = next(i.source for i in first.info.models if i.name == model)
        else:
            language = languages.to_whisper(tc.language)
        job_log(f"transcribing with the {model} model ({source}), language {language}, "
                f"{first.info.device}, {first.info.compute_type}, {first.info.threads} thread(s) per engine"
                + (f", batches of {first.info.batch_size}" if first.info.batch_size > 1 else ""))
        whole = m.SegmentPlan(start=0, end=decoded.samples, keep_start=0, keep_end=decoded.samples,
                              cut_before="start", cut_after="end")
        options = DecodeOptions.of(tc)

        if by_channel:
            labels = channel_labels(job, decoded.channels)
            plans = [whole] * decoded.channels
            tasks = [Task(f"channel {c + 1} ({labels[c]})",
                          m.Transcribe(job_id=job.id, segment=c, audio_path=m.channel_path(str(folder.audio), c),
                                       start_sample=0, end_sample=decoded.samples, model=model, language=language,
                                       hotwords=options.hotwords, volume_threshold=options.volume_threshold))
                     for c in range(decoded.channels)]
        else:
            plans = [whole] if len(engines) == 1 else await self._plan(job, folder, job_log, first, len(engines))
            if plans is None:
                return
            tasks = [Task(f"segment {i} ({_seconds(p.start):.2f}-{_seconds(p.end):.2f} s)",
                          m.Transcribe(job_id=job.id, segment=i, audio_path=str(folder.audio),
                                       start_sample=p.start, end_sample=p.end, model=model, language=language,
                                       hotwords=options.hotwords, volume_threshold=options.volume_threshold))
                     for i, p in enumerate(plans)]
        asr_tasks = len(tasks)
        translation_errors: list[FeatureError] = []
        translation = job.parsed.config.translation_config
        if translation is not None and translation.into_english and language != "en":
            translator = next((i.name for i in first.info.models if i.multilingual), None)
            if translator is None:
                translation_errors.append(FeatureError(
                    type="translation_failed", message="no multilingual model is configured to translate with"))
            else:
                tasks += [Task(f"{t.name}, translated", msgspec.structs.replace(
                              t.request, model=translator, task="translate", hotwords=None))
                          for t in tasks[:asr_tasks]]
        if tc.diarization == "speaker":
            # The whole file at once, so speaker labels agree across segments; first in the
            # queue, as the longest single task.
            tasks.insert(0, Task("speaker diarization", m.Diarize(
                job_id=job.id, audio_path=str(folder.audio), sensitivity=tc.speaker_config.sensitivity)))
        if job.status == DELETED:
            return

        job.progress.start_tasks([_task_seconds(t.request, decoded.duration) for t in tasks])
        replies = await self._run_tasks(job, job_log, engines, tasks)
        if job.status == DELETED:
            return
        diarized = next((r for r in replies if isinstance(r, m.Diarized)), None)
        transcribed = [r for r in replies if isinstance(r, m.Transcribed)]
        heard = Heard(plans=plans, replies=transcribed[:asr_tasks], language=language,
                      channels=decoded.channels if by_channel else 1, diarized=diarized,
                      identification=identification, translated=transcribed[asr_tasks:] or None,
                      translation_errors=translation_errors)
        # Written whole even if the job is cancelled meanwhile, so that a deleted job's folder is
        # removed only after its last file was written.
        writing = asyncio.ensure_future(asyncio.to_thread(write_outputs, job, folder, heard, self.speaker_keys, job_log))
        await settled(writing)
        words = writing.result()
        job.status = DONE
        job_log(f"wrote json-v2, txt and srt: {words} words")

    async def _identify(self, job: Job, folder: JobFolder, job_log: JobLog, engine: EngineHandle,
                        model: str) -> tuple[str, LanguageIdentification] | None:
        """language "auto": Whisper scores the first speech, among the expected languages;
        the job is then transcribed in the winner (or rejected, as low_confidence_action says)."""
        lid = job.parsed.config.language_identification_config or LanguageIdentificationConfig()
        expected = [languages.to_whisper(c) for c in lid.expected_languages or ()] or None
        found = await self._call(job, engine, m.Identify(job_id=job.id, audio_path=str(folder.audio), model=model,
                                                    expected=expected), "language identification", job_log)
        if isinstance(found, m.Failed):
            job.reject(f"language identification failed: {found.reason}")
            return None
        assert isinstance(found, m.Identified)
        verdict = language_id.decide(found, lid)
        job_log(f"language identification over {found.start:.2f}-{found.end:.2f} s in {found.seconds:.2f} s: "
                + (", ".join(f"{languages.from_whisper(s.language)} {s.probability:.2f}" for s in found.scores)
                   or "no speech") + f"; {verdict.log}")
        if verdict.reject:
            job.reject(verdict.log)
            return None
        return verdict.language, verdict.metadata

    async def _plan(self, job: Job, folder: JobFolder, job_log: JobLog, engine: EngineHandle,
                    count: int) -> list[m.SegmentPlan] | None:
        planned = await self._call(job, engine, m.Plan(
            job_id=job.id, audio_path=str(folder.audio), segments=count,
            window_seconds=self.split.window_seconds, overlap_seconds=self.split.overlap_seconds),
            "planning", job_log)
        if isinstance(planned, m.Failed):
            job.reject(f"planning the split failed: {planned.reason}")
            return None
        assert isinstance(planned, m.Planned)
        plans = planned.segments
        job_log(f"plan: {len(plans)} segment(s) for {count} engines from {planned.speech_seconds:.2f} s of "
                f"speech in {planned.speech_regions} region(s), planned in {planned.seconds:.2f} s on engine "
                f"{engine.index}" + ("" if len(plans) == count else
                                     "; fewer segments than engines: the other engines stay reserved"))
        pauses = iter(planned.pauses)
        for i, plan in enumerate(plans):
            pause = f", pause {next(pauses):.2f} s" if plan.cut_after != "end" else ""
            job_log(f"plan: segment {i} {_span(plan)}{pause}")
        return plans

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

    async def _run_tasks(self, job: Job, job_log: JobLog, engines: list[EngineHandle],
                         tasks: list[Task]) -> list[m.Reply]:
        """Each engine takes the next task from the queue until none is left. A task whose
        engine dies goes back to the head of the queue once, for whichever engine of the
        job is free first (the dead one's fresh replacement included)."""
        replies: list[m.Reply | None] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        retried: set[int] = set()

        async def drain(engine: EngineHandle) -> None:
            while queue:
                await engine.ready.wait()  # after a death: the fresh process, and its pid
                if not queue:
                    break
                index = queue.popleft()
                task = tasks[index]
                job_log(f"{task.name} -> engine {engine.index} (pid {engine.pid})")
                try:
                    reply = await engine.call(task.request, on_progress=job.progress.sink(
                        index, after=lambda: self._log_progress(job, job_log)))
                except EngineDied as exc:
                    self._count(engine, None)
                    if index in retried:
                        raise TaskFailed(f"{task.name} failed: {exc} while working on it (after one retry)") from None
                    retried.add(index)
                    queue.appendleft(index)
                    job_log(f"{task.name}: {exc} while working on it; retrying once", "WARNING")
                    continue
                self._count(engine, reply)
                if isinstance(reply, m.Failed):
                    raise TaskFailed(f"{task.name} failed: {reply.reason}")
                if isinstance(reply, m.Cancelled):  # the engine was told to stop (shutdown)
                    raise TaskFailed(f"{task.name} was cancelled by engine {engine.index}")
                what = (f"{len(reply.words)} words" if isinstance(reply, m.Transcribed)
                        else f"{len(reply.centroids)} speakers in {len(reply.turns)} turns")
                job_log(f"{task.name} done on engine {engine.index}: {reply.audio_seconds:.2f} s in "
                        f"{reply.seconds:.2f} s (RTF {reply.seconds / max(reply.audio_seconds, 1e-9):.3f}), "
                        f"{what}")
                replies[index] = reply
                job.progress.finish(index)
                self._log_progress(job, job_log)

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

    @staticmethod
    def _log_progress(job: Job, job_log: JobLog) -> None:
        if job.progress.due_for_log():
            p = job.progress
            job_log(f"progress: {p.fraction:.0%} ({p.audio_done:.1f} of {p.audio_total:.1f} s of audio "
                    f"across the job's tasks)")
