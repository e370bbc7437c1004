"""The gateway <-> engine contract: msgspec structs sent as msgpack over one Pipe per engine.

A tagged union each way (`Request`, `Reply`), dispatched with `match` on both sides.

Audio never travels through the pipe: requests carry a path and a sample range into the
16 kHz mono float32 file the engine wrote when it decoded the job's upload.
"""

from __future__ import annotations

import msgspec

SAMPLE_RATE = 16000


class Word(msgspec.Struct, array_like=True, frozen=True):
    """One recognised word, times in seconds on the job's original timeline."""

    start: float
    end: float
    text: str  # as the model wrote it, punctuation still attached
    probability: float
    volume: float | None = None  # 0-100 (100 x RMS), measured when the job filters by volume


class ModelInfo(msgspec.Struct, frozen=True):
    name: str  # "standard" | "enhanced"
    source: str  # path or hub name it was loaded from
    multilingual: bool
    languages: list[str]


class EngineSettings(msgspec.Struct, frozen=True):
    """Everything an engine process needs to start; handed to it at spawn."""

    index: int
    device: str  # "cpu" | "cuda"
    device_index: int
    compute_type: str
    threads: int
    cores: list[int]  # CPU cores to pin to; empty: no pinning
    models: dict[str, str]  # "standard"/"enhanced" -> local folder or hub name
    diarization: str | None = None  # speaker models folder or pyannote pipeline; None: off
    batch_size: int = 1  # > 1: faster-whisper's batched pipeline, this many VAD chunks per decode


# ---- gateway -> engine ---------------------------------------------------------------


class Decode(msgspec.Struct, tag=True):
    """Decode an upload (any container PyAV reads) into 16 kHz mono float32 samples."""

    job_id: str
    source_path: str
    audio_path: str  # where to write the raw float32 samples
    max_seconds: float
    split_channels: bool = False  # also write each channel to `<audio_path>.ch<n>`


class Plan(msgspec.Struct, tag=True):
    """Cut a decoded file into up to `segments` pieces of near-equal speech (see engine/plan.py)."""

    job_id: str
    audio_path: str
    segments: int
    window_seconds: float  # how far from its ideal position a cut may move to find a pause
    overlap_seconds: float  # margin on each side of a cut that falls inside speech
    shares: list[float] | None = None  # each segment's share of the speech, in order (None: equal)


class SegmentPlan(msgspec.Struct, array_like=True, frozen=True):
    """Transcribe samples [start, end); keep the words whose midpoint is in [keep_start, keep_end)."""

    start: int
    end: int
    keep_start: int
    keep_end: int
    cut_before: str  # "start" | "silence" | "overlap"
    cut_after: str  # "end" | "silence" | "overlap"


class Transcribe(msgspec.Struct, tag=True):
    """Transcribe samples [start_sample, end_sample) of a decoded file."""

    job_id: str
    segment: int
    audio_path: str
    start_sample: int
    end_sample: int
    model: str  # "standard" | "enhanced"
    language: str | None  # None: let Whisper detect
    beam_size: int = 5
    vad_filter: bool = True
    task: str = "transcribe"  # "translate": Whisper's translation into English
    hotwords: str | None = None  # additional_vocab, to bias decoding
    volume_threshold: float | None = None  # 0-100: quieter audio is silenced first


class Identify(msgspec.Struct, tag=True):
    """Which language is spoken: Whisper's language scores over the first speech of a file."""

    job_id: str
    audio_path: str
    model: str
    expected: list[str] | None  # Whisper codes to choose from; None: any the model knows
    windows: int = 3  # 30 s windows of speech to score


class Diarize(msgspec.Struct, tag=True):
    """Who spoke when, over a whole decoded file."""

    job_id: str
    audio_path: str
    sensitivity: float  # speaker_sensitivity 0..1: higher gives more speakers
    operating_point: str = "standard"  # the job's model: "enhanced" is the overlap-aware setting
    max_speakers: int | None = None  # at most this many speakers


