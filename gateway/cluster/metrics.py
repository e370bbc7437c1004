"""Cluster gauges for Prometheus, without double counting across pods.

Every worker sees the same cluster, so if each exported these gauges a `sum()` over pods would
count the cluster once per pod. Exactly one worker exports them at a time: the live worker with
the lowest id (the "reporter", chosen afresh at each heartbeat). Takeovers are a plain counter
on the worker that made each one, so summing over pods is right.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def takeovers(registry: CollectorRegistry) -> Counter:
    return Counter("chorus_cluster_takeovers", "Jobs this worker took over from dead or departing workers "
                   "(sum over pods)", registry=registry)


class ClusterCollector(Collector):
    def __init__(self, snapshot: Callable[[], object | None]) -> None:
        self.snapshot = snapshot  # the last capacity view, or None when this worker is not the reporter

    def collect(self):
        view = self.snapshot()
        if view is None:
            return
        workers = view.workers or []
        yield GaugeMetricFamily("chorus_cluster_workers_alive", "Live workers (heartbeat within the lease)",
                                value=len(workers))
        yield GaugeMetricFamily("chorus_cluster_engines_total", "Engines of the live workers",
                                value=sum(w["engines"] for w in workers))
        yield GaugeMetricFamily("chorus_cluster_engines_in_use", "Engines held by jobs, cluster-wide",
                                value=sum(w["engines_in_use"] for w in workers))
        yield GaugeMetricFamily("chorus_cluster_queued_jobs", "Jobs waiting for engines, cluster-wide",
                                value=len(view.queued or {}))
