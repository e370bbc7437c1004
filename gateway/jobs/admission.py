"""Exact engine accounting: a job takes k engine slots from the free set, or none at all.

With a queue (`--queue-size Q`), a job that does not fit now may wait, up to Q of them, and
they start in arrival order: the head of the queue is never overtaken.

`Admission` is the seam cluster mode needs (accounting across workers there);
`InProcessAdmission` is today's implementation, exact because it runs on the one event loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Protocol

from gateway.errors import Busy


class Admission(Protocol):
    total: int  # engines in all
    queue_size: int  # jobs that may wait; 0: none

    def acquire(self, job_id: str, count: int) -> list[int] | None:
        """The job's `count` engine slots now, or None when it was queued; Busy if neither."""

    async def wait_turn(self, job_id: str) -> list[int]:
        """A queued job's slots, once they are its."""

    def position(self, job_id: str) -> int:
        """A queued job's place in the queue, from 1; 0 once its turn has come."""

    def release(self, job_id: str) -> None:
        """The job's slots go back (or it leaves the queue); queued jobs that now fit start."""

    @property
    def in_use(self) -> int: ...

    @property
    def unused(self) -> int: ...

    def active(self) -> dict[str, int]:
        """Job id -> engines it holds, in admission order."""

    def queued(self) -> dict[str, int]:
        """Waiting job id -> engines it asked for, in arrival order."""


class InProcessAdmission:
    def __init__(self, total: int, queue_size: int = 0) -> None:
        self.total = total
        self.queue_size = queue_size
        self._free = list(range(total))
        self._held: dict[str, list[int]] = {}  # job id -> engine slots, in admission order
        self._waiting: OrderedDict[str, tuple[int, asyncio.Future[list[int]]]] = OrderedDict()
        # Every queued job's turn, from queueing until it has taken it (or left): its turn may
        # come before it starts waiting (while its upload still arrives).
        self._turns: dict[str, asyncio.Future[list[int]]] = {}

    def acquire(self, job_id: str, count: int) -> list[int] | None:
        """Take `count` slots at once (no await in here: atomic on the event loop).

        Returns the slots, or None when the job was queued (await `wait_turn`); raises
        Busy when it can neither start nor wait.
        """
        if count <= len(self._free) and not self._waiting:
            return self._take(job_id, count)
        if count <= self.total and len(self._waiting) < self.queue_size:
            turn = asyncio.get_running_loop().create_future()
            self._waiting[job_id] = (count, turn)
            self._turns[job_id] = turn
            return None
        raise Busy(count, self.in_use, self.total)

    def _take(self, job_id: str, count: int) -> list[int]:
        slots, self._free = self._free[:count], self._free[count:]
        self._held[job_id] = slots
        return slots

    async def wait_turn(self, job_id: str) -> list[int]:
        try:
            return await self._turns[job_id]
        finally:
            self._turns.pop(job_id, None)

    def position(self, job_id: str) -> int:
        """From 1; 0 once its turn has come."""
        return list(self._waiting).index(job_id) + 1 if job_id in self._waiting else 0

    def release(self, job_id: str) -> None:
        self._free.extend(self._held.pop(job_id, ()))
        self._free.sort()
        self._waiting.pop(job_id, None)
        turn = self._turns.pop(job_id, None)
        if turn is not None and not turn.done():
            turn.cancel()
        while self._waiting:  # start queued jobs, in order, while the head fits
            head, (count, future) = next(iter(self._waiting.items()))
            if count > len(self._free):
                break
            del self._waiting[head]
            future.set_result(self._take(head, count))

    @property
    def in_use(self) -> int:
        return self.total - len(self._free)

    @property
    def unused(self) -> int:
        return len(self._free)

    def active(self) -> dict[str, int]:
        """Job id -> number of engines it holds."""
        return {job_id: len(slots) for job_id, slots in self._held.items()}

    def queued(self) -> dict[str, int]:
        """Waiting job id -> engines it asked for, in arrival order."""
        return {job_id: count for job_id, (count, _) in self._waiting.items()}
