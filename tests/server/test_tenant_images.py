"""Images and resumes under tenants, on a real server.

Tenant ``ia`` imports one tiny OCI image (busybox and an env line: one boot, for its
template). Tenant ``ib`` then gets for it exactly what it gets for a name that does not
exist, wherever it names it; the admin sees it. The image disk quota counts ``ia``'s
images. A hibernated sandbox of tenant ``ir`` is refused its resume over the quota and
stays hibernated until the quota frees.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sietch.images.busybox import busybox
from tests.builder.helpers import docker_save, layer_tar
from tests.server.harness import ApiServer
from tests.server.test_tenants import assert_quota_429, error

IMAGE = "ia-app"
UNKNOWN = "no-such"


@dataclass
class World:
    server: ApiServer
    keys: dict[str, str]

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.keys[who]}"},
            timeout=300,
        )


def _oci(tmp: Path) -> bytes:
    layer = layer_tar([
        ("bin", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
        ("bin/busybox", busybox().read_bytes(), {"type": tarfile.REGTYPE, "mode": 0o755}),
        ("bin/sh", None, {"type": tarfile.SYMTYPE, "linkname": "busybox"}),
    ])  # fmt: skip
    config: dict[str, object] = {"architecture": "amd64", "config": {"Env": ["PATH=/bin"]}}
    return docker_save(tmp / "image.tar", [layer], config).read_bytes()


def _context(dockerfile: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    return buf.getvalue()


def _last_event(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    event: dict[str, Any] = json.loads(response.text.strip().splitlines()[-1])
    return event


def build(http: httpx.Client, name: str, dockerfile: str) -> httpx.Response:
    return http.post("/api/v1/images", params={"name": name}, content=_context(dockerfile))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = ApiServer(pool_size=0, create_burst=100)
    keys = {"admin": server.api_key}
    for tenant in ("ia", "ib", "ir"):
        keys[tenant] = server.tenants.create_key(tenant, "test")[1]
    server.start()
    try:
        made = World(server, keys)
        with made.http("ia") as a:
            archive = _oci(tmp_path_factory.mktemp("oci"))
            done = _last_event(a.post("/api/v1/images/import", params={"name": IMAGE},
                                      content=archive))  # fmt: skip
            assert done["type"] == "done", done
        yield made
    finally:
        server.cleanup()


def test_another_tenants_image_is_unknown(world: World) -> None:
    """ib gets for ia's image what it gets for a name nobody has (404 on GET, DELETE and
    create, 'no image' for a FROM, 'not an image Sietch knows' for an Arrakis rootfs); it
    is not listed, nor is its template, which ib can't restore; ia and the admin see it,
    with its tenant."""
    with world.http("ib") as b:
        assert IMAGE not in [i["name"] for i in b.get("/api/v1/images").json()["data"]]

        def tries(name: str) -> list[tuple[str, str, dict[str, Any]]]:
            return [
                ("GET", f"/api/v1/images/{name}", {}),
                ("DELETE", f"/api/v1/images/{name}", {}),
                ("POST", "/api/v1/sandboxes", {"json": {"image": name}}),
                ("POST", "/v1/vms", {"json": {"vmName": "bvm", "rootfs": name}}),
            ]

        for (method, path, options), (_, nowhere, other) in zip(
            tries(IMAGE), tries(UNKNOWN), strict=True
        ):
            got = error(b.request(method, path, **options))
            expected = error(b.request(method, nowhere, **other))
            assert got[0] in (400, 404), (path, got)
            assert got[:2] == expected[:2], (path, got, expected)
            assert got[2].replace(IMAGE, "NAME") == expected[2].replace(UNKNOWN, "NAME")
        over = error(build(b, "ib-app", f"FROM {IMAGE}\nENV A=1\n"))
        unknown = error(build(b, "ib-app", f"FROM {UNKNOWN}\nENV A=1\n"))
        assert over[:2] == unknown[:2] == (404, "image_not_found")
        assert over[2].replace(IMAGE, "NAME") == unknown[2].replace(UNKNOWN, "NAME")
        assert IMAGE not in over[2].partition("known:")[2]  # ib's and the built-ins only
        assert b.get("/api/v1/sandboxes").json()["data"] == []  # no VM was made
        assert b.post("/api/v1/images/prune").status_code == 403  # the shared cache: admin's
    with world.http("admin") as admin:
        templates = admin.get("/api/v1/snapshots", params={"templates": True}).json()["data"]
    template = next(t["id"] for t in templates if t["image"] == IMAGE)
    with world.http("ib") as b:
        seen = b.get("/api/v1/snapshots", params={"templates": True}).json()["data"]
        assert template not in [t["id"] for t in seen]
        restored = error(b.post(f"/api/v1/snapshots/{template}/restore", json={}))
        nowhere = error(b.post("/api/v1/snapshots/snap-000000000000/restore", json={}))
        assert restored == (*nowhere[:2], nowhere[2].replace("snap-000000000000", template))
    for who in ("ia", "admin"):
        with world.http(who) as c:
            listed = {i["name"]: i for i in c.get("/api/v1/images").json()["data"]}
            assert listed[IMAGE]["tenant"] == "ia" and listed["minimal"]["tenant"] is None
            assert {"default", "minimal"} <= set(listed)
            assert c.get(f"/api/v1/images/{IMAGE}").status_code == 200


def test_a_name_another_tenant_holds_cannot_be_built_over(world: World) -> None:
    """ib's build or import under ia's image name is refused (409) before anything runs,
    and ia's image is left as it was."""
    with world.http("ib") as b:
        built = build(b, IMAGE, "FROM minimal\nENV A=1\n")
        assert built.status_code == 409, built.text
        imported = b.post("/api/v1/images/import", params={"name": IMAGE}, content=b"")
        assert imported.status_code == 409, imported.text
    with world.http("admin") as admin:
        assert admin.get(f"/api/v1/images/{IMAGE}").json()["tenant"] == "ia"


