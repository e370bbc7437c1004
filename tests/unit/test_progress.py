"""gateway.jobs.progress: a job's fraction done across its tasks, and when the log states it."""

from __future__ import annotations

import pytest

from gateway.jobs.progress import JobProgress, TaskState
from shared.messages import Progress


def tasks(*seconds: float) -> list[TaskState]:
    return [TaskState(name=f"task {i}", kind="transcription", seconds=s) for i, s in enumerate(seconds)]


def test_fraction_is_audio_covered_over_all_tasks():
    p = JobProgress()
    assert (p.step, p.fraction, p.audio_total) == ("queued", 0.0, 0.0)
    p.sink(None)(Progress(job_id="j", step="decoding", done=5.0, total=0.0))
    assert (p.step, p.fraction) == ("decoding", 0.0)  # before the tasks: only the step moves
    p.start_tasks(tasks(60.0, 30.0, 30.0))  # e.g. a diarization of 60 s and two 30 s segments
    p.assign(1, engine=0, pid=123)
    p.sink(1)(Progress(job_id="j", step="transcribing", done=15.0, total=30.0))
    assert p.fraction == pytest.approx(15 / 120) and p.step == "transcribing"
    p.sink(1)(Progress(job_id="j", step="transcribing", done=10.0, total=30.0))  # never backwards
    p.sink(2)(Progress(job_id="j", step="transcribing", done=99.0, total=30.0))  # never past the task
    assert p.audio_done == pytest.approx(45.0)
    p.finish(0)
    p.finish(1)
    assert p.fraction == pytest.approx(1.0)
    assert [(t.state, t.engine, t.pid, t.attempts) for t in p.tasks] == [
        ("done", None, None, 0), ("done", 0, 123, 1), ("queued", None, None, 0)]
    p.assign(2, engine=1, pid=456)  # its engine died: a second attempt starts from nothing
    p.advance(2, 10.0)
    p.assign(2, engine=1, pid=789)
    assert (p.tasks[2].attempts, p.tasks[2].done, p.tasks[2].pid) == (2, 0.0, 789)


def test_the_log_states_progress_once_per_tenth():
    p = JobProgress()
    p.start_tasks(tasks(100.0))
    calls = []
    sink = p.sink(0, after=lambda: calls.append(p.due_for_log()))
    for done in (5, 9.99, 10, 12, 25, 31, 99.9, 100):
        sink(Progress(job_id="j", step="transcribing", done=done, total=100.0))
    # 10 %, then 20 % (at 25), 30 % (at 31), 90 % (at 99.9); never 100 % (the job's end says so)
    assert calls == [False, False, True, False, True, True, True, False]


def test_a_snapshot_restores_the_step_and_tasks():
    """Cluster mode shares a running job's progress as this JSON: every worker shows the same body."""
    progress = JobProgress()
    progress.start_tasks([TaskState(name="segment 0 (0.00-30.00 s)", kind="transcription", seconds=30.0, segment=0,
                                    start=0.0, end=30.0, cut_before="start", cut_after="silence"),
                          TaskState(name="speaker diarization", kind="diarization", seconds=60.0)])
    progress.assign(0, engine=1, pid=4242)
    progress.sink(0)(Progress(job_id="j", step="transcribing", done=12.5, total=30.0))
    restored = JobProgress.restore(progress.snapshot())
    assert restored.step == "transcribing" and restored.tasks == progress.tasks
    assert restored.fraction == progress.fraction == 12.5 / 90.0
    assert JobProgress.restore(JobProgress().snapshot()).step == "queued"
