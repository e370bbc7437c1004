"""Real speech for the tests, fetched at set-up into a cache folder (no audio is committed).

- Debian `pocketsphinx-testdata`: LibriVox clips with their transcripts.
- Debian `asterisk-core-sounds-{en,fr}-g722` + `asterisk-core-sounds-{en,fr}`: studio prompts
  as raw G.722 at 16 kHz, with a `name: text` list.
- The two-speaker call `sample.wav` (+ `sample.stm`) inside the pyannote.audio wheel.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import wave
import zipfile
from functools import cache
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository
CACHE = Path(os.environ.get("CHORUS_TEST_CACHE", ROOT / ".cache" / "testdata"))
DEBS = [
    "pocketsphinx-testdata",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-en",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-fr",
]
PYANNOTE_WHEEL = "pyannote.audio==4.0.7"
RATE = 16000


def _run(cmd: list[str], cwd: Path) -> bool:
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0


def fetch() -> Path:
    """Download and unpack the Debian packages and the wheel once; returns the unpack root."""
    unpacked = CACHE / "root"
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in DEBS if not list(debs.glob(f"{p}_*.deb"))]
    if missing and not _run(["apt-get", "download", *missing], debs):
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        marker = CACHE / f".{deb.name}.unpacked"
        if not marker.exists():
            subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
            marker.touch()
    wheels = CACHE / "wheels"
    if not list(wheels.glob("pyannote_audio-*.whl")):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PYANNOTE_WHEEL, "-d", str(wheels)],
            check=True,
        )
    sample = CACHE / "pyannote-sample"
    if not (sample / "sample.stm").exists():
        with zipfile.ZipFile(next(wheels.glob("pyannote_audio-*.whl"))) as z:
            for name in ("sample.wav", "sample.rttm", "sample.stm"):
                sample.mkdir(exist_ok=True)
                (sample / name).write_bytes(z.read(f"pyannote/audio/sample/{name}"))
    return unpacked


# ---- audio as float32 arrays at 16 kHz ---------------------------------------------------


def decode(path: Path, fmt: str | None = None) -> np.ndarray:
    with av.open(str(path), format=fmt) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def write_wav(samples: np.ndarray, path: Path, channels: int = 1) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


# Container/codec pairs a user might upload; every one is decoded by PyAV from the bytes.
ENCODINGS = {
    "mp3": ("mp3", "mp3", RATE),
    "flac": ("flac", "flac", RATE),
    "ogg": ("ogg", "libopus", 48000),
    "m4a": ("ipod", "aac", RATE),
    "webm": ("webm", "libopus", 48000),
}


def encode(samples: np.ndarray, path: Path, kind: str) -> Path:
    """Encode mono samples with PyAV into one of ENCODINGS."""
    fmt, codec, rate = ENCODINGS[kind]
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = RATE
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# ---- the corpora -------------------------------------------------------------------------


@cache
def _unpacked() -> Path:
    return fetch()


def _prompt_texts(lang: str) -> dict[str, str]:
    listing = _unpacked() / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    texts = {}
    for line in gzip.open(listing, "rt", encoding="utf-8", errors="replace"):
        if ":" in line and not line.startswith(";"):
            name, text = line.split(":", 1)
            texts[name.strip()] = text.strip()
    return texts


_VOICES = {"en": "en_US_f_Allison", "fr": "fr_CA_f_June"}


def prompt(name: str, lang: str = "en") -> tuple[np.ndarray, str]:
    """An Asterisk prompt's audio and its text."""
    path = _unpacked() / f"usr/share/asterisk/sounds/{_VOICES[lang]}/{name}.g722"
    return decode(path, fmt="g722"), _prompt_texts(lang)[name]


def librivox() -> list[tuple[np.ndarray, str]]:
    """The LibriVox clips (Sense and Sensibility) with their transcripts, in order."""
    folder = _unpacked() / "usr/share/pocketsphinx/test/data/librivox"
    clips = []
    for line in (folder / "transcription").read_text().splitlines():
        text, _, fileid = line.rpartition("(")
        text = text.replace("<s>", "").replace("</s>", "").strip()
        clips.append((decode(folder / f"{fileid.strip(') ')}.wav"), text))
    return clips


def pyannote_sample() -> tuple[Path, str]:
    """The two-speaker call and its reference words (from sample.stm)."""
    _unpacked()
    folder = CACHE / "pyannote-sample"
    words = [" ".join(line.split()[5:]) for line in (folder / "sample.stm").read_text().splitlines()]
    return folder / "sample.wav", " ".join(words)


