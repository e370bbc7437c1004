"""Silero VAD (faster-whisper's ONNX model) that honours the request's Control.

faster-whisper runs VAD over a whole file in one call, in encoder batches of 10,000 frames
(320 s of audio). Inside `transcribe` and `get_speech_timestamps` that call would be one long
silent stretch for a long file: no heartbeat, no cancel. `install()` swaps the model that
faster_whisper.vad hands out for one that checks the current request's Control between the
same batches, with the same state carried across them, so the speech probabilities are
exactly faster-whisper's. Pinned faster-whisper==1.2.1: its SileroVADModel.__call__ is what
`__call__` below follows.
"""

from __future__ import annotations

import os

import numpy as np
from faster_whisper import vad
from faster_whisper.utils import get_assets_path

from engine import control

ENCODER_BATCH = 10_000  # frames per session.run, as faster-whisper


class ControlledSileroVAD(vad.SileroVADModel):
    def __call__(self, audio: np.ndarray, num_samples: int = 512, context_size_samples: int = 64) -> np.ndarray:
        assert audio.ndim == 1 and audio.shape[0] % num_samples == 0
        h = np.zeros((1, 1, 128), dtype="float32")
        c = np.zeros((1, 1, 128), dtype="float32")
        batched = audio.reshape(-1, num_samples)
        context = batched[..., -context_size_samples:]
        context[-1] = 0
        context = np.roll(context, 1, 0)
        batched = np.concatenate([context, batched], 1).reshape(-1, num_samples + context_size_samples)
        outputs = []
        for i in range(0, batched.shape[0], ENCODER_BATCH):
            control.current().heartbeat()
            output, h, c = self.session.run(None, {"input": batched[i: i + ENCODER_BATCH], "h": h, "c": c})
            outputs.append(output)
        return np.concatenate(outputs, axis=0)


def install() -> None:
    """Make faster-whisper's VAD (in transcribe, in get_speech_timestamps) the controlled one."""
    model = ControlledSileroVAD(os.path.join(get_assets_path(), "silero_vad_v6.onnx"))
    vad.get_vad_model = lambda: model
