"""ClusterDB and the schema's migrations (gateway/cluster/postgres.py) on a real PostgreSQL, a fresh
database per test: admission exact across workers that race, the queue's order, takeover after the
lease, fencing of a late end, and notices between workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import pytest

from gateway.cluster.postgres import (
    ASSIGN,
    CANCEL,
    ENDED,
    MIGRATIONS,
    ClusterDB,
    Hold,
    Notice,
    Owner,
    Placement,
    PostgresJobStore,
    Takeover,
    connect,
    make_pool,
    migrate,
)
from gateway.errors import Busy
from gateway.jobs.table import DELETED, DONE, RUNNING, StoredJob


def run(coroutine):
    """Each scenario on its own loop, bounded: a hang fails here rather than at the suite's timeout."""
    async def bounded():
        return await asyncio.wait_for(coroutine, 60)
    return asyncio.run(bounded())


@asynccontextmanager
async def workers(url: str, count: int = 1, lease_seconds: float = 30.0) -> AsyncIterator[list[ClusterDB]]:
    """`count` ClusterDBs, each on its own pool, as separate worker processes would be."""
    pools = [await connect(url, max_size=10) for _ in range(count)]
    try:
        yield [ClusterDB(pool, lease_seconds) for pool in pools]
    finally:
        for pool in pools:
            await pool.close()


async def store_job(db: ClusterDB, job_id: str, engines: int = 1) -> None:
    """The upload arrived: the job row, then its hold marked stored."""
    created = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
    await PostgresJobStore(db.pool).insert(StoredJob(
        id=job_id, created_at=created, data_name="a.wav", config="{}", engines=engines, user_id=None,
        status=RUNNING, duration=0, errors=[]))
    await db.mark_stored(job_id)


# ---- migrations ---------------------------------------------------------------------------------

async def versions(pool) -> list[int]:
    async with pool.connection() as conn:
        return [r[0] for r in await (await conn.execute("SELECT version FROM schema_version ORDER BY 1")).fetchall()]


def test_migrate_applies_the_schema_once(database_url):
    async def scenario() -> None:
        async with make_pool(database_url) as pool:
            latest = len(MIGRATIONS)
            assert await migrate(pool) == latest
            assert await migrate(pool) == latest  # again: nothing to do
            assert await versions(pool) == list(range(1, latest + 1))
            async with pool.connection() as conn:
                tables = await (await conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                    "ORDER BY 1")).fetchall()
            assert [t[0] for t in tables] == ["evicted", "holds", "jobs", "schema_version", "workers"]

    run(scenario())


def test_workers_starting_together_migrate_once(database_url):
    async def scenario() -> None:
        pools = [make_pool(database_url) for _ in range(3)]
        for pool in pools:
            await pool.open(wait=True)
        try:
            latest = len(MIGRATIONS)
            assert await asyncio.gather(*(migrate(pool) for pool in pools)) == [latest] * 3
            assert await versions(pools[0]) == list(range(1, latest + 1))
        finally:
            for pool in pools:
                await pool.close()

    run(scenario())


def test_a_newer_worker_migrates_an_older_database_and_an_older_one_leaves_it(database_url):
    newer = (*MIGRATIONS, "ALTER TABLE workers ADD COLUMN zone text")

    async def scenario() -> None:
        async with make_pool(database_url) as pool:
            latest = len(MIGRATIONS)
            assert await migrate(pool, MIGRATIONS[:1]) == 1  # a database of the first version
            assert await migrate(pool) == latest  # this worker brings it up to date
            assert await migrate(pool, newer) == latest + 1  # a newer worker
            assert await migrate(pool) == latest + 1  # an older worker starting afterwards
            assert await versions(pool) == list(range(1, latest + 2))
            async with pool.connection() as conn:
                await conn.execute("SELECT zone FROM workers")

    run(scenario())


# ---- admission ----------------------------------------------------------------------------------

def test_admission_is_exact_when_three_workers_race(database_url):
    """30 jobs at once through 3 workers of 2 + 1 + 1 engines: exactly 4 start, no worker is
    over-committed, the rest are refused with the cluster's numbers."""
    async def scenario() -> None:
        async with workers(database_url, 3) as dbs:
            for db, (name, engines) in zip(dbs, [("w1", 2), ("w2", 1), ("w3", 1)]):
                await db.register(name, f"http://{name}", engines)
            results = await asyncio.gather(
                *(dbs[i % 3].admit(f"j{i:02d}", 1, f"w{i % 3 + 1}", queue_size=0) for i in range(30)),
                return_exceptions=True)
            placed = [r for r in results if isinstance(r, Placement)]
            refused = [r for r in results if isinstance(r, Busy)]
            assert len(placed) == 4 and len(refused) == 26
            assert sorted(p.worker_id for p in placed) == ["w1", "w1", "w2", "w3"]
            assert {str(b) for b in refused} == {"Server busy: 1 engines not available "
                                                 "(4 engines in use, 4 parallel allowed)"}
            capacity = await dbs[0].capacity()
            assert [(w.id, w.engines, w.in_use) for w in capacity.workers] == [("w1", 2, 2), ("w2", 1, 1),
                                                                               ("w3", 1, 1)]
            assert (capacity.engines_total, capacity.engines_in_use) == (4, 4)
            assert (capacity.max_engines, capacity.unused_engines) == (2, 0)
            assert len(capacity.active) == 4 and capacity.queued == {}

    run(scenario())


