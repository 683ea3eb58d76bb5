"""Pure logic of the cluster: where a gateway sends a request, where a create goes."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from sietch.cluster.catalog import Capacity, NodeRecord
from sietch.cluster.placement import choose, fits
from sietch.core.quotas import Usage
from sietch.errors import InvalidArgument, Unavailable
from sietch.server.gateway.routing import Target, classify, image_of

SB, SNAP = "sb-0123456789ab", "snap-0123456789ab"


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("POST", f"/api/v1/sandboxes/{SB}/exec", {}, Target("sandbox", SB)),
        ("GET", f"/api/v1/sandboxes/{SB}/ports/80/proxy/a/b", {}, Target("sandbox", SB)),
        ("GET", f"/sandboxes/{SB}", {}, Target("sandbox", SB)),  # E2B's REST
        ("POST", "/files", {"e2b-sandbox-id": SB}, Target("sandbox", SB, by_header=True)),
        ("GET", "/", {"host": f"8080-{SB}.sb.example"}, Target("sandbox", SB)),
        ("GET", "/", {"host": f"ide-{SB}.sb.example"}, Target("sandbox", SB)),  # the IDE's own
        ("POST", f"/api/v1/snapshots/{SNAP}/restore", {}, Target("restore", SNAP)),
        ("DELETE", f"/api/v1/snapshots/{SNAP}", {}, Target("snapshot", SNAP)),
        ("POST", "/v1/vms/my-vm/cmd", {}, Target("vm", "my-vm")),
        ("POST", "/api/v1/sandboxes", {}, Target("create")),
        ("POST", "/v2/sandboxes", {}, Target("create")),
        ("POST", "/v1/vms", {}, Target("create")),
        ("GET", "/api/v1/sandboxes/", {}, Target("list")),
        ("GET", "/snapshots", {}, Target("list")),
        ("DELETE", "/v1/vms", {}, Target("every")),
        ("GET", "/api/v1/info", {}, Target("any")),
        ("POST", f"/api/v1/sandboxes/{SB}/fork", {}, Target("fork", SB)),
        ("POST", f"/api/v1/sandboxes/{SB}/resume", {}, Target("resume", SB)),
        ("GET", f"/api/v1/sandboxes/{SB}/resume", {}, Target("sandbox", SB)),
        ("GET", "/api/v1/images/my-image:1", {}, Target("image", "my-image:1")),
        ("DELETE", "/api/v1/images/my-image", {}, Target("image", "my-image")),
        ("POST", "/api/v1/images/prune", {}, Target("any")),
    ],
)
def test_requests_go_where_they_name(
    method: str, path: str, headers: dict[str, str], expected: Target
) -> None:
    """Each kind of request of the three public APIs is routed by what it names."""
    assert classify(method, path, headers, "sb.example") == expected


def test_a_create_names_its_image_as_its_api_does() -> None:
    """Sietch's ``image``, E2B's ``templateID`` and Arrakis' ``rootfs`` name the image."""
    assert image_of("/api/v1/sandboxes", {"image": "web"}) == "web"
    assert image_of("/sandboxes/", {"templateID": "web"}) == "web"
    assert image_of("/v1/vms", {"rootfs": "web"}) == "web"
    assert image_of("/api/v1/sandboxes", {"templateID": "web"}) is None
    assert image_of("/api/v1/sandboxes", {"image": 3}) is None


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/ui/sandboxes", Target("create")),  # the create form: placed
        ("POST", "/ui/sandboxes/delete", Target("delete_many")),  # ids in its form
        ("GET", f"/ui/sandboxes/{SB}/terminal/ws", Target("sandbox", SB)),
        ("POST", f"/ui/sandboxes/{SB}/lifecycle/pause", Target("sandbox", SB)),
        ("POST", f"/ui/snapshots/{SNAP}/delete", Target("snapshot", SNAP)),
        ("POST", f"/ui/snapshots/{SNAP}/restore", Target("restore", SNAP)),  # placed
        ("POST", f"/ui/snapshots/{SNAP}/fork", Target("restore", SNAP)),  # N restores
        ("GET", "/ui/snapshots", Target("any")),  # the tree: any node draws every node's
        ("GET", "/ui/", Target("any")),  # the list: any node shows the whole cluster
        ("GET", "/ui/sandboxes/rows", Target("any")),
        ("POST", "/ui/login", Target("any")),
    ],
)
def test_console_requests_go_where_they_name(method: str, path: str, expected: Target) -> None:
    """The console's pages and forms are routed by what they name, as the API's are."""
    assert classify(method, path, {}, None) == expected
    assert image_of("/ui/sandboxes", {"image": "web"}) == "web"


def _node(
    name: str,
    slots: int,
    placed: int,
    *,
    free_mib: int = 8000,
    up: bool = True,
    load: float = 0.0,
) -> NodeRecord:
    capacity = Capacity(2, 16000, 100_000, slots, free_mib, 90_000, load, placed, "tcg", "10.0")
    return NodeRecord(
        name, f"http://{name}", capacity, datetime.now(UTC), up, Usage(placed, placed, placed * 256)
    )


NEED = Usage(1, 1, 256)


def test_the_emptier_node_of_the_candidates_wins() -> None:
    """Of the drawn candidates, the one with the most free slots, memory and CPU is taken."""
    nodes = [_node("a", 10, 8), _node("b", 10, 2)]
    assert choose(nodes, NEED, candidates=2).name == "b"


def test_what_a_node_measured_decides_fit_not_rank() -> None:
    """Equal nodes differ in load and free memory by when each last heartbeat: the one
    with fewer sandboxes placed wins however busy or full it looked then."""
    busy = _node("busy", 10, 1, load=1.9, free_mib=3000)
    idle = _node("idle", 10, 2, load=0.1, free_mib=8000)
    assert choose([busy, idle], NEED, candidates=2).name == "busy"


def test_creates_spread_evenly_over_equal_nodes() -> None:
    """Best of two over three equal nodes, counting each placement: 30 creates spread
    within two of each other."""
    placed = {"a": 0, "b": 0, "c": 0}
    rng = random.Random(7)
    for _ in range(30):
        nodes = [_node(n, 64, k) for n, k in placed.items()]
        placed[choose(nodes, NEED, candidates=2, rng=rng).name] += 1
    assert max(placed.values()) - min(placed.values()) <= 2, placed


def test_full_unreachable_and_preferred_nodes() -> None:
    """A full or unreachable node gets nothing; prefer_node wins while it has room, and
    falls back when it has none; an unknown name is an error; no room anywhere is 503."""
    full, down, roomy = _node("full", 4, 4), _node("down", 10, 0, up=False), _node("ok", 10, 5)
    assert not fits(full, NEED) and not fits(down, NEED)
    assert choose([full, down, roomy], NEED, candidates=3).name == "ok"
    assert choose([_node("x", 10, 9), roomy], NEED, candidates=2, prefer="x").name == "x"
    assert choose([full, roomy], NEED, candidates=2, prefer="full").name == "ok"
    assert not fits(_node("tight", 10, 0, free_mib=100), NEED)
    with pytest.raises(InvalidArgument):
        choose([roomy], NEED, candidates=1, prefer="nope")
    with pytest.raises(Unavailable):
        choose([full, down], NEED, candidates=2)
