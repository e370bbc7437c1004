"""The durable job table.

`JobStore` is the seam cluster mode needs (PostgreSQL there); `SqliteJobStore` is today's
implementation, SQLite in the --all-formats folder. A job is written before POST returns, and
again when its status, duration or errors change. At start-up the table is read back; jobs
that were running when the worker died are marked rejected ("worker restarted").

Every SQLite call runs on one dedicated thread (a connection belongs to its thread, and the
event loop must not wait on disk).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import msgspec

from gateway.jobs.table import DELETED, JobErrorItem, StoredJob

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL,
    data_name TEXT NOT NULL,
    config TEXT NOT NULL,          -- the submitted config text
    engines INTEGER NOT NULL,
    user_id TEXT,
    status TEXT NOT NULL,
    duration INTEGER NOT NULL,
    errors TEXT NOT NULL           -- JSON list of {timestamp, message}
);
CREATE TABLE IF NOT EXISTS evicted (id TEXT PRIMARY KEY);
"""


class JobStore(Protocol):
    async def open(self) -> tuple[list[StoredJob], list[str]]:
        """Every job kept, oldest first, and the ids of those forgotten (which answer 410)."""

    async def insert(self, job: StoredJob) -> None: ...

    async def update(self, job: StoredJob) -> None:
        """Its status, duration and errors (the rest never changes)."""

    async def get(self, job_id: str) -> StoredJob | None: ...

    async def listing(self, limit: int, before: datetime | None = None,
                      after: datetime | None = None) -> list[StoredJob]:
        """Newest first, at most `limit`, created strictly between `after` and `before`; deleted
        jobs are not listed (as the SaaS without include_deleted)."""

    async def evict(self, ids: list[str]) -> None:
        """Forget these jobs; their ids are remembered as expired."""

    async def is_evicted(self, job_id: str) -> bool: ...

    async def close(self) -> None: ...


_COLUMNS = "id, created_at, data_name, config, engines, user_id, status, duration, errors"


def _stored(row: tuple) -> StoredJob:
    return StoredJob(id=row[0], created_at=datetime.fromisoformat(row[1]), data_name=row[2], config=row[3],
                     engines=row[4], user_id=row[5], status=row[6], duration=row[7],
                     errors=msgspec.json.decode(row[8], type=list[JobErrorItem]))


def _utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat()


class SqliteJobStore:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "jobs.sqlite3"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # ---- on the store's thread --------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def _load(self) -> tuple[list[StoredJob], list[str]]:
        jobs = [_stored(r) for r in self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY seq")]
        evicted = [r[0] for r in self._db.execute("SELECT id FROM evicted")]
        return jobs, evicted

    def _insert(self, job: StoredJob) -> None:
        self._db.execute(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, _utc(job.created_at), job.data_name, job.config, job.engines, job.user_id,
             job.status, job.duration, msgspec.json.encode(job.errors).decode()))

    def _update(self, job: StoredJob) -> None:
        self._db.execute("UPDATE jobs SET status = ?, duration = ?, errors = ? WHERE id = ?",
                         (job.status, job.duration, msgspec.json.encode(job.errors).decode(), job.id))

    def _get(self, job_id: str) -> StoredJob | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _stored(row) if row else None

    def _listing(self, limit: int, before: datetime | None, after: datetime | None) -> list[StoredJob]:
        where, params = ["status != ?"], [DELETED]
        if before is not None:
            where.append("created_at < ?")
            params.append(_utc(before))
        if after is not None:
            where.append("created_at > ?")
            params.append(_utc(after))
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
                                "ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [_stored(r) for r in rows]

    def _is_evicted(self, job_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM evicted WHERE id = ?", (job_id,)).fetchone() is not None

    def _evict(self, ids: list[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
            self._db.executemany("INSERT OR IGNORE INTO evicted (id) VALUES (?)", [(i,) for i in ids])

    # ---- from the event loop ----------------------------------------------------------

    async def open(self) -> tuple[list[StoredJob], list[str]]:
        await self._run(self._open)
        return await self._run(self._load)

    async def insert(self, job: StoredJob) -> None:
        await self._run(self._insert, job)

    async def update(self, job: StoredJob) -> None:
        await self._run(self._update, job)

    async def get(self, job_id: str) -> StoredJob | None:
        return await self._run(self._get, job_id)

    async def listing(self, limit: int, before: datetime | None = None,
                      after: datetime | None = None) -> list[StoredJob]:
        return await self._run(self._listing, limit, before, after)

    async def is_evicted(self, job_id: str) -> bool:
        return await self._run(self._is_evicted, job_id)

    async def evict(self, ids: list[str]) -> None:
        if ids:
            await self._run(self._evict, ids)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        self._thread.shutdown(wait=True)
