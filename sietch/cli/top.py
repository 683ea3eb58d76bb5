"""``sietch top``: a live table of what each sandbox uses (CPU, memory, disk, network)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from sietch.cli._common import LabelOption, api_errors, listing_table, out, parse_pairs
from sietch.client import Client, Sandbox, SandboxMetrics
from sietch.errors import SietchError

top_app = typer.Typer()

_LIVE_STATES = ("running", "paused")


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value}B"


def _guest_memory(m: SandboxMetrics) -> str:
    used, total = m.current.guest_memory_used_bytes, m.current.guest_memory_total_bytes
    return "-" if used is None or total is None else f"{_size(used)}/{_size(total)}"


def render(rows: list[SandboxMetrics]) -> Table:
    """One row per sandbox, busiest CPU first."""
    table = listing_table(
        "ID", "STATE", "CPU%", "CPU s", "HOST MEM", "LIMIT", "PSS", "GUEST MEM", "DISK",
        "NET RX", "NET TX", "PIDS", "UP",
    )  # fmt: skip
    for m in sorted(rows, key=lambda m: -(m.current.cpu_percent or 0)):
        c = m.current
        table.add_row(
            m.sandbox_id,
            m.state,
            "-" if c.cpu_percent is None else f"{c.cpu_percent:.1f}",
            "-" if c.cpu_seconds is None else f"{c.cpu_seconds:.1f}",
            _size(c.memory_bytes),
            _size(c.memory_limit_bytes),
            _size(c.memory_pss_bytes),
            _guest_memory(m),
            _size(c.disk_bytes),
            _size(c.net_rx_bytes),
            _size(c.net_tx_bytes),
            "-" if c.pids is None else str(c.pids),
            f"{int(c.uptime_s)}s",
        )
    return table


def collect(client: Client, labels: dict[str, str]) -> list[SandboxMetrics]:
    """Metrics of every live sandbox; one that ends meanwhile is left out."""
    rows = []
    for info in Sandbox.list(labels, client=client):
        if info.state in _LIVE_STATES:
            try:
                rows.append(Sandbox(info, client).metrics())
            except SietchError:
                continue
    return rows


@top_app.command()
def top(
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print the table once and exit.")] = False,
    label: LabelOption = None,
) -> None:
    """A live table of each sandbox's CPU, memory (host and guest), disk and network use."""
    labels = parse_pairs(label, "--label")
    with api_errors(), Client() as client:
        if once:
            out.print(render(collect(client, labels)))
            return
        with Live(render([]), console=out, auto_refresh=False) as live:
            try:
                while True:
                    live.update(render(collect(client, labels)), refresh=True)
                    time.sleep(interval)
            except KeyboardInterrupt:
                return
