"""Speaker diarization with pyannote.audio's SpeakerDiarization pipeline, held warm in the engine.

Embedded default: pyannote's own pipeline class with the segmentation-3.0 checkpoint, CAM++
as its embedding model and agglomerative clustering (which, unlike VBx, needs no PLDA), at
two operating points that share the models (chosen per job by its `model`):
- standard: 10 s segmentation windows every 5 s, so each second of speech goes through CAM++
  about twice (every 2 s, five times, before): 3-4x faster, with the same DER on the
  project's conversations and pyannote's sample (bench/diarize.py).
- enhanced: windows every 2 s, for recordings with much overlapping speech (meetings).
A user may point at a full pyannote pipeline instead: a local folder with config.yaml, or
a hub name (with HF_TOKEN set) when online, e.g. pyannote/speaker-diarization-community-1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from engine.control import Control
from shared.messages import SAMPLE_RATE, Diarize, Diarized, Turn

EMBEDDED_MODEL_ID = "chorus-seg3.0-campplus-192"
# Cosine-distance threshold of the clustering at speaker_sensitivity 0.5, and how far the
# sensitivity moves it (0 -> +SPAN: fewer speakers; 1 -> -SPAN: more speakers). On
# pyannote's sample call the two speakers stay apart from 0.5 to 0.7 and merge at 0.8.
THRESHOLD = 0.60
SPAN = 0.15
# Segmentation windows (10 s) every STEP x 10 s, by operating point; pyannote's own is 1 s.
SEGMENTATION_STEP = {"standard": 0.5, "enhanced": 0.2}
# A cluster needs this many (window, local speaker) embeddings, else it joins the nearest one:
# the same span of speech (24 s) at either step.
MIN_CLUSTER_SIZE = {"standard": 5, "enhanced": 12}
# The share of a diarization's time its batched steps take (measured at one thread on five
# copies of the sample call, 150 s: segmentation 2.8 s, embeddings and clustering 12.9 s):
# progress runs over these spans of the file's duration as their batches complete.
PROGRESS_SPANS = {"segmentation": (0.0, 0.2), "embeddings": (0.2, 0.97)}


def _no_plda():
    """SpeakerDiarization's constructor always loads a PLDA; agglomerative clustering never
    uses it, so it gets an empty one instead of a hub download."""
    from pyannote.audio.core.plda import PLDA

    class NoPLDA(PLDA):
        def __init__(self) -> None:  # noqa: D401 - nothing to load
            pass

    return NoPLDA()


def _progress_hook(control: Control, duration: float):
    """pyannote's per-step callback (per batch in segmentation and embeddings) as progress
    ticks and cancel checks; raising Cancelled from it stops the pipeline."""

    def hook(step: str, artifact=None, file=None, total: int | None = None, completed: int | None = None) -> None:
        if step not in PROGRESS_SPANS:  # a one-off step (speaker counting, clustering): position unchanged
            control.heartbeat()
            return
        low, high = PROGRESS_SPANS[step]
        fraction = min(1.0, completed / total) if total and completed is not None else 1.0
        control.tick(f"diarizing: {step}", duration * (low + (high - low) * fraction), duration)

    return hook


class Diarizer:
    def __init__(self, source: str, threads: int, device: str) -> None:
        import torch
        from pyannote.audio import Pipeline

        torch.set_num_threads(threads)
        self.embedded = (Path(source) / "campplus").is_dir()
        if self.embedded:
            self.pipelines = _embedded_pipelines(Path(source), threads)
            self.model_id = EMBEDDED_MODEL_ID
        else:
            pipeline = Pipeline.from_pretrained(source, token=os.environ.get("HF_TOKEN"))
            self.pipelines = dict.fromkeys(SEGMENTATION_STEP, pipeline)
            self.model_id = f"pyannote:{source}"
        if device == "cuda":
            for pipeline in self.pipelines.values():
                pipeline.to(torch.device("cuda"))

    def _pipeline(self, request: Diarize):
        """The operating point's pipeline, with the request's sensitivity (embedded models)."""
        point = request.operating_point if request.operating_point in self.pipelines else "standard"
        pipeline = self.pipelines[point]
        if self.embedded:
            threshold = THRESHOLD + (0.5 - request.sensitivity) * 2 * SPAN
            pipeline.instantiate({
                "segmentation": {"min_duration_off": 0.0},
                "clustering": {"method": "centroid", "min_cluster_size": MIN_CLUSTER_SIZE[point],
                               "threshold": threshold},
            })
        return pipeline

    def __call__(self, request: Diarize, control: Control) -> Diarized:
        import torch

        started = time.perf_counter()
        audio = np.fromfile(request.audio_path, dtype=np.float32)
        control.tick("diarizing", 0.0, audio.size / SAMPLE_RATE)
        bounds = {} if request.max_speakers is None else {"max_speakers": request.max_speakers}
        output = self._pipeline(request)(
            {"waveform": torch.from_numpy(audio)[None], "sample_rate": SAMPLE_RATE},
            hook=_progress_hook(control, audio.size / SAMPLE_RATE), **bounds)
        # Words are assigned to the exclusive turns (one speaker at a time); the centroids
        # follow the order of the full diarization's labels.
        full = getattr(output, "speaker_diarization", output)
        annotation = getattr(output, "exclusive_speaker_diarization", full)
        labels = list(full.labels())
        turns = [
            Turn(start=float(segment.start), end=float(segment.end), speaker=labels.index(label))
            for segment, _, label in annotation.itertracks(yield_label=True)
        ]
        embeddings = getattr(output, "speaker_embeddings", None)
        centroids = [] if embeddings is None else [[float(x) for x in row] for row in np.asarray(embeddings)]
        return Diarized(
            job_id=request.job_id,
            turns=sorted(turns, key=lambda t: t.start),
            centroids=centroids[: len(labels)],
            model_id=self.model_id,
            audio_seconds=audio.size / SAMPLE_RATE,
            seconds=time.perf_counter() - started,
        )


def _embedded_pipelines(folder: Path, threads: int) -> dict:
    """One pipeline per operating point, sharing the segmentation and embedding models."""
    from pyannote.audio import Model
    from pyannote.audio.pipelines import SpeakerDiarization

    from engine.campplus import CamPlusPlus

    segmentation = Model.from_pretrained(str(folder / "segmentation-3.0" / "pytorch_model.bin"))
    embedding = CamPlusPlus(str(folder / "campplus" / "campplus_cn_en_common.pt"), threads)
    return {point: SpeakerDiarization(segmentation=segmentation, embedding=embedding, segmentation_step=step,
                                      plda=_no_plda(), clustering="AgglomerativeClustering",
                                      embedding_batch_size=32, segmentation_batch_size=32)
            for point, step in SEGMENTATION_STEP.items()}
