"""The engine process: pin, load the models once, then serve requests from the gateway's pipe.

Started by the gateway with the spawn context (never forked from a process holding a model
or CUDA). One request at a time; the gateway never sends a second before the reply. While a
request works, its steps report progress and honour Cancel through `engine.control`.

May import: engine.*, shared.*; never gateway.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection

from engine.control import Cancelled, Control, serving
from shared import messages as m

# Engines do batch work; the gateway answers status polls and probes. A lower priority for
# engines lets the gateway run first whenever both want a core (bench/gateway.py).
ENGINE_NICENESS = 5


def _pin(settings: m.EngineSettings) -> None:
    if settings.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, settings.cores)
    os.nice(ENGINE_NICENESS)
    # Keep every numeric library inside the engine's share of the machine.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(settings.threads)


class Engine:
    def __init__(self, conn: Connection, settings: m.EngineSettings) -> None:
        self.conn = conn
        self.settings = settings
        self.models: dict = {}
        self.diarizer = None
        self.stopping = False

    def send(self, reply: m.Reply) -> None:
        self.conn.send_bytes(m.encode(reply))

    def load(self) -> None:
        from engine import asr, features, vad

        vad.install()
        started = time.perf_counter()
        s = self.settings
        infos = []
        for name, source in s.models.items():
            model = asr.load_model(source, s.device, s.device_index, s.compute_type, s.threads)
            features.install(model)
            self.models[name] = model
            infos.append(asr.model_info(name, source, model))
        if s.diarization:
            from engine.diarize import Diarizer

            self.diarizer = Diarizer(s.diarization, s.threads, s.device)
        # Everything loaded so far lives as long as the engine. Freezing it keeps the full
        # collections that faster-whisper's decode_audio runs for each upload from walking the
        # millions of objects torch and the models hold (0.3 s a job, measured).
        gc.freeze()
        self.send(
            m.Ready(
                pid=os.getpid(),
                device=s.device if s.device == "cpu" else f"{s.device}:{s.device_index}",
                compute_type=s.compute_type,
                threads=s.threads,
                cores=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
                models=infos,
                load_seconds=time.perf_counter() - started,
                batch_size=s.batch_size,
            )
        )

    def handle(self, request: m.Decode | m.Plan | m.Identify | m.Transcribe | m.Diarize) -> m.Reply:
        """One request, start to reply; whatever goes wrong fails the job, not the engine."""
        from engine import asr

        control = Control(self.conn, request.job_id)
        try:
            with serving(control):
                return self._dispatch(request, control)
        except Cancelled:
            return m.Cancelled(job_id=request.job_id)
        except asr.JobAudioError as exc:
            return m.Failed(job_id=request.job_id, reason=str(exc))
        except Exception as exc:  # the job fails, the engine lives on
            traceback.print_exc(file=sys.stderr)
            return m.Failed(job_id=request.job_id, reason=f"{type(exc).__name__}: {exc}")
        finally:
            self.stopping = self.stopping or control.stopping

    def _dispatch(self, request: m.Decode | m.Plan | m.Identify | m.Transcribe | m.Diarize,
                  control: Control) -> m.Reply:
        from engine import asr, plan

        match request:
            case m.Decode():
                return asr.decode(request, control)
            case m.Plan():
                return plan.plan(request, control)
            case m.Diarize() if self.diarizer is None:
                return m.Failed(job_id=request.job_id, reason="speaker diarization is not enabled on this worker")
            case m.Diarize():
                return self.diarizer(request, control)
            case m.Identify():
                return asr.identify(self.models[request.model], request, control)
            case m.Transcribe():
                return asr.transcribe(self.models[request.model], request, control, self.settings.batch_size)
        raise TypeError(f"not a request an engine serves: {type(request).__name__}")

    def serve(self) -> None:
        while not self.stopping:
            try:
                request = m.decode_request(self.conn.recv_bytes())
            except EOFError:  # the gateway is gone
                return
            match request:
                case m.Stop():
                    return
                case m.Cancel():  # its request already answered: nothing left to stop
                    continue
                case _:
                    self.send(self.handle(request))


def run(conn: Connection, settings_bytes: bytes) -> None:
    """Process entry point (a module-level function, so spawn can pickle it)."""
    settings = m.decode_settings(settings_bytes)
    # The gateway handles Ctrl-C and SIGTERM and tells engines to stop over the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pin(settings)
    engine = Engine(conn, settings)
    try:
        engine.load()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        engine.send(m.LoadFailed(engine=settings.index, reason=f"{type(exc).__name__}: {exc}"))
        sys.exit(1)
    engine.serve()

