"""engine.features: chunked log-Mel features equal faster-whisper's, frame for frame, to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from engine import features


@pytest.mark.parametrize("seconds", [0.05, 1.0, 59.99, 60.0, 60.011, 150.3])
@pytest.mark.parametrize("mels", [80, 128])
def test_chunked_features_equal_faster_whispers(seconds, mels, monkeypatch):
    monkeypatch.setattr(features, "CHUNK_FRAMES", 1000)  # many chunks, and one cut in every case above 10 s
    rng = np.random.default_rng(int(seconds * 100) + mels)
    audio = (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    audio[: audio.size // 3] *= 0.001  # quiet and loud parts: the global maximum matters
    expected = FeatureExtractor(feature_size=mels)(audio)
    controlled = FeatureExtractor(feature_size=mels)
    controlled.__class__ = features.ControlledFeatureExtractor
    got = controlled(audio)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    # The same arithmetic; only the matrix product may round in another order (1 ulp).
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
