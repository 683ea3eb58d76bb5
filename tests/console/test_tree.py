"""The snapshot tree page: a branching tree three levels deep, built through the API, is
drawn with exactly the API's parent links; a restore from a node in the page puts the
new sandbox beside it; a delete of a snapshot in use is refused with its reason."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.console.conftest import Console, create


def snapshot(api: httpx.Client, sandbox_id: str, name: str) -> str:
    taken = api.post(f"/sandboxes/{sandbox_id}/snapshots", json={"name": name})
    assert taken.status_code == 201, taken.text
    snap_id: str = taken.json()["id"]
    return snap_id


def restore(api: httpx.Client, made: list[str], snap_id: str) -> str:
    restored = api.post(f"/snapshots/{snap_id}/restore", json={})
    assert restored.status_code == 201, restored.text
    made.append(restored.json()["id"])
    return made[-1]


def test_the_tree_draws_the_api_parent_links(
    console: Console, api: httpx.Client, cleanup: list[str]
) -> None:
    """root -> (a -> a1, b): the DOM's edges are the API's parent links; restoring a1 in
    the page shows the new sandbox beside a1, restored from it; deleting root is refused."""
    first = create(api, cleanup, labels={"test": "tree"})
    root = snapshot(api, first, "root")
    a = snapshot(api, restore(api, cleanup, root), "a")
    b = snapshot(api, restore(api, cleanup, root), "b")
    a1 = snapshot(api, restore(api, cleanup, a), "a1")
    try:
        snaps = api.get("/snapshots").json()["data"]
        ours = {s["id"] for s in snaps} & {root, a, b, a1}
        links = {(s["parent_id"], s["id"]) for s in snaps if s["parent_id"] in ours}
        assert links == {(root, a), (root, b), (a, a1)}

        console.sign_in()
        page = console.page
        page.goto(console.url + "snapshots")
        drawn = page.eval_on_selector_all(
            "#tree path.edge:not(.restored)",
            "(es) => es.map((e) => [e.dataset.parent, e.dataset.child])",
        )
        assert {(p, c) for p, c in drawn if c in ours} == links
        console.shot("snapshots")

        page.get_by_role("button", name=f"Restore {a1}").click()
        expect(page.get_by_role("status")).to_contain_text(f"from {a1}")
        new = re.search(r"restored (sb-\w+)", page.get_by_role("status").inner_text())
        assert new, page.get_by_role("status").inner_text()
        cleanup.append(new[1])
        beside = page.locator(f"#tree [data-restored-from='{a1}'][data-sandbox='{new[1]}']")
        expect(beside).to_have_count(1)
        assert api.get(f"/sandboxes/{new[1]}").json()["snapshot_id"] == a1

        page.get_by_role("button", name=f"Delete {root}").click()
        expect(page.get_by_role("alert")).to_contain_text("still used by")
        assert api.get(f"/snapshots/{root}").status_code == 200
    finally:
        for sandbox_id in cleanup:
            api.delete(f"/sandboxes/{sandbox_id}")
        cleanup.clear()
        for snap_id in (a1, b, a, root):
            api.delete(f"/snapshots/{snap_id}")
