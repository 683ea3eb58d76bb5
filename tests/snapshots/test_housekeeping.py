"""Snapshot housekeeping on real VMs: ttl_s expiry of unused snapshots, subtree delete."""

from __future__ import annotations

import pytest

from sietch.core.manager import Manager
from sietch.errors import Conflict
from tests.agent.hostside import eventually
from tests.snapshots.conftest import Tracker

WAIT_S = 120.0


async def test_ttl_expires_an_unused_snapshot_and_keeps_a_used_one(
    manager: Manager, track: Tracker
) -> None:
    """Past its ttl_s a snapshot nothing uses is deleted (files too); one a running sandbox
    was restored from stays until that sandbox is deleted."""
    sb = await track.create()
    unused = await manager.snapshot(sb.id, "unused", ttl_s=1)
    used = await manager.snapshot(sb.id, "used", ttl_s=1)
    track.snapshot_ids += [unused.id, used.id]
    assert unused.expires_at is not None
    user = await track.restore(used)

    async def unused_gone() -> None:  # the record goes first, then its files (a thread)
        assert manager.store.get_snapshot(unused.id) is None
        assert not (manager.snapshots.dir / unused.id).exists()

    await eventually(unused_gone, WAIT_S)
    assert (await manager.get_snapshot(used.id)).id == used.id
    assert (await user.exec(["true"])).exit_code == 0
    await manager.delete(user.id)

    async def used_gone() -> None:
        assert manager.store.get_snapshot(used.id) is None

    await eventually(used_gone, WAIT_S)


async def test_subtree_delete_removes_exactly_the_subtree(manager: Manager, track: Tracker) -> None:
    """Deleting B's subtree removes B and its descendants, not its parent, sibling or an
    unrelated snapshot; with a sandbox still on a descendant it is refused, nothing deleted."""
    root_sb = await track.create()
    a = await track.snapshot(root_sb, "A")
    other = await track.snapshot(root_sb, "unrelated")
    from_a = await track.restore(a)
    b = await track.snapshot(from_a, "B")
    sibling = await track.snapshot(from_a, "sibling of B")
    from_b = await track.restore(b)
    c = await track.snapshot(from_b, "C")
    from_c = await track.restore(c)
    d = await track.snapshot(from_c, "D")
    assert (b.parent_id, c.parent_id, d.parent_id) == (a.id, b.id, c.id)

    with pytest.raises(Conflict) as refused:
        await manager.delete_snapshot(b.id, subtree=True)
    assert set(refused.value.details["users"]) == {from_b.id, from_c.id}
    assert {s.id for s in await manager.list_snapshots()} >= {a.id, b.id, c.id, d.id}

    for sb in (from_b, from_c):
        await manager.delete(sb.id)
    deleted = await manager.delete_snapshot(b.id, subtree=True)
    assert set(deleted) == {b.id, c.id, d.id}
    left = {s.id for s in await manager.list_snapshots()}
    assert {a.id, sibling.id, other.id} <= left
    assert not left & {b.id, c.id, d.id}
    for gone in (b, c, d):
        assert not (manager.snapshots.dir / gone.id).exists()
