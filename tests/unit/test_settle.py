"""gateway.jobs.settle: work that must end before a cancelled waiter goes on."""

from __future__ import annotations

import asyncio

import pytest

from gateway.jobs.settle import all_settled, settled


def test_a_cancelled_waiter_waits_for_the_work_then_is_cancelled():
    async def scenario() -> list[str]:
        events: list[str] = []
        release = asyncio.Event()

        async def work() -> str:
            await release.wait()
            events.append("work ended")
            return "result"

        async def waiter() -> None:
            try:
                await settled(work())
            finally:
                events.append("waiter ended")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # twice: still waits
        await asyncio.sleep(0.01)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return events

    assert asyncio.run(scenario()) == ["work ended", "waiter ended"]


def test_uncancelled_it_leaves_the_result_or_error_on_the_work():
    async def scenario() -> None:
        async def fails() -> None:
            raise ValueError("boom")

        future = asyncio.ensure_future(fails())
        await settled(future)
        assert isinstance(future.exception(), ValueError)
        tasks = [asyncio.ensure_future(asyncio.sleep(0.01, result=n)) for n in range(3)]
        await all_settled(tasks)
        assert [t.result() for t in tasks] == [0, 1, 2]
        await all_settled([])

    asyncio.run(scenario())
