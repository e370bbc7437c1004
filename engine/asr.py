"""Decoding uploads and transcribing sample ranges with faster-whisper.

Each step reports its progress and checks for a cancel through the request's `Control`:
decoding per frame, language identification per 30 s window, transcription per
decoded window (or batch), and Silero VAD per encoder batch (engine/vad.py).
"""

from __future__ import annotations

import gc
import itertools
import time

import av
import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import _group_frames, _ignore_invalid_frames

from engine.control import Cancelled, Control
from shared.messages import (
    SAMPLE_RATE,
    Decode,
    Decoded,
    Identified,
    Identify,
    LanguageScore,
    ModelInfo,
    Transcribe,
    Transcribed,
    Word,
    channel_path,
)

# Whisper's temperature fallback samples. A fixed seed for each request makes the same audio
# give the same transcript on the same machine, whichever engine takes it and whenever.
SAMPLING_SEED = 1


# WhisperModel.transcribe's defaults for dropping a window as silence (no_speech_threshold,
# log_prob_threshold); the batched pipeline computes both but does not act on them.
NO_SPEECH = 0.6
LOW_LOGPROB = -1.0


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


# faster_whisper.decode_audio's own grouping: resample about this many samples at a time.
DECODE_GROUP = 500_000


def _frames_with_progress(container, control: Control):
    """The audio frames of the first stream, with a progress tick (and cancel check) per frame."""
    stream = container.streams.audio[0]
    total = float(container.duration) / av.time_base if container.duration else 0.0
    for frame in _ignore_invalid_frames(container.decode(stream)):
        control.tick("decoding", float(frame.time or 0.0), total)
        yield frame


def _decode_mono(path: str, control: Control) -> np.ndarray:
    """faster_whisper.decode_audio, sample for sample (16 kHz mono s16 scaled to float32),
    with progress and cancel between frames."""
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pieces = []
    with av.open(path, mode="r", metadata_errors="ignore") as container:
        groups = _group_frames(_frames_with_progress(container, control), DECODE_GROUP)
        for group in itertools.chain(groups, [None]):  # None flushes the resampler
            pieces += [frame.to_ndarray().reshape(-1) for frame in resampler.resample(group)]
    del resampler
    gc.collect()  # PyAV's resampler frees its buffers only then (faster-whisper #390)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    return audio.astype(np.float32) / 32768.0


def _decode_channels(path: str, control: Control) -> np.ndarray:
    """(channels, samples) at 16 kHz, each channel kept apart."""
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=SAMPLE_RATE)
        chunks = [r.to_ndarray() for frame in _frames_with_progress(container, control)
                  for r in resampler.resample(frame)]
        chunks += [r.to_ndarray() for r in resampler.resample(None)]
    return np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), dtype=np.float32)


def decode(request: Decode, control: Control) -> Decoded:
    started = time.perf_counter()
    control.tick("decoding", 0.0, 0.0)
    try:
        audio = _decode_mono(request.source_path, control)
        channels = _decode_channels(request.source_path, control) if request.split_channels else None
    except Cancelled:
        raise
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
    audio.tofile(request.audio_path)
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


# Loudness on the scale of `audio_filtering_config.volume_threshold` and of results' `volume`:
# 100 x RMS amplitude, so a full-scale sine is 71, close-miked speech 5-20, and the docs'
# example threshold of 3.4 drops speech at about a quarter of that loudness.
VOLUME_FRAME = SAMPLE_RATE // 10  # 100 ms
VOLUME_HOLD = 3  # frames either side: a quiet consonant inside loud speech is kept


def volume(samples: np.ndarray) -> float:
    return float(min(100.0, 100.0 * np.sqrt(np.mean(np.square(samples, dtype=np.float64))))) if samples.size else 0.0


def word_volume(audio: np.ndarray, start: float, end: float) -> float:
    first = int(start * SAMPLE_RATE)
    return round(volume(audio[first : max(int(end * SAMPLE_RATE), first + 1)]), 2)


