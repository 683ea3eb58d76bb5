"""The snapshot tree's layout (pure logic): rows depth first, edges = parent links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sietch.server.console.tree import layout
from sietch.server.schemas import SnapshotPublic

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def snap(snap_id: str, parent: str | None, minute: int) -> SnapshotPublic:
    return SnapshotPublic(
        id=snap_id, name=None, labels={}, created_at=T0 + timedelta(minutes=minute),
        parent_id=parent, sandbox_id=None, image="default", vcpus=1, memory_mib=512,
        disk_mib=2048, size_bytes=1, template=False, tenant="default",
    )  # fmt: skip


def test_rows_are_depth_first_and_unseen_parents_make_roots() -> None:
    """Children follow their parent, oldest first; a parent the tenant can't see (a
    template) makes its child a root; one edge per parent link."""
    tree = layout(
        [snap("b", "root", 2), snap("root", "tmpl-x", 0), snap("a", "root", 1),
         snap("a1", "a", 3), snap("other", None, 4)],
        [],
    )  # fmt: skip
    assert [(n.snapshot.id, n.depth) for n in tree.nodes] == [
        ("root", 0), ("a", 1), ("a1", 2), ("b", 1), ("other", 0),
    ]  # fmt: skip
    assert [(e.parent.snapshot.id, e.child.snapshot.id) for e in tree.edges] == [
        ("root", "a"), ("a", "a1"), ("root", "b"),
    ]  # fmt: skip