def test_racing_jobs_queue_in_one_order_and_start_in_it(database_url):
    async def scenario() -> None:
        async with workers(database_url, 3) as dbs:
            for db, (name, engines) in zip(dbs, [("w1", 2), ("w2", 1), ("w3", 1)]):
                await db.register(name, f"http://{name}", engines)
            results = await asyncio.gather(
                *(dbs[i % 3].admit(f"j{i:02d}", 1, f"w{i % 3 + 1}", queue_size=5) for i in range(30)),
                return_exceptions=True)
            placed = {f"j{i:02d}": r for i, r in enumerate(results) if isinstance(r, Placement) and r.worker_id}
            queued = {f"j{i:02d}": r.position for i, r in enumerate(results)
                      if isinstance(r, Placement) and r.worker_id is None}
            assert len(placed) == 4 and sorted(queued.values()) == [1, 2, 3, 4, 5]
            assert sum(isinstance(r, Busy) for r in results) == 21
            in_line = sorted(queued, key=queued.get)
            assert list((await dbs[1].capacity()).queued) == in_line
            assert [await dbs[2].position(j) for j in in_line] == [1, 2, 3, 4, 5]
            # Each ending job starts the queue's head, on the worker it freed.
            started = []
            for job_id, placement in placed.items():
                heads = await dbs[0].release(job_id, placement.worker_id)
                assert heads == [(in_line[len(started)], placement.worker_id)]
                started += [h[0] for h in heads]
            assert started == in_line[:4]
            assert await dbs[0].position(in_line[4]) == 1

    run(scenario())


def test_the_queue_head_is_never_overtaken(database_url):
    async def scenario() -> None:
        async with workers(database_url) as (db,):
            await db.register("w1", "http://w1", 2)
            assert await db.admit("a", 1, "w1", queue_size=3) == Placement("w1", 0)
            assert await db.admit("b", 2, "w1", queue_size=3) == Placement(None, 1)
            # One engine is free, but b waits first.
            assert await db.admit("c", 1, "w1", queue_size=3) == Placement(None, 2)
            assert await db.release("a") == [("b", "w1")]
            assert await db.position("c") == 1 and await db.position("b") == 0
            assert await db.release("b") == [("c", "w1")]
            assert await db.release("c") == [] and await db.release("c") == []  # twice: nothing more
            assert (await db.capacity()).active == {}

    run(scenario())


def test_placement_prefers_the_accepting_worker_then_the_most_room(database_url):
    async def scenario() -> None:
        async with workers(database_url) as (db,):
            for name, engines in [("w1", 2), ("w2", 3), ("w3", 1)]:
                await db.register(name, f"http://{name}", engines)
            assert await db.admit("j1", 1, "w3", 0) == Placement("w3", 0)
            assert await db.admit("j2", 1, "w3", 0) == Placement("w2", 0)  # w3 is full; w2 has most room
            assert await db.admit("j3", 2, "w1", 0) == Placement("w1", 0)
            assert await db.admit("j4", 2, "w1", 0) == Placement("w2", 0)
            with pytest.raises(Busy) as refused:
                await db.admit("j5", 1, "w1", 0)
            assert str(refused.value) == "Server busy: 1 engines not available (6 engines in use, 6 parallel allowed)"
            with pytest.raises(Busy):  # more than any one worker has: never, queue or not
                await db.admit("j6", 4, "w1", queue_size=5)
            await db.release("j2")
            await db.set_draining("w2")
            with pytest.raises(Busy):  # w2's free engine takes nothing new while it drains
                await db.admit("j7", 1, "w2", 0)
            capacity = await db.capacity()
            assert (capacity.max_engines, capacity.unused_engines) == (2, 0)
            assert capacity.active == {"j1": Hold(1, "w3"), "j3": Hold(2, "w1"), "j4": Hold(2, "w2")}
            await db.set_draining("w2", False)
            assert await db.admit("j7", 1, "w2", 0) == Placement("w2", 0)

    run(scenario())


def test_a_cluster_without_workers_is_busy(database_url):
    async def scenario() -> None:
        async with workers(database_url) as (db,):
            with pytest.raises(Busy) as refused:
                await db.admit("j1", 1, "w1", queue_size=5)
            assert str(refused.value) == "Server busy: 1 engines not available (0 engines in use, 0 parallel allowed)"

    run(scenario())


# ---- takeover and fencing -----------------------------------------------------------------------

