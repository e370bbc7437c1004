"""Whisper's log-Mel features (faster-whisper's FeatureExtractor) computed in chunks that
honour the request's Control, and a control check before each window is encoded.

faster-whisper computes the features of a whole segment at once before its first window is
decoded: about 20 s of one core for two hours of audio, with no heartbeat and no cancel. The
frames of a short-time Fourier transform are independent, so `ControlledFeatureExtractor`
takes them a chunk at a time (the same padding, window and FFT, frame for frame) and applies
the whole-signal normalisation at the end. The features equal faster-whisper's to float32
rounding (the Mel matrix product may sum in another order; tests/unit/test_features.py), and
come 3x sooner (smaller products stay in cache). Pinned faster-whisper==1.2.1: its FeatureExtractor.__call__ is
what `__call__` below follows.
"""

from __future__ import annotations

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

from engine import control

CHUNK_FRAMES = 6000  # 60 s of audio at a 10 ms hop


class ControlledFeatureExtractor(FeatureExtractor):
    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> np.ndarray:
        if chunk_length is not None:
            self.n_samples = chunk_length * self.sampling_rate
            self.nb_max_frames = self.n_samples // self.hop_length
        waveform = waveform.astype(np.float32, copy=False)
        if padding:
            waveform = np.pad(waveform, (0, padding))
        window = np.hanning(self.n_fft + 1)[:-1].astype("float32")
        # stft(center=True): reflect-pad half a window on each side, then frame every hop.
        padded = np.pad(waveform, self.n_fft // 2, mode="reflect")
        frames = 1 + (padded.size - self.n_fft) // self.hop_length
        mel = np.empty((self.mel_filters.shape[0], frames - 1), dtype=np.float32)  # the last frame is dropped
        for first in range(0, frames - 1, CHUNK_FRAMES):
            control.current().heartbeat()
            last = min(first + CHUNK_FRAMES, frames - 1)
            piece = padded[first * self.hop_length: (last - 1) * self.hop_length + self.n_fft]
            stft = self.stft(piece, self.n_fft, self.hop_length, window=window, return_complex=True,
                             center=False).astype("complex64")
            mel[:, first:last] = self.mel_filters @ (np.abs(stft) ** 2)
        log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


def install(model) -> None:
    """Make a loaded WhisperModel compute its features in controlled chunks, and check the
    control before encoding each window: a window that yields no segment (silence skipped, or
    temperature fallbacks) still sends a heartbeat and sees a cancel."""
    model.feature_extractor.__class__ = ControlledFeatureExtractor
    encode = model.encode

    def controlled_encode(features: np.ndarray):
        control.current().heartbeat()
        return encode(features)

    model.encode = controlled_encode
