"""Supervisor of the engine processes: spawn, talk, notice death at once, respawn.

Each engine has one duplex Pipe. A reader thread per engine blocks on the pipe so that the
event loop never does; replies and deaths are handed to the loop with call_soon_threadsafe.
A closed pipe (EOF) is how a death is noticed: the child's end closes when it exits,
whatever killed it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable

import msgspec

from engine.main import run as engine_entry
from shared import messages as m

log = logging.getLogger("chorus.pool")

_SPAWN = multiprocessing.get_context("spawn")
MAX_BACKOFF_S = 60.0


class EngineDied(Exception):
    def __init__(self, index: int, exitcode: int | None) -> None:
        self.index, self.exitcode = index, exitcode
        how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
        super().__init__(f"engine {index} died ({how})")


class EngineHandle:
    """One engine slot: the current process for it, its pipe and its state."""

    def __init__(self, settings: m.EngineSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.index = settings.index
        self.loop = loop
        self.state = "starting"  # starting | idle | busy | dead
        self.info: m.Ready | None = None
        self.restarts = 0
        self.loaded_once = False
        self.load_failures = 0  # consecutive deaths before Ready
        self.last_error: str | None = None
        self.ready = asyncio.Event()
        self.stopping = False
        self.on_restart: Callable[[EngineHandle], None] | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn = None
        self._pending: tuple[str, asyncio.Future[m.Reply]] | None = None
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
        self.state, self.info = "starting", None
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
        if isinstance(reply, m.Ready):
            self.info, self.state, self.load_failures = reply, "idle", 0
            self.loaded_once = True
            self.ready.set()
            log.info("engine %d: ready in %.1f s (pid %d, %s, %d thread(s), cores %s)",
                     self.index, reply.load_seconds, reply.pid, reply.device, reply.threads, reply.cores)
        elif isinstance(reply, m.LoadFailed):
            self.last_error = f"engine {self.index} failed to load its models: {reply.reason}"
            log.error(self.last_error)
        elif self._pending and self._pending[0] == reply.job_id and not self._pending[1].done():
            self._pending[1].set_result(reply)
        else:
            log.warning("engine %d: dropped a reply for job %s", self.index, reply.job_id)

    def _on_exit(self, process) -> None:
        if process is not self._process:
            return
        exitcode = process.exitcode
        was_loaded = self.info is not None
        self.state = "dead"
        self.ready.clear()
        self._exited.set()
        if self._pending and not self._pending[1].done():
            self._pending[1].set_exception(EngineDied(self.index, exitcode))
        if self.stopping:
            return
        self.restarts += 1
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

    async def call(self, request: m.Decode | m.Plan | m.Transcribe | m.Diarize) -> m.Reply:
        """Send one request and wait for its reply; EngineDied if the engine dies first."""
        await self.ready.wait()
        future: asyncio.Future[m.Reply] = self.loop.create_future()
        self._pending = (request.job_id, future)
        self.state = "busy"
        try:
            self._conn.send_bytes(m.encode(request))
        except OSError:
            # The pipe broke: the engine is dying; its reader thread will report the exit.
            pass
        try:
            return await future
        finally:
            self._pending = None
            if self.state == "busy":
                self.state = "idle"

    def cancel(self, job_id: str) -> None:
        if self._pending and self._pending[0] == job_id:
            try:
                self._conn.send_bytes(m.encode(m.Cancel(job_id=job_id)))
            except OSError:
                pass

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
    def __init__(self, settings: list[m.EngineSettings],
                 on_restart: Callable[[EngineHandle], None] | None = None) -> None:
        self.settings = settings
        self.on_restart = on_restart
        self.engines: list[EngineHandle] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for s in self.settings:
            engine = EngineHandle(s, loop)
            engine.on_restart = self.on_restart
            engine.spawn()
            self.engines.append(engine)
        log.info("spawned %d engine(s) in %.2f s", len(self.engines), time.monotonic() - started)

    def __getitem__(self, index: int) -> EngineHandle:
        return self.engines[index]

    @property
    def all_loaded_once(self) -> bool:
        """Every slot's engine has loaded its models at least once since start-up."""
        return len(self.engines) == len(self.settings) and all(e.loaded_once for e in self.engines)

    def failing(self) -> list[str]:
        """Reasons of engines that keep dying before they are ready (a crash loop)."""
        return [e.last_error or f"engine {e.index} keeps dying at start-up"
                for e in self.engines if e.load_failures >= 3]

    async def stop(self, timeout: float = 10.0) -> None:
        await asyncio.gather(*(e.stop(timeout) for e in self.engines))
