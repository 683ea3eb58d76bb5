"""Placement: which node gets a new sandbox.

Best of K: draw ``placement_candidates`` nodes at random among those that are reachable
and have room, and take the least allocated: the most memory, vCPUs and sandbox slots
left once what is placed on it is counted, as fractions of its own capacity. What is
placed is the catalog's: the sandboxes its node reported, and the placements in flight
to it that gateways reserved (so creates placed at the same moment count each other).
What a node measured (MemAvailable, load, as of its last heartbeat) lags a heartbeat and
differs between equal nodes by noise: it decides whether a sandbox fits, not where it
goes (as Kubernetes scores requests, not usage). Drawing a few at random, rather than
scoring all, keeps two gateways that place at the same moment from piling onto the one
node that looked best to both (the "power of two choices").
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sietch.cluster.catalog import NodeRecord
from sietch.core.quotas import Usage
from sietch.errors import InvalidArgument, Unavailable


def free_memory_mib(node: NodeRecord) -> int:
    c = node.capacity
    return min(c.free_memory_mib, c.memory_mib - node.placed.memory_mib)


def fits(node: NodeRecord, need: Usage) -> bool:
    c = node.capacity
    return (
        node.reachable
        and node.placed.sandboxes + need.sandboxes <= c.max_sandboxes
        and free_memory_mib(node) >= need.memory_mib
    )


def score(node: NodeRecord) -> float:
    """What placed sandboxes leave of the node's memory, vCPUs and sandbox slots, each as
    a fraction of its own (vCPUs may be overcommitted: the fraction goes below zero)."""
    c, placed = node.capacity, node.placed
    return (
        3
        - placed.memory_mib / max(c.memory_mib, 1)
        - placed.vcpus / max(c.vcpus, 1)
        - placed.sandboxes / max(c.max_sandboxes, 1)
    )


def choose(
    nodes: Sequence[NodeRecord],
    need: Usage,
    *,
    candidates: int,
    prefer: str | None = None,
    rng: random.Random | None = None,
) -> NodeRecord:
    """The node for a sandbox that needs ``need``: ``prefer`` if it is there and has room,
    else the best of ``candidates`` drawn among those that have room."""
    if prefer is not None:
        if not any(n.name == prefer for n in nodes):
            raise InvalidArgument(f"prefer_node: no node named {prefer!r} in the cluster")
        preferred = next(n for n in nodes if n.name == prefer)
        if fits(preferred, need):
            return preferred
    room = [n for n in nodes if fits(n, need)]
    if not room:
        reachable = sum(n.reachable for n in nodes)
        raise Unavailable(
            f"no node has room for {need.memory_mib} MiB more ({reachable} of "
            f"{len(nodes)} nodes reachable)"
        )
    drawn = (rng or random).sample(room, min(candidates, len(room)))
    return max(drawn, key=score)
