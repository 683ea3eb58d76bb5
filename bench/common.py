"""Shared bits of the benchmark scripts: statistics, a throwaway state dir, JSON output."""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sietch.config import Settings
from sietch.manager.manager import Manager


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@asynccontextmanager
async def bench_manager(**settings: Any) -> AsyncIterator[Manager]:
    """A manager on a fresh state dir (short path: it holds unix sockets), removed after."""
    state = Path(tempfile.mkdtemp(prefix="stb", dir="/tmp"))
    try:
        async with Manager(Settings(state_dir=state, **settings)) as manager:
            yield manager
    finally:
        shutil.rmtree(state, ignore_errors=True)


def report(figures: dict[str, Any]) -> None:
    """Print a human line, then the figures as JSON on the last line."""
    figures.setdefault("machine", f"{platform.node()} {platform.machine()}")
    print(", ".join(f"{k}={v}" for k, v in figures.items()))
    print(json.dumps(figures))
