"""Supervisor of the engine processes: spawn, talk, notice death at once, kill the hung, respawn.

Each engine has one duplex Pipe. A reader thread per engine blocks on the pipe so that the
event loop never does; replies and deaths are handed to the loop with call_soon_threadsafe.
A closed pipe (EOF) is how a death is noticed: the child's end closes when it exits,
whatever killed it.

The watchdog (gunicorn's murder_workers, in spirit): a busy engine reports progress between
the chunks of its work. One that says nothing for `hang_timeout` seconds, or keeps working for
that long after it was told to cancel, is killed with SIGKILL; its death then takes the usual
path (the caller sees EngineHung, the slot respawns).

An engine is idle again only when its process says so: a reply to its request, or its death.
A caller cancelled while waiting sends Cancel and keeps waiting for that word.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable

import msgspec

from engine.main import run as engine_entry
from gateway.jobs.settle import settled
from shared import messages as m

log = logging.getLogger("chorus.pool")

_SPAWN = multiprocessing.get_context("spawn")
MAX_BACKOFF_S = 60.0


ENGINE_STATES = ("starting", "idle", "busy", "dead")

# Consecutive deaths before Ready, or hangs within HANG_WINDOW, after which /live reports the
# engine as failing (and Kubernetes restarts the pod).
FAILING_AFTER = 3
HANG_WINDOW_S = 600.0


class EngineDied(Exception):
    def __init__(self, index: int, exitcode: int | None) -> None:
        self.index, self.exitcode = index, exitcode
        how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
        super().__init__(f"engine {index} died ({how})")


class EngineHung(EngineDied):
    """The watchdog killed the engine: busy and silent (or deaf to a cancel) for too long."""

    def __init__(self, index: int, why: str) -> None:
        Exception.__init__(self, f"engine {index} hung ({why}) and was killed")
        self.index, self.exitcode = index, -9


class Pending(msgspec.Struct):
    """The request an engine is working on, as the gateway tracks it."""

    job_id: str
    future: asyncio.Future
    on_progress: Callable[[m.Progress], None] | None
    cancel_sent: float | None = None  # monotonic time Cancel was sent


class EngineHandle:
    """One engine slot: the current process for it, its pipe and its state."""

    def __init__(self, settings: m.EngineSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.index = settings.index
        self.loop = loop
        self.state = "starting"  # one of ENGINE_STATES
        self.info: m.Ready | None = None
        self.loaded_once = False
        self.load_failures = 0  # consecutive deaths before Ready
        self.hangs: deque[float] = deque(maxlen=FAILING_AFTER)  # when the watchdog last killed it
        self.last_error: str | None = None
        self.ready = asyncio.Event()
        self.stopping = False
        self.on_restart: Callable[[EngineHandle], None] | None = None
        self.on_hang: Callable[[EngineHandle], None] | None = None
        self.last_heard = time.monotonic()  # when the process last sent anything
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn = None
        self._pending: Pending | None = None
        self._hung: str | None = None  # why the watchdog killed the current process
        self._exited = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def spawn(self) -> None:
        parent, child = _SPAWN.Pipe(duplex=True)
        process = _SPAWN.Process(
            target=engine_entry,
            args=(child, msgspec.msgpack.encode(self.settings)),
            name=f"chorus-engine-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()  # keep only the child's copy, so its death closes the pipe
        self._process, self._conn = process, parent
        self.state, self.info, self._hung = "starting", None, None
        self._exited.clear()
        threading.Thread(
            target=self._read_loop, args=(parent, process), name=f"engine-{self.index}-reader", daemon=True
        ).start()
        log.info("engine %d: started pid %d", self.index, process.pid)

    def _read_loop(self, conn, process) -> None:
        try:
            while True:
                reply = m.decode_reply(conn.recv_bytes())
                self.loop.call_soon_threadsafe(self._on_reply, process, reply)
        except (EOFError, OSError):
            pass
        process.join()
        conn.close()
        self.loop.call_soon_threadsafe(self._on_exit, process)

    def _on_reply(self, process, reply: m.Reply) -> None:
        if process is not self._process:
            return
        self.last_heard = time.monotonic()
        pending = self._pending
        match reply:
            case m.Ready():
                self.info, self.state, self.load_failures = reply, "idle", 0
                self.loaded_once = True
                self.ready.set()
                log.info("engine %d: ready in %.1f s (pid %d, %s, %d thread(s), cores %s)",
                         self.index, reply.load_seconds, reply.pid, reply.device, reply.threads, reply.cores)
            case m.LoadFailed():
                self.last_error = f"engine {self.index} failed to load its models: {reply.reason}"
                log.error(self.last_error)
            case m.Progress() if pending and pending.job_id == reply.job_id:
                if pending.on_progress:
                    pending.on_progress(reply)
            case m.Decoded() | m.Planned() | m.Identified() | m.Transcribed() | m.Diarized() | m.Failed() | \
                    m.Cancelled() if pending and pending.job_id == reply.job_id:
                # The process said it is done with the request: only now is it idle.
                self._pending, self.state = None, "idle"
                pending.future.set_result(reply)
            case _:
                log.warning("engine %d: dropped a %s for job %s", self.index, type(reply).__name__,
                            getattr(reply, "job_id", "?"))

    def _on_exit(self, process) -> None:
        if process is not self._process:
            return
        exitcode = process.exitcode
        was_loaded = self.info is not None
        self.state = "dead"
        self.ready.clear()
        self._exited.set()
        pending, self._pending = self._pending, None
        if pending and not pending.future.done():
            died = EngineHung(self.index, self._hung) if self._hung else EngineDied(self.index, exitcode)
            pending.future.set_exception(died)
        if self.stopping:
            return
        if self.on_restart:
            self.on_restart(self)
        if not was_loaded:
            self.load_failures += 1
        delay = 0.0 if was_loaded else min(MAX_BACKOFF_S, 2.0 ** (self.load_failures - 1))
        log.error("engine %d: pid %s exited (%s); respawning in %.0f s",
                  self.index, process.pid, exitcode, delay)
        self.loop.call_later(delay, self._respawn)

    def _respawn(self) -> None:
        if not self.stopping:
            self.spawn()

    def _send(self, message: m.Request) -> None:
        self._send_bytes(m.encode(message))

    def _send_bytes(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError:
            pass  # the pipe broke: the engine is dying; its reader thread reports the exit

    async def call(self, request: m.Decode | m.Plan | m.Identify | m.Transcribe | m.Diarize,
                   on_progress: Callable[[m.Progress], None] | None = None) -> m.Reply:
        """Send one request and wait for the engine's answer: its reply, `Cancelled`, or
        EngineDied (EngineHung) if the process dies first. If the caller is cancelled meanwhile,
        the engine is told to cancel and the caller still waits for its answer, so the engine
        is never left working for a job that has gone."""
        await self.ready.wait()
        data = m.encode(request)
        future: asyncio.Future[m.Reply] = self.loop.create_future()
        self._pending = Pending(request.job_id, future, on_progress)
        self.state, self.last_heard = "busy", time.monotonic()
        self._send_bytes(data)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # It ends: the engine answers, dies, or the watchdog kills it within the hang timeout.
            self._cancel(future)
            await settled(future)
            raise

    def _cancel(self, future: asyncio.Future) -> None:
        pending = self._pending
        if pending is not None and pending.future is future and pending.cancel_sent is None:
            pending.cancel_sent = time.monotonic()
            self._send(m.Cancel(job_id=pending.job_id))

    def check_hung(self, timeout: float) -> None:
        """The watchdog's look at one engine: kill it if busy and silent, or deaf to a cancel."""
        pending, now = self._pending, time.monotonic()
        if pending is None or self.state != "busy" or self._hung or self._process is None:
            return
        if now - self.last_heard > timeout:
            why = f"no progress for {now - self.last_heard:.0f} s"
        elif pending.cancel_sent is not None and now - pending.cancel_sent > timeout:
            why = f"still working {now - pending.cancel_sent:.0f} s after it was told to cancel"
        else:
            return
        self._hung = why
        self.hangs.append(now)
        log.error("engine %d: pid %s hung (%s) while working for job %s; killing it",
                  self.index, self.pid, why, pending.job_id)
        if self.on_hang:
            self.on_hang(self)
        self._process.kill()  # SIGKILL also ends a stopped (SIGSTOP) process

    async def stop(self, timeout: float) -> None:
        self.stopping = True
        process = self._process
        if process is None or self.state == "dead":
            return
        try:
            self._conn.send_bytes(m.encode(m.Stop()))
        except OSError:
            pass
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await self._exited.wait()


