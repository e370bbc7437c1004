"""Runs one admitted job on its reserved engines: decode, transcribe, build and write outputs.

Every step that costs CPU happens in an engine process; building and writing the transcript
files happens in a worker thread. The engines go back to the free set however the job ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

import msgspec

from gateway.admission import Admission
from gateway.jobs import DELETED, DONE, Job, JobTable, iso_ms
from gateway.merge import detected_language, merge
from gateway.outputs import JobFolder, JobLog
from gateway.pool import EngineDied, EngineHandle, EnginePool
from shared import languages, render
from shared import messages as m
from shared.transcript import JobInfo, Metadata, Transcript, encode, words_to_results

log = logging.getLogger("chorus.runner")

ORCHESTRATOR_VERSION = "chorus-0.1.0"


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


def build_transcript(job: Job, words: list[m.Word], detected: str) -> Transcript:
    tc = job.parsed.transcription
    language = languages.from_whisper(detected) if tc.language == "auto" else tc.language
    output_config = job.parsed.echo.get("output_config")
    return Transcript(
        format="2.9",
        job=JobInfo(
            id=job.id,
            created_at=iso_ms(job.created),
            data_name=job.data_name,
            duration=job.duration,
            tracking=job.parsed.config.tracking,
        ),
        metadata=Metadata(
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            type="transcription",
            transcription_config=job.parsed.echo["transcription_config"],
            language_pack_info=languages.pack_info(language),
            orchestrator_version=ORCHESTRATOR_VERSION,
            output_config=output_config if isinstance(output_config, dict) else None,
        ),
        results=words_to_results(words, language),
    )


def write_outputs(job: Job, folder: JobFolder, words: list[m.Word], detected: str) -> int:
    """Merge, build json-v2 and render txt/srt from it, write all three; returns the word count.

    Runs in a worker thread: for long audio this is tens of thousands of results.
    """
    transcript = build_transcript(job, words, detected)
    output = job.parsed.config.output_config
    srt = output.srt_overrides if output and output.srt_overrides else None
    folder.write_transcripts(
        {
            "json": encode(transcript),
            "txt": render.to_txt(transcript),
            "srt": render.to_srt(transcript, *((srt.max_line_length, srt.max_lines) if srt else ())),
        }
    )
    return sum(1 for r in transcript.results if r.type == "word")


class SegmentFailed(Exception):
    def __init__(self, index: int, plan: m.SegmentPlan, reason: str) -> None:
        span = f"{plan.start / m.SAMPLE_RATE:.2f}-{plan.end / m.SAMPLE_RATE:.2f} s"
        super().__init__(f"segment {index} ({span}) failed: {reason}")


class SplitSettings(msgspec.Struct, frozen=True):
    window_seconds: float = 30.0
    overlap_seconds: float = 1.5


def _span(plan: m.SegmentPlan) -> str:
    return (f"[{plan.keep_start / m.SAMPLE_RATE:.2f}, {plan.keep_end / m.SAMPLE_RATE:.2f}) s "
            f"(transcribed {plan.start / m.SAMPLE_RATE:.2f}-{plan.end / m.SAMPLE_RATE:.2f} s), "
            f"cut {plan.cut_before}/{plan.cut_after}")


class Runner:
    def __init__(
        self,
        pool: EnginePool,
        admission: Admission,
        table: JobTable,
        max_audio_seconds: float,
        split: SplitSettings,
        on_finished: Callable[[Job], None],
    ) -> None:
        self.pool = pool
        self.admission = admission
        self.table = table
        self.max_audio_seconds = max_audio_seconds
        self.split = split
        self.on_finished = on_finished

    async def run(self, job: Job, folder: JobFolder, job_log: JobLog, slots: list[int]) -> None:
        started = time.perf_counter()
        try:
            await self._run(job, folder, job_log, [self.pool[i] for i in slots])
        except (EngineDied, SegmentFailed) as exc:
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
                    f"engines {slots} released")
            cleanup = folder.remove if job.status == DELETED else folder.drop_audio
            await asyncio.to_thread(cleanup)
            job.ended.set()
            self.on_finished(job)

    async def _run(self, job: Job, folder: JobFolder, job_log: JobLog, engines: list[EngineHandle]) -> None:
        first = engines[0]
        job_log(f"engines {[e.index for e in engines]} reserved (parallel_engines={job.engines})")
        if not first.ready.is_set():
            job_log(f"waiting for engine {first.index} to load its models")
        decoded = await first.call(
            m.Decode(job_id=job.id, source_path=str(folder.upload), audio_path=str(folder.audio),
                     max_seconds=self.max_audio_seconds)
        )
        if isinstance(decoded, m.Failed):
            job.reject(decoded.reason)
            return
        assert isinstance(decoded, m.Decoded)
        job.duration = int(round(decoded.duration))
        job_log(f"decoded {decoded.duration:.2f} s of audio ({decoded.samples} samples at "
                f"{m.SAMPLE_RATE} Hz) in {decoded.seconds:.2f} s on engine {first.index} (pid {first.pid})")
        if job.status == DELETED:
            return
        plans = await self._plan(job, folder, job_log, first, decoded, len(engines))
        if plans is None or job.status == DELETED:
            return

        tc = job.parsed.transcription
        assert first.info is not None
        model = choose_model(job.parsed.model, tc.language, first.info, job_log)
        source = next(i.source for i in first.info.models if i.name == model)
        job_log(f"transcribing with the {model} model ({source}), language {tc.language}, "
                f"{first.info.device}, {first.info.compute_type}, {first.info.threads} thread(s) per engine")
        language = None if tc.language == "auto" else languages.to_whisper(tc.language)
        replies = await self._transcribe(job, folder, job_log, engines, plans, model, language)
        if job.status == DELETED:
            return
        detected, probability = detected_language(replies)
        if tc.language == "auto":
            job_log(f"detected language {detected} (p={probability:.2f})")
        words = await asyncio.to_thread(lambda: write_outputs(job, folder, merge(plans, replies), detected))
        job.status = DONE
        job_log(f"wrote json-v2, txt and srt: {words} words")

    async def _plan(
        self, job: Job, folder: JobFolder, job_log: JobLog, engine: EngineHandle,
        decoded: m.Decoded, count: int,
    ) -> list[m.SegmentPlan] | None:
        whole = m.SegmentPlan(start=0, end=decoded.samples, keep_start=0, keep_end=decoded.samples,
                              cut_before="start", cut_after="end")
        if count == 1:
            return [whole]
        planned = await engine.call(
            m.Plan(job_id=job.id, audio_path=str(folder.audio), segments=count,
                   window_seconds=self.split.window_seconds, overlap_seconds=self.split.overlap_seconds)
        )
        if isinstance(planned, m.Failed):
            job.reject(f"planning the split failed: {planned.reason}")
            return None
        assert isinstance(planned, m.Planned)
        plans = planned.segments
        job_log(f"plan: {len(plans)} segment(s) for {count} engines from {planned.speech_seconds:.2f} s of "
                f"speech in {planned.speech_regions} region(s), planned in {planned.seconds:.2f} s on engine "
                f"{engine.index}" + ("" if len(plans) == count else
                                     f"; fewer segments than engines: the other engines stay reserved"))
        pauses = iter(planned.pauses)
        for i, plan in enumerate(plans):
            pause = f", pause {next(pauses):.2f} s" if plan.cut_after != "end" else ""
            job_log(f"plan: segment {i} {_span(plan)}{pause}")
        return plans

    async def _transcribe(
        self, job: Job, folder: JobFolder, job_log: JobLog, engines: list[EngineHandle],
        plans: list[m.SegmentPlan], model: str, language: str | None,
    ) -> list[m.Transcribed]:
        """All segments at once, one per engine; on the first failure the others are stopped."""

        async def one(index: int, plan: m.SegmentPlan, engine: EngineHandle) -> m.Transcribed:
            job_log(f"segment {index} -> engine {engine.index} (pid {engine.pid})")
            try:
                reply = await engine.call(
                    m.Transcribe(job_id=job.id, segment=index, audio_path=str(folder.audio),
                                 start_sample=plan.start, end_sample=plan.end, model=model, language=language)
                )
            except EngineDied as exc:
                raise SegmentFailed(index, plan, f"{exc} while transcribing it") from None
            if isinstance(reply, m.Failed):
                raise SegmentFailed(index, plan, reply.reason)
            assert isinstance(reply, m.Transcribed)
            job_log(f"segment {index} done on engine {engine.index}: {reply.audio_seconds:.2f} s in "
                    f"{reply.seconds:.2f} s (RTF {reply.seconds / max(reply.audio_seconds, 1e-9):.3f}), "
                    f"{len(reply.words)} words")
            return reply

        tasks = [asyncio.create_task(one(i, p, e)) for i, (p, e) in enumerate(zip(plans, engines))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = next((t for t in tasks if t.done() and t.exception()), None)
            if failed is not None:
                for engine in engines:
                    engine.cancel(job.id)
                await asyncio.gather(*pending, return_exceptions=True)
                raise failed.exception()
            return [t.result() for t in tasks]
        finally:
            for t in tasks:
                t.cancel()
