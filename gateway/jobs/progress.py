"""A running job's progress: its step, its tasks and which engine runs each, and the seconds of
audio its engine tasks have covered over the seconds they cover in all (a split job's
segments, its translation and its diarization together).

Fed by the runner and the engines' Progress messages (shared/messages.py); read by the
progress route, the metrics and the job log. Before its tasks are known (while the job
decodes, identifies its language or plans its split) a job is at 0 and only its step moves.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from shared import messages as m

LOG_EVERY = 0.1  # the job log states the progress at each tenth


class TaskState(msgspec.Struct, omit_defaults=True):
    """One engine task as the progress route shows it (times in seconds on the job's timeline)."""

    name: str
    kind: str  # "transcription" | "translation" | "diarization"
    seconds: float  # of audio it covers
    state: str = "queued"  # "queued" | "running" | "done"
    done: float = 0.0  # seconds of its audio covered
    engine: int | None = None  # the engine that runs (or ran) it, and its process
    pid: int | None = None
    attempts: int = 0  # 2 after its first engine died or hung
    segment: int | None = None  # ASR tasks: the segment (or channel) index
    start: float | None = None  # the audio it transcribes
    end: float | None = None
    keep_start: float | None = None  # the words it keeps: those whose midpoint falls in here
    keep_end: float | None = None
    cut_before: str | None = None  # "start" | "silence" | "overlap" (channels: "start")
    cut_after: str | None = None  # "end" | "silence" | "overlap"


class JobProgress:
    def __init__(self) -> None:
        self.step = "queued"
        self.tasks: list[TaskState] = []
        self._logged = 0.0  # the last tenth the log stated

    def snapshot(self) -> bytes:
        """Its step and tasks as JSON (cluster mode shares a running job's progress this way)."""
        return msgspec.json.encode(_Snapshot(step=self.step, tasks=self.tasks))

    @classmethod
    def restore(cls, snapshot: bytes | str) -> JobProgress:
        saved = msgspec.json.decode(snapshot, type=_Snapshot)
        progress = cls()
        progress.step, progress.tasks = saved.step, saved.tasks
        return progress

    def start_tasks(self, tasks: list[TaskState]) -> None:
        """The job's tasks are known."""
        self.tasks = tasks

    def assign(self, task: int, engine: int, pid: int | None) -> None:
        state = self.tasks[task]
        state.engine, state.pid, state.state, state.done = engine, pid, "running", 0.0
        state.attempts += 1

    def advance(self, task: int, done: float) -> None:
        state = self.tasks[task]
        state.done = min(max(done, state.done), state.seconds)

    def finish(self, task: int) -> None:
        state = self.tasks[task]
        state.state, state.done = "done", state.seconds

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
        return sum(t.done for t in self.tasks)

    @property
    def audio_total(self) -> float:
        return sum(t.seconds for t in self.tasks)

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


class _Snapshot(msgspec.Struct):
    step: str
    tasks: list[TaskState]
