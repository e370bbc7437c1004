"""The JobStore contract (gateway/jobs/store.py): what any implementation must do. Embedded mode's
is SQLite; cluster mode's is PostgreSQL (gateway/cluster/postgres.py), on a fresh database per test."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from gateway.cluster.postgres import PostgresJobStore, make_pool
from gateway.jobs.store import JobStore, SqliteJobStore
from gateway.jobs.table import DELETED, DONE, REJECTED, RUNNING, JobErrorItem, StoredJob

T0 = datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


def stored(n: int, status: str = RUNNING) -> StoredJob:
    return StoredJob(id=f"job{n:02d}", created_at=T0 + timedelta(seconds=n), data_name=f"a{n}.wav",
                     config='{"type": "transcription"}', engines=1 + n % 2, user_id=None if n % 3 else "u",
                     status=status, duration=0, errors=[])


def sqlite_stores(request):
    folder = request.getfixturevalue("tmp_path")
    return lambda: SqliteJobStore(folder)


def postgres_stores(request):
    url = request.getfixturevalue("database_url")  # only PostgreSQL's tests start the server
    return lambda: PostgresJobStore(make_pool(url), owns_pool=True)


STORES = {"sqlite": sqlite_stores, "postgres": postgres_stores}


@pytest.fixture(params=list(STORES))
def make_store(request):
    """Makes stores on one place (a folder, a database), as a worker restarting would."""
    return STORES[request.param](request)


def run(coroutine):
    return asyncio.run(coroutine)


def test_insert_update_get(make_store):
    async def scenario(store: JobStore) -> None:
        assert await store.open() == ([], [])
        job = stored(1)
        await store.insert(job)
        assert await store.get("job01") == job
        assert (await store.get("job01")).created_at.tzinfo == timezone.utc
        assert await store.get("nope") is None
        error = JobErrorItem(timestamp="2026-12-01T12:00:05.000Z", message="engine 0 hung")
        done = StoredJob(**{**{f: getattr(job, f) for f in job.__struct_fields__},
                            "status": REJECTED, "duration": 42, "errors": [error]})
        await store.update(done)
        assert await store.get("job01") == done
        await store.close()

    run(scenario(make_store()))


def test_listing_is_newest_first_filtered_and_hides_deleted(make_store):
    async def scenario(store: JobStore) -> None:
        await store.open()
        for n in range(6):
            await store.insert(stored(n, status=DELETED if n == 4 else DONE))
        ids = [j.id for j in await store.listing(10)]
        assert ids == ["job05", "job03", "job02", "job01", "job00"]
        assert [j.id for j in await store.listing(2)] == ["job05", "job03"]
        before = T0 + timedelta(seconds=3)
        assert [j.id for j in await store.listing(10, before=before)] == ["job02", "job01", "job00"]
        after = T0 + timedelta(seconds=1)
        assert [j.id for j in await store.listing(10, before=before, after=after)] == ["job02"]
        # Another time zone names the same instant.
        plus_one = before.astimezone(timezone(timedelta(hours=1)))
        assert [j.id for j in await store.listing(10, before=plus_one)] == ["job02", "job01", "job00"]
        await store.close()

    run(scenario(make_store()))


def test_evicted_jobs_are_forgotten_but_remembered_as_expired_across_a_restart(make_store):
    async def first(store: JobStore) -> None:
        await store.open()
        for n in range(3):
            await store.insert(stored(n, status=DONE))
        await store.evict(["job00", "job01"])
        await store.evict([])
        assert await store.get("job00") is None
        assert await store.is_evicted("job00") and not await store.is_evicted("job02")
        await store.close()

    async def second(store: JobStore) -> None:
        jobs, evicted = await store.open()
        assert [j.id for j in jobs] == ["job02"] and sorted(evicted) == ["job00", "job01"]
        assert await store.get("job02") == stored(2, status=DONE)
        await store.close()

    run(first(make_store()))
    run(second(make_store()))
