"""Decoding uploads and transcribing sample ranges with faster-whisper."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from faster_whisper import WhisperModel, decode_audio

from shared.messages import SAMPLE_RATE, Decode, Decoded, ModelInfo, Transcribe, Transcribed, Word, channel_path


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


def _decode_channels(path: str) -> np.ndarray:
    """(channels, samples) at 16 kHz, each channel kept apart."""
    import av

    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=SAMPLE_RATE)
        chunks = [r.to_ndarray() for frame in container.decode(stream) for r in resampler.resample(frame)]
        chunks += [r.to_ndarray() for r in resampler.resample(None)]
    return np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), dtype=np.float32)


def decode(request: Decode) -> Decoded:
    started = time.perf_counter()
    try:
        audio = decode_audio(request.source_path, sampling_rate=SAMPLE_RATE)
        channels = _decode_channels(request.source_path) if request.split_channels else None
    except Exception as exc:  # PyAV raises many types for foreign bytes
        # FFmpeg's own words, without the file's path on this machine.
        reason = getattr(exc, "strerror", None) or str(exc).replace(request.source_path, "upload")
        raise JobAudioError(f"could not decode the audio file: {reason}") from exc
    if audio.size == 0:
        raise JobAudioError("the file holds no audio samples")
    duration = audio.size / SAMPLE_RATE
    if duration > request.max_seconds:
        raise JobAudioError(
            f"audio is {duration:.0f} s long, over the {request.max_seconds:.0f} s limit"
        )
    audio.astype(np.float32, copy=False).tofile(request.audio_path)
    if channels is not None:
        if channels.shape[0] < 2:
            raise JobAudioError('channel diarization needs audio with 2 or more channels; this file is mono')
        for n, samples in enumerate(channels):
            samples[: audio.size].astype(np.float32).tofile(channel_path(request.audio_path, n))
    return Decoded(
        job_id=request.job_id,
        samples=int(audio.size),
        duration=duration,
        seconds=time.perf_counter() - started,
        channels=1 if channels is None else int(channels.shape[0]),
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
