"""PostgreSQL in cluster mode: where the workers' shared truth lives (docs/cluster-design.md).

Owns:
- the schema, versioned: `MIGRATIONS` in order, applied at start by `migrate()` in one transaction
  under an advisory lock, so workers starting together never race and a newer worker migrates an
  older database (migrations only add, so older workers keep running through a rolling upgrade);
- `PostgresJobStore`, the JobStore protocol (gateway/jobs/store.py) over the `jobs` and `evicted` tables;
- `ClusterDB`: membership (`workers`: heartbeats, draining), exact engine admission across workers and
  the fair queue (`holds`), takeover of dead workers' jobs (attempt + 1), fencing of a job's end by its
  attempt, and the notifications between workers (LISTEN/NOTIFY on chorus_assign, chorus_cancel,
  chorus_ended).

Not here: job log lines and every job file (the object store). Plain SQL throughout. Connections come
from a psycopg_pool.AsyncConnectionPool in autocommit mode: a statement commits by itself unless it
runs in `conn.transaction()`. Times are the database's clock (`clock_timestamp()`), never a worker's,
so workers' clocks need not agree for leases to be fair.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.errors import Busy
from gateway.jobs.table import DELETED, RUNNING, JobErrorItem, StoredJob

log = logging.getLogger("chorus.cluster.postgres")

# pg_advisory_xact_lock keys ("Chorus" + a number): one for admission-type changes, one for migrations.
ADMISSION_LOCK = 0x43686F7275730001
MIGRATION_LOCK = 0x43686F7275730002

ASSIGN, CANCEL, ENDED = "chorus_assign", "chorus_cancel", "chorus_ended"
CHANNELS = (ASSIGN, CANCEL, ENDED)

# ---- schema ------------------------------------------------------------------------------------

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

V1 = """
CREATE TABLE workers (
    id text PRIMARY KEY,
    url text NOT NULL,
    engines integer NOT NULL CHECK (engines >= 0),
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    draining boolean NOT NULL DEFAULT false
);
CREATE TABLE jobs (
    seq bigserial PRIMARY KEY,
    id text UNIQUE NOT NULL,
    created_at timestamptz(3) NOT NULL,
    data_name text NOT NULL,
    config text NOT NULL,             -- the submitted config text
    engines integer NOT NULL,
    user_id text,
    status text NOT NULL,
    duration integer NOT NULL,
    errors text NOT NULL,             -- JSON list of {timestamp, message}
    worker_id text,                   -- who runs it now (NULL: queued, or not started)
    attempt integer NOT NULL DEFAULT 1
);
CREATE INDEX jobs_created_at ON jobs (created_at);
CREATE TABLE evicted (id text PRIMARY KEY);
CREATE TABLE holds (
    seq bigserial PRIMARY KEY,        -- arrival order: the queue's order
    job_id text UNIQUE NOT NULL,
    engines integer NOT NULL CHECK (engines > 0),
    worker_id text,                   -- NULL: queued
    accepted_by text NOT NULL,        -- the worker that receives the upload
    stored boolean NOT NULL DEFAULT false
);
CREATE INDEX holds_worker ON holds (worker_id);
"""

# v2: a running job's progress (the JSON of its progress route), written by the worker running it
# about once a second, so every worker answers GET /v2/jobs/{id}/progress alike.
V2 = """
ALTER TABLE jobs ADD COLUMN progress text;
"""

MIGRATIONS: tuple[str, ...] = (V1, V2)  # version n is MIGRATIONS[n - 1]; append only


async def migrate(pool: AsyncConnectionPool, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply the migrations this database lacks, all in one transaction, and return its version.

    The advisory lock serialises workers that start together: the second waits, then finds nothing
    to do. A database newer than this worker's list is left as it is (its migrations only added).
    """
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(SCHEMA_VERSION_TABLE)
        current = await _schema_version(conn)
        for version in range(current + 1, len(migrations) + 1):
            await conn.execute(migrations[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        return max(current, len(migrations))


async def _schema_version(conn: psycopg.AsyncConnection) -> int:
    row = await (await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")).fetchone()
    return row[0]


def make_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> AsyncConnectionPool:
    """A pool for `url`, not open yet: open it on the event loop that uses it (`PostgresJobStore.open`
    does, or `await pool.open(wait=True)`). Autocommit: transactions are explicit."""
    return AsyncConnectionPool(url, min_size=min_size, max_size=max_size, open=False,
                               kwargs={"autocommit": True}, name="chorus")


async def connect(url: str, *, min_size: int = 1, max_size: int = 8) -> AsyncConnectionPool:
    """An open pool on a migrated database: what a worker starts with."""
    pool = make_pool(url, min_size=min_size, max_size=max_size)
    await pool.open(wait=True)
    await migrate(pool)
    return pool


# ---- the job table -----------------------------------------------------------------------------

_JOB_COLUMNS = "id, created_at, data_name, config, engines, user_id, status, duration, errors"


def _stored(row: tuple) -> StoredJob:
    return StoredJob(id=row[0], created_at=row[1].astimezone(timezone.utc), data_name=row[2], config=row[3],
                     engines=row[4], user_id=row[5], status=row[6], duration=row[7],
                     errors=msgspec.json.decode(row[8], type=list[JobErrorItem]))


def _errors(errors: list[JobErrorItem]) -> str:
    return msgspec.json.encode(errors).decode()


class PostgresJobStore:
    """The JobStore protocol on PostgreSQL: the `jobs` rows every worker shares.

    open() only reads: in cluster mode a running job may be another worker's, so unlike SQLite's
    start-up nothing is rejected here (takeover decides what a dead worker's jobs become). The pool is
    shared with ClusterDB; close() closes it only when the store owns it.
    """

    def __init__(self, pool: AsyncConnectionPool, *, owns_pool: bool = False) -> None:
        self.pool = pool
        self.owns_pool = owns_pool

    async def open(self) -> tuple[list[StoredJob], list[str]]:
        await self.pool.open(wait=True)
        await migrate(self.pool)
        async with self.pool.connection() as conn, conn.transaction():
            # One snapshot for both reads: a job evicted meanwhile is in exactly one of the lists.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            jobs = await (await conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY seq")).fetchall()
            evicted = await (await conn.execute("SELECT id FROM evicted")).fetchall()
        return [_stored(r) for r in jobs], [r[0] for r in evicted]

    async def insert(self, job: StoredJob) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (job.id, job.created_at, job.data_name, job.config, job.engines, job.user_id, job.status,
                 job.duration, _errors(job.errors)))

    async def update(self, job: StoredJob) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE jobs SET status = %s, duration = %s, errors = %s WHERE id = %s",
                               (job.status, job.duration, _errors(job.errors), job.id))

    async def get(self, job_id: str) -> StoredJob | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
            row = await cursor.fetchone()
        return _stored(row) if row else None

    async def listing(self, limit: int, before: datetime | None = None,
                      after: datetime | None = None) -> list[StoredJob]:
        where, params = ["status != %s"], [DELETED]
        if before is not None:
            where.append("created_at < %s")
            params.append(before.astimezone(timezone.utc))
        if after is not None:
            where.append("created_at > %s")
            params.append(after.astimezone(timezone.utc))
        async with self.pool.connection() as conn:
            cursor = await conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
                                        "ORDER BY seq DESC LIMIT %s", (*params, limit))
            return [_stored(r) for r in await cursor.fetchall()]

    async def evict(self, ids: list[str]) -> None:
        if not ids:
            return
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM jobs WHERE id = ANY(%s)", (ids,))
            await conn.execute("INSERT INTO evicted (id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (ids,))

    async def is_evicted(self, job_id: str) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute("SELECT 1 FROM evicted WHERE id = %s", (job_id,))
            return await cursor.fetchone() is not None

    async def close(self) -> None:
        if self.owns_pool:
            await self.pool.close()


# ---- what ClusterDB answers --------------------------------------------------------------------

class Placement(NamedTuple):
    worker_id: str | None  # the worker that runs the job; None: queued
    position: int  # its place in the queue, from 1; 0 once placed


class Takeover(NamedTuple):
    job_id: str
    worker_id: str | None  # its new worker; None: back in the queue
    attempt: int  # the new attempt: the only one whose end counts now


class Owner(NamedTuple):
    worker_id: str | None  # None: queued (or not started)
    attempt: int


class Notice(NamedTuple):
    channel: str  # ASSIGN, CANCEL or ENDED
    job_id: str
    worker_id: str | None  # ASSIGN: the worker that is to run it


class WorkerLoad(NamedTuple):
    id: str
    url: str
    engines: int
    in_use: int
    draining: bool


class Hold(NamedTuple):
    engines: int
    worker_id: str


class Capacity(NamedTuple):
    workers: list[WorkerLoad]  # the live ones, by id
    engines_total: int  # summed over live workers
    engines_in_use: int
    max_engines: int  # the most one job may ask for: the largest live, non-draining worker
    unused_engines: int  # the most the next job can get now: the most free on one such worker
    active: dict[str, Hold]  # job id -> its engines and worker, in arrival order
    queued: dict[str, int]  # waiting job id -> engines it asked for, in queue order


@dataclass
class _Room:
    """A live worker as admission sees it inside the lock."""

    id: str
    engines: int
    in_use: int
    draining: bool

    @property
    def free(self) -> int:
        return self.engines - self.in_use


def _choose(rooms: list[_Room], engines: int, accepted_by: str) -> _Room | None:
    """Where a job of `engines` goes: the accepting worker if it has room (the upload is already
    there), else the live, non-draining worker with the most free engines that fits (lowest id on a
    tie, so the choice is deterministic); None if none fits."""
    fits = [r for r in rooms if not r.draining and r.free >= engines]
    mine = [r for r in fits if r.id == accepted_by]
    return mine[0] if mine else max(fits, key=lambda r: r.free, default=None)


def _admission(rooms: list[_Room], queued: int, engines: int, accepted_by: str, queue_size: int) -> Placement:
    """InProcessAdmission's rule, cluster-wide: start if nothing waits and one worker has room; else
    wait if the job could ever fit on one worker and fewer than `queue_size` wait; else Busy, with the
    engines in use and in all summed over the live workers."""
    if not queued:
        chosen = _choose(rooms, engines, accepted_by)
        if chosen is not None:
            return Placement(chosen.id, 0)
    largest = max((r.engines for r in rooms if not r.draining), default=0)
    if engines <= largest and queued < queue_size:
        return Placement(None, queued + 1)
    raise Busy(engines, sum(r.in_use for r in rooms), sum(r.engines for r in rooms))


# ---- SQL ClusterDB shares ----------------------------------------------------------------------

_LIVE = "heartbeat_at > clock_timestamp() - make_interval(secs => %(lease)s)"

_LOADS = f"""
SELECT w.id, w.url, w.engines, coalesce(sum(h.engines), 0)::integer, w.draining
FROM workers w LEFT JOIN holds h ON h.worker_id = w.id
WHERE w.{_LIVE}
GROUP BY w.id ORDER BY w.id
"""

_GONE = f"""
SELECT DISTINCT g.id FROM (SELECT worker_id AS id FROM holds WHERE worker_id IS NOT NULL
                           UNION SELECT accepted_by FROM holds WHERE NOT stored) g
WHERE g.id NOT IN (SELECT id FROM workers WHERE {_LIVE})
"""


async def _rows(conn: psycopg.AsyncConnection, sql: str, params: object = None) -> list[tuple]:
    return await (await conn.execute(sql, params)).fetchall()


class ClusterDB:
    """The cluster's primitives over one pool. Every change to holds or to membership (register,
    draining, deregister, takeover) runs in one transaction under the admission lock, so engine
    accounting is exact across workers; heartbeats, fenced ends and reads that only report take none.

    `lease_seconds`: a worker silent for longer is dead (--lease-seconds; the same on every worker).
    """

    def __init__(self, pool: AsyncConnectionPool, lease_seconds: float = 30.0) -> None:
        self.pool = pool
        self.lease_seconds = lease_seconds

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction holding the admission lock, released at commit or rollback."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK,))
            yield conn

    # ---- membership ----------------------------------------------------------------------------

    async def register(self, worker_id: str, url: str, engines: int) -> list[Takeover]:
        """Join (or rejoin) the cluster, live and not draining. A worker that restarts under the same
        id holds nothing any more: what its previous life held is handled as a takeover (returned),
        and queued jobs that fit on its engines start."""
        async with self._locked() as conn:
            await conn.execute(
                "INSERT INTO workers (id, url, engines) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                "SET url = excluded.url, engines = excluded.engines, started_at = clock_timestamp(), "
                "heartbeat_at = clock_timestamp(), draining = false", (worker_id, url, engines))
            return await self._evacuate(conn, [worker_id])

    async def heartbeat(self, worker_id: str) -> bool:
        """Still alive. False when the worker is not registered (deregistered): it must register."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute("UPDATE workers SET heartbeat_at = clock_timestamp() WHERE id = %s",
                                        (worker_id,))
            return cursor.rowcount == 1

    async def set_draining(self, worker_id: str, draining: bool = True) -> None:
        """No new job is placed on a draining worker; it finishes what it holds."""
        async with self._locked() as conn:
            await conn.execute("UPDATE workers SET draining = %s WHERE id = %s", (draining, worker_id))
            if not draining:
                await self._start_queue_heads(conn)

    async def deregister(self, worker_id: str) -> list[Takeover]:
        """Leave the cluster. Normally after draining, holding nothing; anything still held is taken
        over at once rather than after the lease."""
        async with self._locked() as conn:
            await conn.execute("DELETE FROM workers WHERE id = %s", (worker_id,))
            return await self._evacuate(conn, [worker_id])

    async def live_workers(self) -> list[WorkerLoad]:
        """Workers heard from within the lease, by id, with their engines in use."""
        async with self.pool.connection() as conn:
            return await self._loads(conn)

    async def _loads(self, conn: psycopg.AsyncConnection) -> list[WorkerLoad]:
        return [WorkerLoad(*r) for r in await _rows(conn, _LOADS, {"lease": self.lease_seconds})]

    # ---- admission and the queue ---------------------------------------------------------------

    async def _rooms(self, conn: psycopg.AsyncConnection) -> list[_Room]:
        return [_Room(w.id, w.engines, w.in_use, w.draining) for w in await self._loads(conn)]

    async def _queue(self, conn: psycopg.AsyncConnection) -> list[tuple[str, int, str, bool]]:
        return await _rows(conn, "SELECT job_id, engines, accepted_by, stored FROM holds "
                                 "WHERE worker_id IS NULL ORDER BY seq")

    async def admit(self, job_id: str, engines: int, accepted_by: str, queue_size: int) -> Placement:
        """Take `engines` on one worker for the job, or a place in the queue; Busy if neither (see
        `_admission`). The hold exists from here on: the upload arrives afterwards (`mark_stored`)."""
        async with self._locked() as conn:
            rooms = await self._rooms(conn)
            queued = (await _rows(conn, "SELECT count(*) FROM holds WHERE worker_id IS NULL"))[0][0]
            placement = _admission(rooms, queued, engines, accepted_by, queue_size)
            await conn.execute("INSERT INTO holds (job_id, engines, worker_id, accepted_by) VALUES (%s, %s, %s, %s)",
                               (job_id, engines, placement.worker_id, accepted_by))
            return placement

    async def mark_stored(self, job_id: str) -> Placement | None:
        """The upload is in the object store and the job row exists: from now on the job can run on
        any worker and survives its accepting worker. If it is placed, its worker is told
        (chorus_assign). None: its hold is gone (the accepting worker was taken for dead meanwhile)."""
        async with self._locked() as conn:
            cursor = await conn.execute("UPDATE holds SET stored = true WHERE job_id = %s RETURNING worker_id, seq",
                                        (job_id,))
            row = await cursor.fetchone()
            if row is None:
                return None
            worker_id, seq = row
            if worker_id is None:
                return Placement(None, await self._position(conn, seq))
            await self._assign(conn, job_id, worker_id)
            return Placement(worker_id, 0)

    async def _assign(self, conn: psycopg.AsyncConnection, job_id: str, worker_id: str) -> None:
        """A stored job now runs on `worker_id`: its row names it, and it is told at commit."""
        await conn.execute("UPDATE jobs SET worker_id = %s WHERE id = %s", (worker_id, job_id))
        await conn.execute("SELECT pg_notify(%s, %s)", (ASSIGN, f"{job_id} {worker_id}"))

    async def release(self, job_id: str, worker_id: str | None = None) -> list[tuple[str, str]]:
        """The job ended (or left the queue): its engines go back, and queued jobs that now fit start,
        in order, the head never overtaken. Returns those placed, as (job id, worker id); stored ones
        are told (chorus_assign), an unstored one's accepting worker learns it from `mark_stored`.

        `worker_id`: release only if the hold is on that worker, so a worker taken for dead that
        finishes late cannot free the engines of the job's newer attempt."""
        async with self._locked() as conn:
            if worker_id is None:
                await conn.execute("DELETE FROM holds WHERE job_id = %s", (job_id,))
            else:
                await conn.execute("DELETE FROM holds WHERE job_id = %s AND worker_id = %s", (job_id, worker_id))
            return await self._start_queue_heads(conn)

    async def _start_queue_heads(self, conn: psycopg.AsyncConnection) -> list[tuple[str, str]]:
        """Place queued jobs in arrival order while the head fits somewhere."""
        rooms, placed = await self._rooms(conn), []
        for job_id, engines, accepted_by, stored in await self._queue(conn):
            chosen = _choose(rooms, engines, accepted_by)
            if chosen is None:
                break
            chosen.in_use += engines
            await conn.execute("UPDATE holds SET worker_id = %s WHERE job_id = %s", (chosen.id, job_id))
            if stored:
                await self._assign(conn, job_id, chosen.id)
            placed.append((job_id, chosen.id))
        return placed

    async def _position(self, conn: psycopg.AsyncConnection, seq: int) -> int:
        rows = await _rows(conn, "SELECT count(*) FROM holds WHERE worker_id IS NULL AND seq <= %s", (seq,))
        return rows[0][0]

    async def assigned(self, worker_id: str) -> list[str]:
        """Stored, running jobs placed on `worker_id`, in arrival order: what it must be running
        (a catch-up for assign notices missed while its listening connection was down)."""
        async with self.pool.connection() as conn:
            rows = await _rows(conn, "SELECT h.job_id FROM holds h JOIN jobs j ON j.id = h.job_id "
                                     "WHERE h.worker_id = %s AND h.stored AND j.status = %s ORDER BY h.seq",
                               (worker_id, RUNNING))
            return [r[0] for r in rows]

    async def beyond_history(self, keep: int) -> list[str]:
        """Finished jobs beyond the newest `keep` finished ones (the history bound, cluster-wide)."""
        async with self.pool.connection() as conn:
            rows = await _rows(conn, "SELECT id FROM jobs WHERE status <> %s ORDER BY seq DESC OFFSET %s",
                               (RUNNING, keep))
            return [r[0] for r in rows]

    async def set_progress(self, job_id: str, attempt: int, progress: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE jobs SET progress = %s WHERE id = %s AND attempt = %s",
                               (progress, job_id, attempt))

    async def progress(self, job_id: str) -> str | None:
        async with self.pool.connection() as conn:
            rows = await _rows(conn, "SELECT progress FROM jobs WHERE id = %s", (job_id,))
            return rows[0][0] if rows else None

    async def position(self, job_id: str) -> int:
        """A queued job's place in the queue, from 1; 0 once placed (or when it holds nothing)."""
        async with self.pool.connection() as conn:
            rows = await _rows(conn, "SELECT seq FROM holds WHERE job_id = %s AND worker_id IS NULL", (job_id,))
            return await self._position(conn, rows[0][0]) if rows else 0

    async def capacity(self) -> Capacity:
        """The cluster's engines as GET /capacity-style answers need them, from one snapshot."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            workers = await self._loads(conn)
            holds = await _rows(conn, "SELECT job_id, engines, worker_id FROM holds ORDER BY seq")
        open_ = [w for w in workers if not w.draining]
        return Capacity(
            workers=workers,
            engines_total=sum(w.engines for w in workers),
            engines_in_use=sum(w.in_use for w in workers),
            max_engines=max((w.engines for w in open_), default=0),
            unused_engines=max((w.engines - w.in_use for w in open_), default=0),
            active={j: Hold(k, w) for j, k, w in holds if w is not None},
            queued={j: k for j, k, w in holds if w is None})

    # ---- takeover and fencing ------------------------------------------------------------------

    async def takeover(self) -> list[Takeover]:
        """Run by any worker every few seconds: the jobs of workers silent past the lease move on.
        Returns each stored, unfinished job moved, with its new worker (None: queued) and attempt."""
        async with self._locked() as conn:
            gone = [r[0] for r in await _rows(conn, _GONE, {"lease": self.lease_seconds})]
            return await self._evacuate(conn, gone) if gone else []

    async def _evacuate(self, conn: psycopg.AsyncConnection, gone: list[str]) -> list[Takeover]:
        """What workers `gone` held moves on: dead holds dropped, the rest requeued at their original
        place (stored, running jobs with attempt + 1), then the queue's heads start as on release."""
        await self._drop_dead_holds(conn, gone)
        bumped = await self._requeue(conn, gone)
        placed = dict(await self._start_queue_heads(conn))
        return [Takeover(job_id, placed.get(job_id), attempt) for job_id, attempt in bumped]

    async def _drop_dead_holds(self, conn: psycopg.AsyncConnection, gone: list[str]) -> None:
        """Uploads the gone workers were receiving never became jobs (the client got no answer);
        jobs of theirs that had ended, or were forgotten, need no engines."""
        await conn.execute("DELETE FROM holds WHERE NOT stored AND accepted_by = ANY(%s)", (gone,))
        await conn.execute(
            "DELETE FROM holds h WHERE h.worker_id = ANY(%s) AND h.stored AND NOT EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.id = h.job_id AND j.status = %s)", (gone, RUNNING))

    async def _requeue(self, conn: psycopg.AsyncConnection, gone: list[str]) -> list[tuple[str, int]]:
        """The gone workers' remaining holds wait again, keeping their place; a stored job's attempt
        goes up, which fences off whatever the old attempt still writes. Returns (job id, attempt)."""
        moved = await _rows(conn, "UPDATE holds SET worker_id = NULL WHERE worker_id = ANY(%s) RETURNING job_id, stored",
                            (gone,))
        return await _rows(conn, "UPDATE jobs SET attempt = attempt + 1, worker_id = NULL WHERE id = ANY(%s) "
                                 "RETURNING id, attempt", ([job_id for job_id, stored in moved if stored],))

    async def owner(self, job_id: str) -> Owner | None:
        """Who runs the job now and under which attempt; None if there is no such job row."""
        async with self.pool.connection() as conn:
            rows = await _rows(conn, "SELECT worker_id, attempt FROM jobs WHERE id = %s", (job_id,))
        return Owner(*rows[0]) if rows else None

    async def finish(self, job_id: str, attempt: int, status: str, duration: int,
                     errors: list[JobErrorItem]) -> bool:
        """Write a job's end, only if `attempt` still owns it and it is still running; False means a
        newer attempt does (or it ended already) and this late result is dropped.

        A delete is different: the job becomes deleted whatever runs it; its duration and errors are
        written only by its current attempt."""
        async with self.pool.connection() as conn:
            if status == DELETED:
                cursor = await conn.execute(
                    "UPDATE jobs SET status = %s, duration = CASE WHEN attempt = %s THEN %s ELSE duration END, "
                    "errors = CASE WHEN attempt = %s THEN %s ELSE errors END WHERE id = %s",
                    (DELETED, attempt, duration, attempt, _errors(errors), job_id))
            else:
                cursor = await conn.execute(
                    "UPDATE jobs SET status = %s, duration = %s, errors = %s "
                    "WHERE id = %s AND attempt = %s AND status = %s",
                    (status, duration, _errors(errors), job_id, attempt, RUNNING))
            return cursor.rowcount == 1

    # ---- notifications -------------------------------------------------------------------------

    async def _notify(self, channel: str, payload: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def notify_cancel(self, job_id: str) -> None:
        """A force DELETE: the worker running the job cancels it."""
        await self._notify(CANCEL, job_id)

    async def notify_ended(self, job_id: str) -> None:
        """The job's end is durable: `?wait=` long-polls on every worker return."""
        await self._notify(ENDED, job_id)

    async def listen(self, callback: Callable[[Notice], None], on_listening: Callable[[], None] | None = None,
                     probe_seconds: float = 5.0) -> None:
        """Deliver every notice on CHANNELS to `callback` (called on the event loop; it must not
        block) until cancelled. The connection is its own, outside the pool (LISTEN is per session);
        when it drops it is made again, after a pause that grows to 5 s. Notices sent while it was
        down are lost, so `on_listening` is called each time listening (re)starts: the place to
        re-read what may have been missed. An idle connection is probed every `probe_seconds`, so a
        dead one is found even when nothing is sent."""
        pause = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.pool.conninfo, autocommit=True, application_name="chorus-listen") as conn:
                    for channel in CHANNELS:
                        await conn.execute(f"LISTEN {channel}")
                    pause = 0.1
                    if on_listening is not None:
                        on_listening()
                    await self._deliver(conn, callback, probe_seconds)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("listening for cluster notices failed (%s); again in %.1f s", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _deliver(self, conn: psycopg.AsyncConnection, callback: Callable[[Notice], None],
                       probe_seconds: float) -> None:
        """Hand notices over until the connection fails (OperationalError); when none came for
        `probe_seconds`, ask the server something, which fails at once if the connection is dead."""
        while True:
            async for n in conn.notifies(timeout=probe_seconds):
                job_id, _, worker_id = n.payload.partition(" ")
                try:
                    callback(Notice(n.channel, job_id, worker_id or None))
                except Exception:
                    log.exception("cluster notice %s %r: the handler failed", n.channel, n.payload)
            await conn.execute("SELECT 1")
