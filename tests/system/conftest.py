"""Fixtures of the real-server suites: the speech corpus and the shared server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import testdata
from chorus_server import ChorusServer


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
