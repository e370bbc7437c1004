"""Prometheus metrics, owned by the gateway (engines report over their pipes; no
multiprocess files). Process and GPU readings are taken when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.jobs.pool import ENGINE_STATES

RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.segments = Counter("chorus_engine_segments", "Engine tasks (ASR segments, channels, "
                                "diarizations) by outcome", ["engine", "outcome"], registry=r)
        self.jobs = Counter("chorus_engine_jobs", "Jobs an engine took part in, by outcome",
                            ["engine", "outcome"], registry=r)
        self.audio = Counter("chorus_engine_audio_seconds", "Seconds of audio processed", ["engine"], registry=r)
        self.processing = Counter("chorus_engine_processing_seconds", "Seconds spent processing",
                                  ["engine"], registry=r)
        self.rtf = Histogram("chorus_engine_real_time_factor", "Processing time over audio duration per task",
                             ["engine"], buckets=RTF_BUCKETS, registry=r)
        self.restarts = Counter("chorus_engine_restarts", "Engine processes respawned", ["engine"], registry=r)
        self.hangs = Counter("chorus_engine_hangs", "Engines killed by the watchdog as hung (busy and silent, "
                             "or deaf to a cancel, for --hang-timeout)", ["engine"], registry=r)
        self.refused = Counter("chorus_admissions_refused", "Submissions refused with 503 (engines busy)",
                               registry=r)
        self.upload_bytes = Counter("chorus_upload_bytes", "Bytes of audio uploaded", registry=r)
        self.requests = Histogram("chorus_http_request_duration_seconds", "HTTP request latency by route",
                                  ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)


class WorkerCollector(Collector):
    """Readings taken at scrape time: engine state, process RSS/CPU, GPU, jobs, capacity."""

    def __init__(self, engines: Callable[[], Iterable], jobs_by_status: Callable[[], dict[str, int]],
                 in_use: Callable[[], int], total: int,
                 running_progress: Callable[[], dict[str, float]] = dict) -> None:
        self._engines = engines
        self._jobs = jobs_by_status
        self._progress = running_progress
        self._in_use = in_use
        self._total = total
        self._gpu = _Nvml()

    def collect(self):
        state = GaugeMetricFamily("chorus_engine_state", "1 for the engine's current state",
                                  labels=["engine", "state"])
        rss = GaugeMetricFamily("chorus_engine_resident_memory_bytes", "Engine process RSS", labels=["engine"])
        cpu = CounterMetricFamily("chorus_engine_cpu_seconds", "Engine process CPU time (current process)",
                                  labels=["engine"])
        gpu_mem = GaugeMetricFamily("chorus_engine_gpu_memory_bytes", "GPU memory used by the engine process",
                                    labels=["engine", "gpu"])
        gpu_util = GaugeMetricFamily("chorus_gpu_utilization_ratio", "GPU utilisation (0-1)", labels=["gpu"])
        seen_gpus = set()
        for engine in self._engines():
            index = str(engine.index)
            for s in ENGINE_STATES:
                state.add_metric([index, s], 1.0 if engine.state == s else 0.0)
            if engine.pid and engine.state != "dead":
                try:
                    p = psutil.Process(engine.pid)
                    with p.oneshot():
                        rss.add_metric([index], p.memory_info().rss)
                        times = p.cpu_times()
                        cpu.add_metric([index], times.user + times.system)
                except psutil.Error:
                    pass
                if engine.settings.device == "cuda":
                    gpu = engine.settings.device_index
                    used = self._gpu.process_memory(gpu, engine.pid)
                    if used is not None:
                        gpu_mem.add_metric([index, str(gpu)], used)
                    seen_gpus.add(gpu)
        for gpu in sorted(seen_gpus):
            util = self._gpu.utilization(gpu)
            if util is not None:
                gpu_util.add_metric([str(gpu)], util)
        jobs = GaugeMetricFamily("chorus_jobs", "Jobs in the job table by status", labels=["status"])
        for status, count in self._jobs().items():
            jobs.add_metric([status], count)
        progress = GaugeMetricFamily("chorus_job_progress_ratio", "Fraction of a running job's audio its "
                                     "engine tasks have covered (0-1)", labels=["job_id"])
        for job_id, fraction in self._progress().items():
            progress.add_metric([job_id], fraction)
        yield from (state, rss, cpu, gpu_mem, gpu_util, jobs, progress)
        yield GaugeMetricFamily("chorus_engines_in_use", "Engines held by jobs", value=self._in_use())
        yield GaugeMetricFamily("chorus_engines_max", "Engines (--parallel)", value=self._total)


class _Nvml:
    """nvidia-ml-py, when installed and a driver answers; otherwise no GPU readings."""

    def __init__(self) -> None:
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
        except Exception:
            self.nvml = None

    def process_memory(self, gpu: int, pid: int) -> float | None:
        if self.nvml is None:
            return None
        try:
            handle = self.nvml.nvmlDeviceGetHandleByIndex(gpu)
            for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid:
                    return float(proc.usedGpuMemory or 0)
        except Exception:
            return None
        return 0.0

    def utilization(self, gpu: int) -> float | None:
        if self.nvml is None:
            return None
        try:
            handle = self.nvml.nvmlDeviceGetHandleByIndex(gpu)
            return self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        except Exception:
            return None