def test_image_disk_quota_counts_the_tenants_images(world: World) -> None:
    """With a quota below what ia's image takes, ia's next build and import answer 429
    quota_exceeded before they start; ib, with the same quota and no images, is not held
    back (its bad Dockerfile is what refuses it)."""
    with world.http("ia") as a:
        used = a.get("/api/v1/tenant").json()["usage"]["image_disk_mib"]
    assert used >= 2  # so that the quota below it still lets ib (no images) through
    for tenant in ("ia", "ib"):
        world.server.tenants.set_quota(tenant, max_image_disk_mib=used - 1)
    try:
        with world.http("ia") as a, world.http("ib") as b:
            assert a.get("/api/v1/tenant").json()["quota"]["max_image_disk_mib"] == used - 1
            assert_quota_429(build(a, "ia-two", "FROM minimal\nENV A=1\n"), "max_image_disk_mib")
            imported = a.post("/api/v1/images/import", params={"name": "ia-two"}, content=b"")
            assert_quota_429(imported, "max_image_disk_mib")
            assert error(build(b, "ib-two", "FROM minimal\nNOPE x\n"))[0] == 400
    finally:
        for tenant in ("ia", "ib"):
            world.server.tenants.set_quota(tenant, max_image_disk_mib=None)


def test_resume_over_quota_is_429_and_stays_hibernated(world: World) -> None:
    """A hibernated sandbox's resume (explicit, or an exec's auto-resume) is refused 429
    while its tenant is at its sandbox quota; it stays hibernated, and resumes with its
    files once the quota frees."""
    with world.http("ir") as r:
        made = r.post("/api/v1/sandboxes", json={"image": "minimal"})
        assert made.status_code == 201, made.text
        sb = f"/api/v1/sandboxes/{made.json()['id']}"
        wrote = r.put(f"{sb}/files", params={"path": "/root/kept"}, content=b"still here")
        assert wrote.is_success, wrote.text
        asleep = r.post(f"{sb}/hibernate")
        assert asleep.status_code == 200, asleep.text
        world.server.tenants.set_quota("ir", max_sandboxes=0)
        try:
            assert_quota_429(r.post(f"{sb}/resume"), "max_sandboxes")
            assert_quota_429(r.post(f"{sb}/exec", json={"cmd": ["true"]}), "max_sandboxes")
            assert r.get(sb).json()["state"] == "hibernated"
        finally:
            world.server.tenants.set_quota("ir", max_sandboxes=None)
        woken = r.post(f"{sb}/resume")
        assert woken.status_code == 200, woken.text
        assert woken.json()["state"] == "running"
        kept = r.get(f"{sb}/files", params={"path": "/root/kept"})
        assert kept.content == b"still here"