def silence_quiet_audio(audio: np.ndarray, threshold: float) -> np.ndarray:
    """Zero the 100 ms frames whose neighbourhood never reaches `threshold`, so that VAD and
    Whisper hear silence there."""
    frames = -(-audio.size // VOLUME_FRAME)
    padded = np.zeros(frames * VOLUME_FRAME, dtype=np.float32)
    padded[: audio.size] = audio
    levels = 100.0 * np.sqrt(np.mean(np.square(padded.reshape(frames, VOLUME_FRAME), dtype=np.float64), axis=1))
    loud = levels >= threshold
    kernel = np.ones(2 * VOLUME_HOLD + 1, dtype=bool)
    keep = np.convolve(loud, kernel, mode="same") > 0
    return (padded.reshape(frames, VOLUME_FRAME) * keep[:, None]).reshape(-1)[: audio.size]


def identify(model: WhisperModel, request: Identify, control: Control) -> Identified:
    """Whisper's language scores, averaged over up to `windows` 30 s windows of speech and
    restricted to the expected languages (renormalised over them)."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.vad import collect_chunks, get_speech_timestamps

    started = time.perf_counter()
    audio = np.fromfile(request.audio_path, dtype=np.float32)
    control.tick("identifying", 0.0, audio.size / SAMPLE_RATE)
    chunks = get_speech_timestamps(audio)
    if not chunks:
        return Identified(job_id=request.job_id, scores=[], heard=None, expected_share=1.0, start=0.0, end=0.0,
                          seconds=time.perf_counter() - started)
    window = model.feature_extractor.n_samples
    pieces, _ = collect_chunks(audio, chunks)
    speech = np.concatenate(pieces)[: request.windows * window]
    features = model.feature_extractor(speech)
    totals: dict[str, float] = {}
    step = model.feature_extractor.nb_max_frames
    count = 0
    for i in range(0, features.shape[-1], step):
        if count and features.shape[-1] - i < step // 3:
            break  # a short tail would only add noise to a full window's scores
        control.tick("identifying", i * model.feature_extractor.hop_length / SAMPLE_RATE, speech.size / SAMPLE_RATE)
        encoded = model.encode(pad_or_trim(features[..., i : i + step]))
        for token, probability in model.model.detect_language(encoded)[0]:
            totals[token[2:-2]] = totals.get(token[2:-2], 0.0) + probability
        count += 1
    everything = sum(totals.values()) or 1.0
    top = max(totals, key=totals.__getitem__)
    heard = LanguageScore(top, totals[top] / everything)
    if request.expected:
        totals = {k: v for k, v in totals.items() if k in request.expected}
    norm = sum(totals.values()) or 1.0
    scores = sorted((LanguageScore(k, v / norm) for k, v in totals.items()), key=lambda s: -s.probability)
    # The scored span on the original timeline: from the first speech to where it ran out.
    covered, end = 0, chunks[-1]["end"]
    for chunk in chunks:
        covered += chunk["end"] - chunk["start"]
        if covered >= speech.size:
            end = chunk["end"] - (covered - speech.size)
            break
    return Identified(job_id=request.job_id, scores=scores[:5], heard=heard, expected_share=norm / everything,
                      start=chunks[0]["start"] / SAMPLE_RATE,
                      end=end / SAMPLE_RATE, seconds=time.perf_counter() - started)


def transcribe(model: WhisperModel, request: Transcribe, control: Control, batch_size: int = 1) -> Transcribed:
    started = time.perf_counter()
    audio = read_samples(request.audio_path, request.start_sample, request.end_sample)
    total = audio.size / SAMPLE_RATE
    control.tick("transcribing", 0.0, total)  # VAD and the features come first, then window by window
    ctranslate2.set_random_seed(SAMPLING_SEED)
    offset = request.start_sample / SAMPLE_RATE
    heard = audio if request.volume_threshold is None else silence_quiet_audio(audio, request.volume_threshold)
    options = dict(language=request.language, task=request.task, beam_size=request.beam_size,
                   word_timestamps=True, vad_filter=request.vad_filter, hotwords=request.hotwords)
    # The batched pipeline cuts the audio at VAD pauses into <= 30 s chunks and decodes
    # `batch_size` of them at once (no text carried from one chunk to the next); it needs
    # VAD to find the chunks.
    batched = batch_size > 1 and request.vad_filter
    if batched:
        segments, _ = BatchedInferencePipeline(model).transcribe(heard, batch_size=batch_size, **options)
    else:
        segments, _ = model.transcribe(heard, **options)
    words: list[Word] = []
    for segment in segments:  # a generator: decoding happens window by window (or batch by batch)
        control.tick("transcribing", min(float(segment.end), total), total)
        if batched and segment.no_speech_prob > NO_SPEECH and segment.avg_logprob < LOW_LOGPROB:
            continue  # the silence rule window-by-window decoding applies, which the batched pipeline skips
        for w in segment.words or ():
            words.append(
                Word(
                    start=float(w.start) + offset,
                    end=float(w.end) + offset,
                    text=w.word,
                    probability=float(w.probability),
                    volume=None if request.volume_threshold is None else word_volume(audio, w.start, w.end),
                )
            )
    return Transcribed(
        job_id=request.job_id,
        words=words,
        audio_seconds=audio.size / SAMPLE_RATE,
        seconds=time.perf_counter() - started,
    )