class Cancel(msgspec.Struct, tag=True):
    """Abandon the job's request in progress. Every long step checks for it between its chunks
    (decoded frames, VAD chunks, windows, diarization batches) and answers `Cancelled`."""

    job_id: str


class Stop(msgspec.Struct, tag=True):
    pass


Request = Decode | Plan | Identify | Transcribe | Diarize | Cancel | Stop


# ---- engine -> gateway ---------------------------------------------------------------


class Ready(msgspec.Struct, tag=True):
    pid: int
    device: str
    compute_type: str
    threads: int
    cores: list[int]
    models: list[ModelInfo]
    load_seconds: float
    batch_size: int = 1


class LoadFailed(msgspec.Struct, tag=True):
    engine: int
    reason: str


class Decoded(msgspec.Struct, tag=True):
    job_id: str
    samples: int
    duration: float
    seconds: float  # time spent decoding
    channels: int = 1  # channels written apart (split_channels); 1 otherwise


def channel_path(audio_path: str, channel: int) -> str:
    return f"{audio_path}.ch{channel}"


class Planned(msgspec.Struct, tag=True):
    job_id: str
    segments: list[SegmentPlan]
    speech_regions: int
    speech_seconds: float
    pauses: list[float]  # length of the pause each silence cut went into (0 for overlap cuts)
    seconds: float


class LanguageScore(msgspec.Struct, array_like=True, frozen=True):
    language: str  # Whisper code
    probability: float


class Identified(msgspec.Struct, tag=True):
    job_id: str
    scores: list[LanguageScore]  # best first, renormalised over the expected languages; [] without speech
    heard: LanguageScore | None  # the best of all languages, expected or not
    expected_share: float  # how much of Whisper's probability the expected languages hold (1 without)
    start: float  # the span of audio the scores cover
    end: float
    seconds: float


class Transcribed(msgspec.Struct, tag=True):
    job_id: str
    words: list[Word]
    audio_seconds: float
    seconds: float  # time spent transcribing


class Turn(msgspec.Struct, array_like=True, frozen=True):
    start: float
    end: float
    speaker: int  # index into Diarized.centroids


class Diarized(msgspec.Struct, tag=True):
    job_id: str
    turns: list[Turn]
    centroids: list[list[float]]  # one embedding per speaker (may be empty for some pipelines)
    model_id: str
    audio_seconds: float
    seconds: float


class Failed(msgspec.Struct, tag=True):
    """A request failed for a reason that belongs to the job (bad audio, ...)."""

    job_id: str
    reason: str


class Cancelled(msgspec.Struct, tag=True):
    """The request was abandoned on a `Cancel` (or a `Stop`); the engine is idle again."""

    job_id: str


class Progress(msgspec.Struct, tag=True):
    """Sent while a request works, between its chunks: how far it got. It is also the engine's
    heartbeat: an engine that is busy and sends nothing for --hang-timeout is killed as hung."""

    job_id: str
    step: str  # "decoding" | "planning" | "identifying" | "transcribing" | "diarizing: <pyannote step>"
    done: float  # seconds of the request's audio covered so far
    total: float  # seconds of audio the request covers (0: not known yet)


Reply = Ready | LoadFailed | Decoded | Planned | Identified | Transcribed | Diarized | Failed | Cancelled | Progress

_request_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Request)
_reply_decoder = msgspec.msgpack.Decoder(Reply)


def encode(message: Request | Reply) -> bytes:
    return _request_encoder.encode(message)


def decode_request(data: bytes) -> Request:
    return _request_decoder.decode(data)


def decode_reply(data: bytes) -> Reply:
    return _reply_decoder.decode(data)


def decode_settings(data: bytes) -> EngineSettings:
    return msgspec.msgpack.decode(data, type=EngineSettings)
