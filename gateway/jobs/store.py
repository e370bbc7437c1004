"""The durable job table: SQLite in the --all-formats folder.

Every write runs on one dedicated thread (sqlite3 connections belong to a thread, and the
event loop must not wait on disk). A job is written before POST returns, and again when
its status, duration or errors change. At start-up the table is read back; jobs that were
running when the worker died are marked rejected ("worker restarted").
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import msgspec

from gateway.jobs.table import JobErrorItem, StoredJob

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


class JobStore:
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
        rows = self._db.execute(
            "SELECT id, created_at, data_name, config, engines, user_id, status, duration, errors "
            "FROM jobs ORDER BY seq").fetchall()
        jobs = [StoredJob(id=r[0], created_at=datetime.fromisoformat(r[1]), data_name=r[2], config=r[3],
                          engines=r[4], user_id=r[5], status=r[6], duration=r[7],
                          errors=msgspec.json.decode(r[8], type=list[JobErrorItem])) for r in rows]
        evicted = [r[0] for r in self._db.execute("SELECT id FROM evicted")]
        return jobs, evicted

    def _insert(self, job: StoredJob) -> None:
        self._db.execute(
            "INSERT INTO jobs (id, created_at, data_name, config, engines, user_id, status, duration, errors) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.created_at.isoformat(), job.data_name, job.config, job.engines, job.user_id,
             job.status, job.duration, msgspec.json.encode(job.errors).decode()))

    def _update(self, job_id: str, status: str, duration: int, errors: list[JobErrorItem]) -> None:
        self._db.execute("UPDATE jobs SET status = ?, duration = ?, errors = ? WHERE id = ?",
                         (status, duration, msgspec.json.encode(errors).decode(), job_id))

    def _evict(self, ids: list[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
            self._db.executemany("INSERT OR IGNORE INTO evicted (id) VALUES (?)", [(i,) for i in ids])

    # ---- from the event loop ----------------------------------------------------------

    async def open(self) -> tuple[list[StoredJob], list[str]]:
        await self._run(self._open)
        return await self._run(self._load)

    async def insert(self, job) -> None:
        await self._run(self._insert, job.stored())

    async def update(self, job) -> None:
        await self._run(self._update, job.id, job.status, job.duration, list(job.errors))

    async def evict(self, ids: list[str]) -> None:
        if ids:
            await self._run(self._evict, ids)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        self._thread.shutdown(wait=True)
