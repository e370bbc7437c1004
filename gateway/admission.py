"""Exact engine accounting: a job takes k engine slots from the free set, or none at all."""

from __future__ import annotations


class Busy(Exception):
    def __init__(self, requested: int, in_use: int, total: int) -> None:
        super().__init__(
            f"Server busy: {requested} engines not available "
            f"({in_use} engines in use, {total} parallel allowed)"
        )


class Admission:
    def __init__(self, total: int) -> None:
        self.total = total
        self._free = list(range(total))
        self._held: dict[str, list[int]] = {}  # job id -> engine slots, in admission order

    def acquire(self, job_id: str, count: int) -> list[int]:
        """Take `count` slots at once (no await in here: atomic on the event loop)."""
        if count > len(self._free):
            raise Busy(count, self.in_use, self.total)
        slots, self._free = self._free[:count], self._free[count:]
        self._held[job_id] = slots
        return slots

    def release(self, job_id: str) -> None:
        self._free.extend(self._held.pop(job_id, ()))
        self._free.sort()

    @property
    def in_use(self) -> int:
        return self.total - len(self._free)

    @property
    def unused(self) -> int:
        return len(self._free)

    def slots_of(self, job_id: str) -> list[int]:
        return list(self._held.get(job_id, ()))

    def active(self) -> dict[str, int]:
        """Job id -> number of engines it holds."""
        return {job_id: len(slots) for job_id, slots in self._held.items()}
