"""gateway.jobs.table: status changes in one place, and the history bound."""

from __future__ import annotations

import json

import pytest

from gateway.errors import JobExpired, JobNotFound
from gateway.jobs.table import DELETED, DONE, REJECTED, RUNNING, Job, JobTable
from gateway.transcript.config import parse_config

CONFIG = json.dumps({"type": "transcription", "transcription_config": {"language": "en"}})


def job(n: int) -> Job:
    return Job(f"job{n}", parse_config(CONFIG), f"{n}.wav", 1, None, CONFIG, log=lambda *_: None)


def ended(j: Job, how: str = DONE) -> Job:
    {DONE: j.done, REJECTED: lambda: j.reject("no"), DELETED: j.delete}[how]()
    j.ended.set()
    return j


def test_status_moves_only_forward():
    j = job(1)
    assert j.status == RUNNING and not j.finished
    j.reject("engine 0 hung")
    j.done()  # a rejected job stays rejected
    assert j.status == REJECTED and [e.message for e in j.errors] == ["engine 0 hung"]
    k = job(2)
    k.delete()
    k.reject("late")  # a deleted job stays deleted, without an error
    k.done()
    assert k.status == DELETED and k.errors == []


def test_the_history_bound_forgets_the_oldest_ended_jobs():
    table = JobTable(max_history=2)
    jobs = [job(n) for n in range(5)]
    for j in jobs:
        table.add(j)
    ended(jobs[0])
    ended(jobs[1], REJECTED)
    settling = jobs[2]
    settling.delete()  # force-deleted, its engines still answering: not ended yet
    jobs[3].done()  # its end is being recorded now
    assert [j.id for j in table.evict_over_limit(ending=jobs[3])] == ["job0"]
    assert [j.id for j in table.all()] == ["job1", "job2", "job3", "job4"]
    with pytest.raises(JobExpired):
        table.get("job0")
    with pytest.raises(JobNotFound):
        table.get("nope")
    assert table.by_status() == {RUNNING: 1, DONE: 1, REJECTED: 1, DELETED: 1}
    assert [j.id for j in table.listing(10, None, None)] == ["job4", "job3", "job1"]  # deleted ones are not listed
