"""What a long engine step calls between its chunks: report how far it got, and stop when the
gateway cancelled the request.

The gateway's watchdog reads the progress messages as the engine's heartbeat, so every step
that can take long calls `Control.tick` at least every few seconds of work. The check runs on
the working thread itself: an engine whose computation hangs (a stuck kernel, SIGSTOP) then
falls silent, and a helper thread could not hide that.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection

from shared import messages as m

# At most this often a Progress message: enough for a heartbeat and a progress bar, few
# enough to cost nothing (a long job sends a couple a second).
PROGRESS_INTERVAL_S = 0.5


class Cancelled(Exception):
    """The gateway cancelled the request (or asked the engine to stop) while it worked."""


class Control:
    def __init__(self, conn: Connection, job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id
        self.stopping = False  # a Stop arrived: the engine exits after this request
        self._last_sent = 0.0
        self._where = ("working", 0.0, 0.0)  # the last (step, done, total) reported; steps tick first

    def tick(self, step: str, done: float, total: float) -> None:
        """Between chunks: raise Cancelled if the request was cancelled, else say how far it got."""
        self._where = (step, float(done), float(total))  # numpy scalars do not encode
        self.heartbeat()

    def heartbeat(self) -> None:
        """Inside a step that knows no position of its own (VAD within transcription): check for a
        cancel, and say again where the request is."""
        self.check()
        now = time.monotonic()
        if now - self._last_sent >= PROGRESS_INTERVAL_S:
            self._last_sent = now
            step, done, total = self._where
            self.conn.send_bytes(m.encode(m.Progress(job_id=self.job_id, step=step, done=done, total=total)))

    def check(self) -> None:
        """Read what the gateway sent meanwhile; only Cancel (for this job) and Stop can come."""
        while self.conn.poll():
            message = m.decode_request(self.conn.recv_bytes())
            if isinstance(message, m.Stop):
                self.stopping = True
                raise Cancelled()
            if isinstance(message, m.Cancel) and message.job_id == self.job_id:
                raise Cancelled()


class NoControl(Control):
    """Outside a request (benchmarks, tools running a step in-process): never cancelled, reports nothing."""

    def __init__(self) -> None:  # noqa: D107 - no pipe
        self.stopping = False

    def heartbeat(self) -> None:
        pass


_current: Control = NoControl()


def current() -> Control:
    """The control of the request this engine is working on (one at a time), for code that library
    calls run deep inside (Silero VAD under faster-whisper's transcribe)."""
    return _current


class serving:
    """`with serving(control):` makes `control` the current one for the length of a request."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def __enter__(self) -> Control:
        global _current
        _current = self.control
        return self.control

    def __exit__(self, *exc) -> None:
        global _current
        _current = NoControl()
