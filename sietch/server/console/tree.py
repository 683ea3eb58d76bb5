"""The snapshot tree's layout: one row per snapshot, children below their parent, indented.

Pure logic (no I/O), so the drawing can be checked without a browser. Snapshots
whose parent the tenant cannot see (a template, a deleted snapshot) are roots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sietch.server.schemas import SandboxPublic, SnapshotPublic

ROW = 48
"""Pixels per row, in the drawing and in the table beside it."""
INDENT = 36
PAD = 18
SANDBOX_W = 130
"""Room for one restored sandbox's id."""


@dataclass
class Node:
    snapshot: SnapshotPublic
    depth: int
    row: int
    restored: list[str] = field(default_factory=list)
    """Sandboxes restored from it (their ``snapshot_id``)."""

    @property
    def x(self) -> int:
        return PAD + self.depth * INDENT

    @property
    def y(self) -> int:
        return self.row * ROW + ROW // 2


@dataclass
class Edge:
    parent: Node
    child: Node

    @property
    def path(self) -> str:
        """An elbow from below the parent's dot down and across to the child's."""
        p, c = self.parent, self.child
        return f"M {p.x} {p.y + 6} V {c.y} H {c.x - 6}"


@dataclass
class Tree:
    nodes: list[Node]
    edges: list[Edge]

    @property
    def height(self) -> int:
        return max(1, len(self.nodes)) * ROW

    @property
    def sandbox_x(self) -> int:
        """Where the restored sandboxes' column starts."""
        return PAD + max((n.depth for n in self.nodes), default=0) * INDENT + 300

    @property
    def width(self) -> int:
        most = max((len(n.restored) for n in self.nodes), default=0)
        return self.sandbox_x + max(1, most) * SANDBOX_W


def layout(snapshots: Sequence[SnapshotPublic], sandboxes: Sequence[SandboxPublic]) -> Tree:
    """Rows in depth-first order (oldest child first), with the parent edges."""
    ids = {s.id for s in snapshots}
    children: dict[str | None, list[SnapshotPublic]] = {}
    for snap in sorted(snapshots, key=lambda s: s.created_at):
        parent = snap.parent_id if snap.parent_id in ids else None
        children.setdefault(parent, []).append(snap)
    restored: dict[str, list[str]] = {}
    for sb in sandboxes:
        if sb.snapshot_id in ids:
            restored.setdefault(sb.snapshot_id, []).append(sb.id)
    nodes: list[Node] = []
    edges: list[Edge] = []

    def visit(snap: SnapshotPublic, depth: int, parent: Node | None) -> None:
        node = Node(snap, depth, len(nodes), sorted(restored.get(snap.id, [])))
        nodes.append(node)
        if parent is not None:
            edges.append(Edge(parent, node))
        for child in children.get(snap.id, []):
            visit(child, depth + 1, node)

    for root in children.get(None, []):
        visit(root, 0, None)
    return Tree(nodes, edges)