def test_a_dead_workers_job_moves_with_a_new_attempt_and_its_late_end_is_dropped(database_url):
    async def scenario() -> None:
        async with workers(database_url, 2, lease_seconds=1.0) as (db1, db2):
            await db1.register("w1", "http://w1", 2)
            await db2.register("w2", "http://w2", 1)
            assert await db1.admit("j1", 1, "w1", 0) == Placement("w1", 0)
            await store_job(db1, "j1")
            assert await db1.owner("j1") == Owner("w1", 1)
            assert await db1.admit("j2", 1, "w1", 0) == Placement("w1", 0)  # its upload never finishes
            assert await db2.takeover() == []  # everyone is live
            await asyncio.sleep(1.3)  # w1 falls silent past the lease; w2 keeps beating
            assert await db2.heartbeat("w2")
            assert await db2.takeover() == [Takeover("j1", "w2", 2)]
            assert await db2.owner("j1") == Owner("w2", 2)
            assert (await db2.capacity()).active == {"j1": Hold(1, "w2")}  # j2 never existed for a client
            assert await db1.mark_stored("j2") is None  # w1 wakes up: too late
            # w1 finishes late: neither its end nor its release count.
            assert not await db1.finish("j1", 1, DONE, 10, [])
            assert await db1.release("j1", "w1") == []
            assert (await db2.capacity()).active == {"j1": Hold(1, "w2")}
            assert await db2.finish("j1", 2, DONE, 12, [])
            assert not await db2.finish("j1", 2, DONE, 12, [])  # ended already
            await db2.release("j1", "w2")
            job = await PostgresJobStore(db2.pool).get("j1")
            assert (job.status, job.duration) == (DONE, 12)
            # A delete wins over any attempt; only the current one writes its duration.
            assert await db1.finish("j1", 1, DELETED, 99, [])
            job = await PostgresJobStore(db2.pool).get("j1")
            assert (job.status, job.duration) == (DELETED, 12)

    run(scenario())


def test_a_taken_over_job_waits_in_the_queue_when_no_one_has_room(database_url):
    async def scenario() -> None:
        async with workers(database_url, 2, lease_seconds=1.0) as (db1, db2):
            await db1.register("w1", "http://w1", 1)
            await db2.register("w2", "http://w2", 1)
            await db1.admit("j1", 1, "w1", 0)
            await store_job(db1, "j1")
            await db2.admit("j2", 1, "w2", 0)
            await store_job(db2, "j2")
            await asyncio.sleep(1.3)
            await db2.heartbeat("w2")
            assert await db2.takeover() == [Takeover("j1", None, 2)]
            assert await db2.position("j1") == 1 and await db2.owner("j1") == Owner(None, 2)
            assert await db2.release("j2", "w2") == [("j1", "w2")]
            assert await db2.owner("j1") == Owner("w2", 2)

    run(scenario())


def test_a_worker_restarting_under_its_id_takes_its_jobs_back_as_new_attempts(database_url):
    async def scenario() -> None:
        async with workers(database_url) as (db,):
            await db.register("w1", "http://w1", 1)
            await db.admit("j1", 1, "w1", 0)
            await store_job(db, "j1")
            assert await db.register("w1", "http://w1", 1) == [Takeover("j1", "w1", 2)]
            assert await db.deregister("w1") == [Takeover("j1", None, 3)]
            assert await db.live_workers() == []

    run(scenario())


# ---- notices ------------------------------------------------------------------------------------

class Listener:
    """`ClusterDB.listen` in a task, with its notices and (re)connections awaitable."""

    def __init__(self, db: ClusterDB) -> None:
        self.notices: asyncio.Queue[Notice] = asyncio.Queue()
        self.listening: asyncio.Queue[None] = asyncio.Queue()
        self.task = asyncio.create_task(db.listen(self.notices.put_nowait, lambda: self.listening.put_nowait(None),
                                                  probe_seconds=0.5))

    async def next(self, seconds: float = 1.0) -> Notice:
        return await asyncio.wait_for(self.notices.get(), seconds)

    async def ready(self, seconds: float = 10.0) -> None:
        await asyncio.wait_for(self.listening.get(), seconds)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_notices_reach_another_worker_within_a_second(database_url):
    async def scenario() -> None:
        async with workers(database_url, 2) as (db1, db2):
            listener = Listener(db1)
            try:
                await listener.ready()
                await db2.notify_cancel("jc")
                assert await listener.next() == Notice(CANCEL, "jc", None)
                await db2.notify_ended("je")
                assert await listener.next() == Notice(ENDED, "je", None)
                await db2.register("w2", "http://w2", 1)
                await db2.admit("ja", 1, "w1", 0)
                await store_job(db2, "ja")
                assert await listener.next() == Notice(ASSIGN, "ja", "w2")
            finally:
                await listener.stop()

    run(scenario())


def test_listening_survives_a_dropped_connection(database_url):
    async def scenario() -> None:
        async with workers(database_url, 2) as (db1, db2):
            listener = Listener(db1)
            try:
                await listener.ready()
                async with db2.pool.connection() as conn:
                    ended = await (await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'chorus-listen' AND datname = current_database()")).fetchall()
                assert ended == [(True,)]
                await listener.ready()  # listening again
                await db2.notify_ended("je")
                assert await listener.next() == Notice(ENDED, "je", None)
            finally:
                await listener.stop()

    run(scenario())
