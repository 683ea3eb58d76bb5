"""Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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


OTHER = "_other"
"""The sandbox label of the sum over sandboxes beyond ``SIETCH_METRICS_MAX_SANDBOXES``."""


class _SandboxUsage(Collector):
    """Per-sandbox series from the manager's latest host-side samples (no I/O at scrape).

    Cardinality is bounded: the longest-running ``limit`` sandboxes get series of
    their own (a stable choice, so series don't churn), the rest are summed as ``_other``.
    """

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        latest = {
            sid: sample
            for sid, sample in self.manager.sampler.latest().items()
            if (sb := self.manager.live(sid)) is not None and not is_pooled(sb.info)
        }
        ranked = sorted(latest, key=lambda sid: -latest[sid].uptime_s)
        limit = self.manager.settings.metrics_max_sandboxes
        label = {sid: sid if i < limit else OTHER for i, sid in enumerate(ranked)}
        cpu = CounterMetricFamily(
            "sietch_sandbox_cpu_seconds", "Host CPU used by a sandbox", labels=["sandbox"]
        )
        memory = GaugeMetricFamily(
            "sietch_sandbox_memory_bytes",
            "Host memory of a sandbox: its cgroup's charge, or QEMU's PSS",
            labels=["sandbox", "kind"],
        )
        disk = GaugeMetricFamily(
            "sietch_sandbox_disk_bytes", "Host bytes its disk overlay holds", labels=["sandbox"]
        )
        uptime = GaugeMetricFamily(
            "sietch_sandbox_uptime_seconds", "Since the sandbox was created", labels=["sandbox"]
        )
        sums: dict[tuple[str, str], float] = {}
        for sid, sample in latest.items():
            for key, value in (
                ("cpu", sample.cpu_seconds), ("cgroup", sample.memory_bytes),
                ("pss", sample.memory_pss_bytes), ("disk", sample.disk_bytes),
                ("uptime", sample.uptime_s if label[sid] != OTHER else None),
            ):  # fmt: skip
                if value is not None:
                    sums[label[sid], key] = sums.get((label[sid], key), 0) + value
        for (name, key), value in sorted(sums.items()):
            if key == "cpu":
                cpu.add_metric([name], value)
            elif key in ("cgroup", "pss"):
                memory.add_metric([name, key], value)
            else:
                (disk if key == "disk" else uptime).add_metric([name], value)
        yield from (cpu, memory, disk, uptime)


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
        self._usage: _SandboxUsage | None = None

    def watch(self, manager: Manager) -> None:
        """Start reporting sandbox states from ``manager`` (called once it is started)."""
        for old in (self._states, self._usage):
            if old is not None:
                self.registry.unregister(old)
        self._states, self._usage = _SandboxStates(manager), _SandboxUsage(manager)
        self.registry.register(self._states)
        self.registry.register(self._usage)
