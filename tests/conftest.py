from __future__ import annotations

import re
from pathlib import Path

import jiwer
import numpy as np
import pytest

import testdata
from chorus_server import ChorusServer

# Plain-language Asterisk prompts (no digits or spelled symbols) for the WER check.
EN_PROMPTS = [
    "agent-pass", "agent-loginok", "agent-loggedoff", "agent-incorrect", "auth-thankyou",
    "all-circuits-busy-now", "conf-onlyperson", "conf-enteringno", "vm-goodbye",
    "vm-incorrect", "vm-password", "vm-newpassword", "conf-getpin", "pbx-invalid",
]
FR_PROMPTS = ["agent-pass", "agent-loginok", "agent-user", "all-circuits-busy-now", "vm-goodbye"]


_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def normalise(text: str) -> str:
    """Lower case, no punctuation, and small numbers spelled out ("5" and "five" are one word)."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in text.split())


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


@pytest.fixture(scope="session")
def corpus() -> Path:
    return testdata.fetch()


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def prompt_wav(audio_dir: Path):
    """name -> a WAV file of that English prompt, and its text."""

    def make(name: str, lang: str = "en") -> tuple[Path, str]:
        samples, text = testdata.prompt(name, lang)
        return testdata.write_wav(samples, audio_dir / f"{lang}-{name}.wav"), text

    return make


@pytest.fixture(scope="session")
def speech(prompt_wav) -> tuple[Path, str]:
    """A short English prompt as WAV: the everyday job of the suite."""
    return prompt_wav("agent-pass")


@pytest.fixture(scope="session")
def long_speech(audio_dir: Path) -> tuple[Path, str]:
    """About 40 s of LibriVox reading with pauses: long enough to keep an engine busy."""
    clips = testdata.librivox()
    parts, texts = [], []
    for samples, text in clips:
        parts += [samples, testdata.silence(0.8)]
        texts.append(text)
    return testdata.write_wav(np.concatenate(parts), audio_dir / "librivox.wav"), " ".join(texts)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    """The shared real server: `--parallel 2`, embedded models, its own output folder."""
    srv = ChorusServer(tmp_path_factory.mktemp("srv") / "jobs", parallel=2)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def idle_server(server: ChorusServer) -> ChorusServer:
    """The shared server with no job holding engines, before and after the test."""
    server.wait_idle()
    yield server
    server.wait_idle()
