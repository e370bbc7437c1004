"""What a job's engine tasks cost, learnt from the engines' replies, and how a k-engine job with
speaker diarization shares its speech so that its engines finish together.

The diarization is one task over the whole file, taken first by one of the job's engines; that
engine then takes the last ASR segment. Equal segments would leave the others idle while it
works: so the last segment is made smaller by the diarization's cost, measured as the ratio of
its real-time factor to the ASR's on this worker's engines (a moving average; a guess until the
first jobs have run).

Pure: no I/O, no engines.
"""

from __future__ import annotations

DEFAULT_RTF = {"diarization": 0.03, "asr": 0.06}  # CPU, one thread, the standard model (docs/benchmarks.md)
SMOOTHING = 0.3  # weight of the newest observation
MIN_SHARE = 0.05  # below this, the diarizing engine gets no segment at all


class TaskCosts:
    """Real-time factors by task kind ("diarization", or "asr:<model>")."""

    def __init__(self) -> None:
        self.rtf: dict[str, float] = {}

    def observe(self, kind: str, audio_seconds: float, seconds: float) -> None:
        if audio_seconds <= 1.0 or seconds <= 0:  # too short to say anything about speed
            return
        rtf = seconds / audio_seconds
        old = self.rtf.get(kind)
        self.rtf[kind] = rtf if old is None else (1 - SMOOTHING) * old + SMOOTHING * rtf

    def diarization_ratio(self, model: str) -> float:
        """The diarization's time over the ASR's, for the same audio."""
        diarization = self.rtf.get("diarization", DEFAULT_RTF["diarization"])
        return diarization / self.rtf.get(f"asr:{model}", DEFAULT_RTF["asr"])


def shares_with_diarization(engines: int, ratio: float) -> list[float]:
    """Each ASR segment's share of the speech, in timeline order, for `engines` engines of which
    one also diarizes (costing `ratio` × the whole ASR) and then takes the last segment. Every
    engine should end at (1 + ratio) / engines of the ASR time: the last segment gets what is
    left of that after the diarization. Fewer segments when it would get (almost) nothing."""
    if engines < 2:
        return [1.0]
    last = (1 + ratio) / engines - ratio
    if last < MIN_SHARE:
        return [1.0 / (engines - 1)] * (engines - 1)
    return [(1 - last) / (engines - 1)] * (engines - 1) + [last]
