"""Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sietch.core.manager import Manager
from sietch.core.models import SandboxState
from sietch.core.pool import is_pooled

_BOOT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60)
_EXEC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _SandboxStates(Collector):
    """Counts sandboxes by state from the manager's store at scrape time (never stale).

    Only those the listings show: a warm-pool VM is no one's sandbox until it is handed out.
    """

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("sietch_sandboxes", "Sandboxes by state", labels=["state"])
        counts = Tally(info.state for info in self.manager.store.all() if not is_pooled(info))
        for state in SandboxState:
            gauge.add_metric([state.value], counts.get(state, 0))
        yield gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.create_seconds = Histogram(
            "sietch_sandbox_create_seconds",
            "Time to create a sandbox (boot until its agent answers)",
            buckets=_BOOT_BUCKETS,
            registry=self.registry,
        )
        self.exec_seconds = Histogram(
            "sietch_exec_seconds",
            "Duration of commands run through the API",
            ["mode"],
            buckets=_EXEC_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "sietch_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=_EXEC_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "sietch_errors_total", "Errors returned by the API", ["code"], registry=self.registry
        )
        self._states: _SandboxStates | None = None

    def watch(self, manager: Manager) -> None:
        """Start reporting sandbox states from ``manager`` (called once it is started)."""
        if self._states is not None:
            self.registry.unregister(self._states)
        self._states = _SandboxStates(manager)
        self.registry.register(self._states)
