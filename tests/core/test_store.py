"""The SQLite store is safe to use from the event loop and worker threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sietch.core.models import SnapshotInfo
from sietch.core.store import Store


def snapshot(n: int) -> SnapshotInfo:
    return SnapshotInfo(
        id=f"snap-{n}",
        created_at=datetime.now(UTC),
        image="default",
        vcpus=1,
        memory_mib=512,
        disk_mib=2048,
        accel="tcg",
    )


def test_threads_write_and_read_at_once(tmp_path: Path) -> None:
    """Writes and reads from several threads on one store all land, none collides."""
    store = Store(tmp_path / "sietch.db")

    def churn(worker: int) -> None:
        for n in range(worker * 1000, worker * 1000 + 300):
            store.put_snapshot(snapshot(n))
            store.all_snapshots()
            if n % 2:
                store.delete_snapshot(f"snap-{n}")

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(churn, range(4)))  # re-raises what a worker raised
        kept = {s.id for s in store.all_snapshots()}
        assert kept == {f"snap-{w * 1000 + n}" for w in range(4) for n in range(0, 300, 2)}
    finally:
        store.close()
