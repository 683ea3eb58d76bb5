"""Small live charts of a sandbox's use, as inline SVG (no chart library in the page)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from sietch.core.usage import SandboxMetrics
from sietch.server.console.render import size

WIDTH, HEIGHT = 280, 70


def polyline(values: Sequence[float | None], top: float) -> str:
    """The ``points`` of a line through ``values`` (None: skipped), scaled to ``top``."""
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    if not known:
        return ""
    step = WIDTH / max(1, len(values) - 1)
    scale = (HEIGHT - 4) / (top or 1.0)
    return " ".join(f"{i * step:.1f},{HEIGHT - 2 - v * scale:.1f}" for i, v in known)


def chart(title: str, values: Sequence[float | None], top: float, now: str) -> str:
    label = f"{title}: {now}"
    return (
        f"<figure><figcaption>{escape(label)}</figcaption>"
        f'<svg role="img" aria-label="{escape(label)}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}"><polyline fill="none" stroke="#0b5cad" '
        f'stroke-width="2" points="{polyline(values, top)}"/></svg></figure>'
    )


def charts(report: SandboxMetrics) -> str:
    """CPU (% of a core) and host memory over the sampled history, and their values now."""
    samples = [*report.history, report.current]
    cpu = [s.cpu_percent for s in samples]
    memory = [float(s.memory_bytes) if s.memory_bytes is not None else None for s in samples]
    current = report.current
    cpu_now = f"{current.cpu_percent:.0f} %" if current.cpu_percent is not None else "n/a"
    top_memory = max([m for m in memory if m is not None] or [1.0])
    limit = current.memory_limit_bytes
    memory_now = size(current.memory_bytes) + (f" of {size(limit)}" if limit else "")
    return (
        '<div class="charts">'
        + chart("CPU", cpu, max(100.0, *(c or 0.0 for c in cpu)), cpu_now)
        + chart("Memory", memory, top_memory, memory_now or "n/a")
        + "</div>"
    )
