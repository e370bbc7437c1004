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

from gateway.admission import Admission
from gateway.jobs import DELETED, DONE, Job, JobTable, iso_ms
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


def build_transcript(job: Job, reply: m.Transcribed) -> Transcript:
    tc = job.parsed.transcription
    language = languages.from_whisper(reply.language) if tc.language == "auto" else tc.language
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
        results=words_to_results(reply.words, language),
    )


def write_outputs(job: Job, folder: JobFolder, reply: m.Transcribed) -> int:
    """Build json-v2 and render txt/srt from it, write all three; returns the word count."""
    transcript = build_transcript(job, reply)
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


class Runner:
    def __init__(
        self,
        pool: EnginePool,
        admission: Admission,
        table: JobTable,
        max_audio_seconds: float,
        on_finished: Callable[[Job], None],
    ) -> None:
        self.pool = pool
        self.admission = admission
        self.table = table
        self.max_audio_seconds = max_audio_seconds
        self.on_finished = on_finished

    async def run(self, job: Job, folder: JobFolder, job_log: JobLog, slots: list[int]) -> None:
        started = time.perf_counter()
        try:
            await self._run(job, folder, job_log, [self.pool[i] for i in slots])
        except EngineDied as exc:
            job.reject(f"{exc} while processing the job")
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
        engine = engines[0]
        job_log(f"engines {[e.index for e in engines]} reserved "
                f"(parallel_engines={job.engines}); engine {engine.index} (pid {engine.pid}) runs the job")
        if not engine.ready.is_set():
            job_log(f"waiting for engine {engine.index} to load its models")
        decoded = await engine.call(
            m.Decode(job_id=job.id, source_path=str(folder.upload), audio_path=str(folder.audio),
                     max_seconds=self.max_audio_seconds)
        )
        if isinstance(decoded, m.Failed):
            job.reject(decoded.reason)
            return
        assert isinstance(decoded, m.Decoded)
        job.duration = int(round(decoded.duration))
        job_log(f"decoded {decoded.duration:.2f} s of audio ({decoded.samples} samples at "
                f"{m.SAMPLE_RATE} Hz) in {decoded.seconds:.2f} s on engine {engine.index}")
        if job.status == DELETED:
            return
        tc = job.parsed.transcription
        assert engine.info is not None
        model = choose_model(job.parsed.model, tc.language, engine.info, job_log)
        source = next(i.source for i in engine.info.models if i.name == model)
        job_log(f"transcribing with the {model} model ({source}), language {tc.language}, "
                f"on engine {engine.index} ({engine.info.device}, {engine.info.compute_type}, "
                f"{engine.info.threads} thread(s))")
        reply = await engine.call(
            m.Transcribe(job_id=job.id, segment=0, audio_path=str(folder.audio), start_sample=0,
                         end_sample=decoded.samples, model=model,
                         language=None if tc.language == "auto" else languages.to_whisper(tc.language))
        )
        if isinstance(reply, m.Failed):
            job.reject(reply.reason)
            return
        assert isinstance(reply, m.Transcribed)
        if job.status == DELETED:
            return
        if tc.language == "auto":
            job_log(f"detected language {reply.language} (p={reply.language_probability:.2f})")
        job_log(f"transcribed {reply.audio_seconds:.2f} s in {reply.seconds:.2f} s "
                f"(RTF {reply.seconds / max(reply.audio_seconds, 1e-9):.3f})")
        words = await asyncio.to_thread(write_outputs, job, folder, reply)
        job.status = DONE
        job_log(f"wrote json-v2, txt and srt: {words} words")
