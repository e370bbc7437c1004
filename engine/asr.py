"""Decoding uploads and transcribing sample ranges with faster-whisper."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from faster_whisper import WhisperModel, decode_audio

from shared.messages import SAMPLE_RATE, Decode, Decoded, ModelInfo, Transcribe, Transcribed, Word


class Cancelled(Exception):
    pass


class JobAudioError(Exception):
    """The job's audio is at fault (undecodable, empty, too long): the job is rejected."""


def load_model(source: str, device: str, device_index: int, compute_type: str, threads: int) -> WhisperModel:
    return WhisperModel(
        source,
        device=device,
        device_index=device_index,
        compute_type=compute_type,
        cpu_threads=threads,
        num_workers=1,
    )


def model_info(name: str, source: str, model: WhisperModel) -> ModelInfo:
    return ModelInfo(
        name=name,
        source=source,
        multilingual=model.model.is_multilingual,
        languages=list(model.supported_languages),
    )


def decode(request: Decode) -> Decoded:
    started = time.perf_counter()
    try:
        audio = decode_audio(request.source_path, sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises many types for foreign bytes
        raise JobAudioError(f"could not decode the audio file: {exc}") from exc
    if audio.size == 0:
        raise JobAudioError("the file holds no audio samples")
    duration = audio.size / SAMPLE_RATE
    if duration > request.max_seconds:
        raise JobAudioError(
            f"audio is {duration:.0f} s long, over the {request.max_seconds:.0f} s limit"
        )
    audio.astype(np.float32, copy=False).tofile(request.audio_path)
    return Decoded(
        job_id=request.job_id,
        samples=int(audio.size),
        duration=duration,
        seconds=time.perf_counter() - started,
    )


def read_samples(path: str, start: int, end: int) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32, count=end - start, offset=start * 4)


def transcribe(
    model: WhisperModel, request: Transcribe, cancelled: Callable[[], bool]
) -> Transcribed:
    started = time.perf_counter()
    audio = read_samples(request.audio_path, request.start_sample, request.end_sample)
    offset = request.start_sample / SAMPLE_RATE
    segments, info = model.transcribe(
        audio,
        language=request.language,
        beam_size=request.beam_size,
        word_timestamps=True,
        vad_filter=request.vad_filter,
    )
    words: list[Word] = []
    for segment in segments:  # a generator: decoding happens window by window
        if cancelled():
            raise Cancelled()
        for w in segment.words or ():
            words.append(
                Word(
                    start=float(w.start) + offset,
                    end=float(w.end) + offset,
                    text=w.word,
                    probability=float(w.probability),
                )
            )
    return Transcribed(
        job_id=request.job_id,
        segment=request.segment,
        words=words,
        language=info.language,
        language_probability=float(info.language_probability),
        audio_seconds=audio.size / SAMPLE_RATE,
        seconds=time.perf_counter() - started,
    )
