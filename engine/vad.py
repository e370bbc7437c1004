"""Silero VAD (faster-whisper's ONNX model) that honours the request's Control.

faster-whisper runs VAD over a whole file in one call, in encoder batches of 10,000 frames
(320 s of audio). Inside `transcribe` and `get_speech_timestamps` that call would be one long
silent stretch for a long file: no heartbeat, no cancel. `install()` wraps the shared model's
ONNX session so that each batch first checks the current request's Control; the model's own
code, and so the speech probabilities, stay faster-whisper's.
"""

from __future__ import annotations

from faster_whisper import vad

from engine import control


class _ControlledSession:
    """An onnxruntime session whose `run` (one encoder batch) checks the Control first."""

    def __init__(self, session) -> None:
        self._session = session

    def run(self, *args, **kwargs):
        control.current().heartbeat()
        return self._session.run(*args, **kwargs)


def install() -> None:
    """Make faster-whisper's VAD (the one model `get_vad_model` caches and every call uses) controlled."""
    model = vad.get_vad_model()
    if not isinstance(model.session, _ControlledSession):
        model.session = _ControlledSession(model.session)