class EnginePool:
    def __init__(self, settings: list[m.EngineSettings], hang_timeout: float,
                 on_restart: Callable[[EngineHandle], None] | None = None,
                 on_hang: Callable[[EngineHandle], None] | None = None) -> None:
        self.settings = settings
        self.hang_timeout = hang_timeout
        self.on_restart = on_restart
        self.on_hang = on_hang
        self.engines: list[EngineHandle] = []
        self._watchdog: asyncio.Task | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for s in self.settings:
            engine = EngineHandle(s, loop)
            engine.on_restart, engine.on_hang = self.on_restart, self.on_hang
            engine.spawn()
            self.engines.append(engine)
        self._watchdog = loop.create_task(self._watch(), name="engine-watchdog")
        log.info("spawned %d engine(s) in %.2f s", len(self.engines), time.monotonic() - started)

    async def _watch(self) -> None:
        # A tenth of the timeout between looks: a hang is caught within 10 % of it.
        interval = min(1.0, max(0.05, self.hang_timeout / 10))
        while True:
            await asyncio.sleep(interval)
            for engine in self.engines:
                try:
                    engine.check_hung(self.hang_timeout)
                except Exception:  # a bug here must not end hang detection for every engine
                    log.exception("watchdog: checking engine %d failed", engine.index)

    def __getitem__(self, index: int) -> EngineHandle:
        return self.engines[index]

    @property
    def all_loaded_once(self) -> bool:
        """Every slot's engine has loaded its models at least once since start-up."""
        return len(self.engines) == len(self.settings) and all(e.loaded_once for e in self.engines)

    def failing(self) -> list[str]:
        """Reasons of engines that keep dying before they are ready (a crash loop), or that keep
        hanging on their work."""
        window = max(HANG_WINDOW_S, 10 * self.hang_timeout)
        reasons = []
        for e in self.engines:
            if e.load_failures >= FAILING_AFTER:
                reasons.append(e.last_error or f"engine {e.index} keeps dying at start-up")
            elif len(e.hangs) == FAILING_AFTER and time.monotonic() - e.hangs[0] <= window:
                reasons.append(f"engine {e.index} hung {FAILING_AFTER} times in the last {window:.0f} s "
                               f"(each time busy and silent, or deaf to a cancel, for {self.hang_timeout:g} s)")
        return reasons

    async def stop(self, timeout: float = 10.0) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        await asyncio.gather(*(e.stop(timeout) for e in self.engines))
