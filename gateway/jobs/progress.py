"""A running job's progress: the seconds of audio its engine tasks have covered, over the seconds
they cover in all (a split job's segments, its translation and its diarization together).

Fed by the engines' Progress messages (shared/messages.py); read by the progress route, the
metrics and the job log. Before its tasks are known (while the job decodes, identifies its
language or plans its split) a job is at 0 and only its step moves.
"""

from __future__ import annotations

from collections.abc import Callable

from shared import messages as m

LOG_EVERY = 0.1  # the job log states the progress at each tenth


class JobProgress:
    def __init__(self) -> None:
        self.step = "queued"
        self._totals: list[float] = []
        self._done: list[float] = []
        self._logged = 0.0  # the last tenth the log stated

    def start_tasks(self, totals: list[float]) -> None:
        """The job's tasks are known: each covers this many seconds of audio."""
        self._totals = [max(0.0, t) for t in totals]
        self._done = [0.0] * len(totals)

    def advance(self, task: int, done: float) -> None:
        self._done[task] = min(max(done, self._done[task]), self._totals[task])

    def finish(self, task: int) -> None:
        self._done[task] = self._totals[task]

    def sink(self, task: int | None, after: Callable[[], None] | None = None) -> Callable[[m.Progress], None]:
        """What the engine handle calls with each Progress message of one request (of task
        `task`, or of a step before the tasks when None); then `after`."""

        def on_progress(message: m.Progress) -> None:
            self.step = message.step
            if task is not None:
                self.advance(task, message.done)
            if after is not None:
                after()

        return on_progress

    @property
    def audio_done(self) -> float:
        return sum(self._done)

    @property
    def audio_total(self) -> float:
        return sum(self._totals)

    @property
    def fraction(self) -> float:
        total = self.audio_total
        return self.audio_done / total if total > 0 else 0.0

    def due_for_log(self) -> bool:
        """True once per tenth crossed, so the job log states the progress at sensible intervals."""
        tenth = int(self.fraction / LOG_EVERY + 1e-9) * LOG_EVERY
        if tenth > self._logged and tenth < 1.0:
            self._logged = tenth
            return True
        return False