def prompt_names(lang: str = "en") -> list[str]:
    """Prompts with plain spoken text (no tone descriptions), in a fixed order."""
    folder = _unpacked() / f"usr/share/asterisk/sounds/{_VOICES[lang]}"
    have = {p.stem for p in folder.glob("*.g722")}
    return sorted(n for n, t in _prompt_texts(lang).items() if n in have and "[" not in t and len(t) > 15)


def long_recording(seconds: float, seed: int = 7, shuffled: bool = False) -> tuple[np.ndarray, str]:
    """Real speech joined with natural pauses (0.3-1.5 s): LibriVox clips, then Asterisk
    prompts (or both in an order drawn from `seed` when `shuffled`), until `seconds` long.
    Returns the samples and the reference text."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    sources = [(a, t) for a, t in librivox()] + [prompt(n) for n in prompt_names()]
    if shuffled:
        sources = [sources[i] for i in rng.permutation(len(sources))]
    openings: set[tuple[str, ...]] = set()
    for samples, text in sources:
        if total >= seconds * RATE:
            break
        # Asterisk ships near-verbatim variants of some prompts (three conference menus);
        # Whisper may skip a window that repeats what it just wrote, which is not what a
        # recording of natural speech is for: keep one of each.
        opening = tuple(re.findall(r"[a-z0-9']+", text.lower())[:5])
        if opening in openings:
            continue
        openings.add(opening)
        pause = silence(float(rng.uniform(0.3, 1.5)))
        parts += [samples, pause]
        texts.append(text)
        total += samples.size + pause.size
    return np.concatenate(parts), " ".join(texts)


# ---- voices for the speaker tests ---------------------------------------------------------


def sample_turns(min_seconds: float = 1.5) -> dict[str, list[np.ndarray]]:
    """The two speakers of pyannote's sample call ("call-a", "call-b"): the parts of their
    turns where the other is silent, at least `min_seconds` long."""
    path, _ = pyannote_sample()
    audio = decode(path)
    rows = [line.split() for line in path.with_suffix(".rttm").read_text().splitlines()]
    spans = [(float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rows]
    names = {label: f"call-{'ab'[i]}" for i, label in enumerate(dict.fromkeys(w for _, _, w in spans))}
    turns: dict[str, list[np.ndarray]] = {}
    for start, end, who in spans:
        pieces = [(start, end)]
        for s, e, w in spans:
            if w != who:
                pieces = [p for a, b in pieces for p in ((a, min(b, s)), (max(a, e), b)) if p[1] > p[0]]
        for a, b in pieces:
            if b - a >= min_seconds:
                turns.setdefault(names[who], []).append(audio[int(a * RATE):int(b * RATE)])
    return turns


def speech_spans(samples: np.ndarray) -> list[tuple[float, float]]:
    """Where a clip has speech (Silero VAD, pauses of 300 ms and more are silence)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=300, speech_pad_ms=30)
    return [(t["start"] / RATE, t["end"] / RATE) for t in get_speech_timestamps(samples, options)]


def voices() -> dict[str, list[np.ndarray]]:
    """Four real voices, each as a list of turns of speech."""
    allison = [prompt(n)[0] for n in ("agent-pass", "conf-onlyperson", "vm-newpassword", "pbx-invalid",
                                      "agent-incorrect", "conf-getpin")]
    reader = [clip for clip, _ in librivox()]
    sample = sample_turns()
    return {"allison": allison, "reader": reader, **sample}


def conversation(order: list[str], seed: int = 3) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Turns of the named voices in `order`, 0.6-1.2 s apart. Returns the samples and the
    reference (start, end, speaker) spans, with pauses inside a turn marked as silence."""
    rng = np.random.default_rng(seed)
    pool = {name: list(turns) for name, turns in voices().items()}
    parts: list[np.ndarray] = []
    reference: list[tuple[float, float, str]] = []
    t = 0.0
    for name in order:
        clip = pool[name].pop(0)
        pool[name].append(clip)
        reference += [(t + s, t + e, name) for s, e in speech_spans(clip)]
        pause = silence(float(rng.uniform(0.6, 1.2)))
        parts += [clip, pause]
        t += (clip.size + pause.size) / RATE
    return np.concatenate(parts), reference


def write_stereo(left: np.ndarray, right: np.ndarray, path: Path) -> Path:
    n = max(left.size, right.size)
    frames = np.zeros((n, 2), dtype=np.float32)
    frames[: left.size, 0], frames[: right.size, 1] = left, right
    pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path
