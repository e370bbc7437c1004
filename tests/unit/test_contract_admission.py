"""The Admission contract (gateway/jobs/admission.py): exact engine accounting and a fair
queue. Today's is in-process; cluster mode's joins `ADMISSIONS`."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import Busy
from gateway.jobs.admission import Admission, InProcessAdmission

ADMISSIONS = {"in-process": InProcessAdmission}


@pytest.fixture(params=list(ADMISSIONS))
def make(request):
    return ADMISSIONS[request.param]


def test_a_job_takes_all_its_engines_or_none(make):
    async def scenario() -> None:
        admission: Admission = make(3, 0)
        assert admission.acquire("a", 2) == [0, 1]
        with pytest.raises(Busy) as refused:
            admission.acquire("b", 2)
        assert str(refused.value) == "Server busy: 2 engines not available (2 engines in use, 3 parallel allowed)"
        assert admission.acquire("c", 1) == [2]
        assert (admission.in_use, admission.unused) == (3, 0)
        assert admission.active() == {"a": 2, "c": 1}
        admission.release("a")
        admission.release("a")  # twice: nothing more
        assert (admission.in_use, admission.unused) == (1, 2) and admission.active() == {"c": 1}
        with pytest.raises(Busy):
            admission.acquire("d", 4)  # more than exist: never, queue or not

    asyncio.run(scenario())


def test_the_queue_starts_jobs_in_arrival_order_and_never_overtakes_its_head(make):
    async def scenario() -> None:
        admission: Admission = make(2, 2)
        assert admission.acquire("a", 2) == [0, 1]
        assert admission.acquire("b", 2) is None and admission.acquire("c", 1) is None
        assert admission.queued() == {"b": 2, "c": 1} and admission.position("c") == 2
        with pytest.raises(Busy):
            admission.acquire("d", 1)  # the queue is full
        b, c = asyncio.ensure_future(admission.wait_turn("b")), asyncio.ensure_future(admission.wait_turn("c"))
        admission.release("a")
        assert await b == [0, 1]
        await asyncio.sleep(0)
        assert not c.done()  # one engine would be free for c only if b had not come first
        admission.release("b")
        assert await c == [0]
        assert admission.queued() == {} and admission.active() == {"c": 1}

    asyncio.run(scenario())


def test_a_job_leaving_the_queue_frees_its_place(make):
    async def scenario() -> None:
        admission: Admission = make(1, 2)
        admission.acquire("a", 1)
        admission.acquire("b", 1)
        admission.acquire("c", 1)
        waiting = asyncio.ensure_future(admission.wait_turn("b"))
        await asyncio.sleep(0)
        admission.release("b")  # deleted while queued
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert admission.queued() == {"c": 1} and admission.position("c") == 1
        admission.release("a")
        assert admission.active() == {"c": 1}

    asyncio.run(scenario())


def test_a_turn_that_comes_before_the_job_waits_for_it_is_kept(make):
    """Queued, then engines free up while its upload still arrives: the turn waits for it."""

    async def scenario() -> None:
        admission: Admission = make(1, 1)
        admission.acquire("a", 1)
        assert admission.acquire("b", 1) is None and admission.position("b") == 1
        admission.release("a")
        assert admission.position("b") == 0 and admission.active() == {"b": 1}
        assert await admission.wait_turn("b") == [0]

    asyncio.run(scenario())
