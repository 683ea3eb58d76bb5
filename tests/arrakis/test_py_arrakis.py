"""py-arrakis 2.0.0, unchanged, against Sietch's /v1: the switch is a URL change.

One module-scoped VM carries the read-mostly tests; restores add a few more.
The server (and every VM) is torn down by the ``api_server`` fixture.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import requests
from py_arrakis import Sandbox, SandboxManager

from tests.server.harness import ApiServer

MAIN = "arr-main"


@pytest.fixture(scope="module")
def arrakis_url(api_server: ApiServer) -> str:
    """The base URL a py-arrakis user passes, with the API key as URL credentials."""
    return f"http://arrakis:{api_server.api_key}@127.0.0.1:{api_server.port}"


@pytest.fixture(scope="module")
def manager(arrakis_url: str) -> SandboxManager:
    return SandboxManager(arrakis_url)


@pytest.fixture(scope="module")
def main_vm(manager: SandboxManager) -> Iterator[Sandbox]:
    """One VM shared by the module's tests."""
    sandbox = manager.start_sandbox(MAIN)
    yield sandbox
    manager.destroy_all()


def test_health_is_public_and_vms_need_the_key(api_server: ApiServer) -> None:
    """/v1/health answers without a key, as Arrakis' did; /v1/vms refuses a missing key."""
    health = httpx.get(f"{api_server.url}/v1/health").json()
    assert health["status"] == "healthy" and health["timestamp"].endswith("Z")
    refused = httpx.get(f"{api_server.url}/v1/vms")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"]
    bearer = httpx.get(f"{api_server.url}/v1/vms", headers=api_server.headers)
    assert bearer.status_code == 200


def test_start_reports_arrakis_fields(main_vm: Sandbox) -> None:
    """info() reads a running VM's name, status and address in Arrakis' shape."""
    info = main_vm.info()
    assert info["name"] == MAIN
    assert info["status"] == "RUNNING"
    assert info["ip"] == "10.0.2.15/24"
    assert info["tap_device_name"] == ""


def test_exposed_ports_are_port_forwards(
    main_vm: Sandbox, http: httpx.Client, arrakis_url: str
) -> None:
    """A port exposed through Sietch's API is listed in portForwards, in Arrakis' shape."""
    (native,) = http.get("/sandboxes", params={"label": f"arrakis.vm={MAIN}"}).json()["data"]
    exposed = http.post(f"/sandboxes/{native['id']}/ports", json={"port": 8000})
    assert exposed.status_code == 201, exposed.text
    host, host_port = exposed.json()["host"], exposed.json()["host_port"]
    try:
        assert main_vm.info()["port_forwards"] == [
            {
                "host_port": str(host_port),
                "guest_port": "8000",
                "description": f"{host}:{host_port}",
            }
        ]
        vms = requests.get(f"{arrakis_url}/v1/vms").json()["vms"]
        (listed,) = [vm for vm in vms if vm["vmName"] == MAIN]
        assert listed["portForwards"] == [
            {"hostPort": str(host_port), "guestPort": "8000", "description": f"{host}:{host_port}"}
        ]
    finally:
        http.delete(f"/sandboxes/{native['id']}/ports/8000")
    assert "port_forwards" not in main_vm.info()


def test_run_cmd_interleaves_output_and_reports_exit(main_vm: Sandbox) -> None:
    """run_cmd returns stdout+stderr as output, and Go's exit text as error."""
    ok = main_vm.run_cmd("pwd; echo out; echo err >&2")
    assert ok == {"output": "/tmp/server_files\nout\nerr\n", "error": ""}
    failed = main_vm.run_cmd("echo bad; exit 3")
    assert failed == {"output": "bad\n", "error": "exit status 3"}


def test_run_cmd_non_blocking_returns_at_once(main_vm: Sandbox) -> None:
    """blocking=False starts the command and returns before it ends: the command waits
    for a file that is only written after run_cmd returned."""
    waiting = "until [ -e go ]; do sleep 0.1; done; echo late > late.txt"
    assert main_vm.run_cmd(waiting, blocking=False) == {"output": "", "error": ""}
    main_vm.upload_files([{"path": "go", "content": ""}])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if main_vm.download_files(["late.txt"])[0]["content"] == "late\n":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the background command never wrote its file")


def test_upload_and_download_files(main_vm: Sandbox) -> None:
    """Relative paths live under /tmp/server_files; absolute ones are read where written."""
    main_vm.upload_files(
        [
            {"path": "hello.txt", "content": "hello\n"},
            {"path": "/root/deep/dir/abs.txt", "content": "absolute ✓"},
        ]
    )
    files = main_vm.download_files(["hello.txt", "/root/deep/dir/abs.txt", "missing.txt"])
    assert [f["path"] for f in files] == ["hello.txt", "/root/deep/dir/abs.txt", "missing.txt"]
    assert files[0]["content"] == "hello\n" and not files[0]["error"]
    assert files[1]["content"] == "absolute ✓"
    assert files[2]["error"].startswith("Failed to read file")
    assert main_vm.run_cmd("cat hello.txt")["output"] == "hello\n"


def test_unknown_vm_is_404(manager: SandboxManager) -> None:
    """A VM that does not exist is a 404 with Arrakis' error body (Arrakis said 500)."""
    with pytest.raises(requests.HTTPError) as caught:
        Sandbox(manager._api, "no-such-vm").info()
    assert caught.value.response.status_code == 404
    assert "no-such-vm" in caught.value.response.json()["error"]["message"]


def test_taken_name_is_refused(manager: SandboxManager, main_vm: Sandbox) -> None:
    """Starting a second VM under a running VM's name is a 409, not a second VM."""
    with pytest.raises(requests.HTTPError) as caught:
        manager.start_sandbox(MAIN)
    assert caught.value.response.status_code == 409


def test_host_paths_are_refused(api_server: ApiServer, arrakis_url: str) -> None:
    """kernel/rootfs/initramfs naming host files Sietch does not know are refused (400)."""
    for field in ("kernel", "rootfs", "initramfs"):
        response = requests.post(
            f"{arrakis_url}/v1/vms", json={"vmName": f"evil-{field}", field: "/etc/shadow"}
        )
        assert response.status_code == 400, response.text
        assert "Sietch" in response.json()["error"]["message"]


def test_pause_and_resume(main_vm: Sandbox, arrakis_url: str) -> None:
    """update_state('paused') stops the VM; PATCH 'resume' lets it run on."""
    main_vm.update_state("paused")
    assert main_vm.info()["status"] == "PAUSED"
    response = requests.patch(f"{arrakis_url}/v1/vms/{MAIN}", json={"status": "resume"})
    assert response.status_code == 200 and response.json()["success"] is True
    assert main_vm.info()["status"] == "RUNNING"
    assert main_vm.run_cmd("echo back")["output"] == "back\n"


def test_snapshot_restore_while_original_runs(manager: SandboxManager, main_vm: Sandbox) -> None:
    """Restore into a new name while the original runs; snapshot the restored VM; restore again."""
    main_vm.upload_files([{"path": "state.txt", "content": "v1"}])
    assert main_vm.snapshot("snap-v1") == "snap-v1"
    main_vm.upload_files([{"path": "state.txt", "content": "v2"}])

    restored = manager.restore("arr-restored", "snap-v1")
    assert restored.info()["status"] == "RUNNING"
    assert restored.download_files(["state.txt"])[0]["content"] == "v1"
    assert main_vm.download_files(["state.txt"])[0]["content"] == "v2"

    restored.upload_files([{"path": "state.txt", "content": "v1b"}])
    assert restored.snapshot("snap-v1b") == "snap-v1b"
    again = manager.restore("arr-again", "snap-v1b")
    assert again.download_files(["state.txt"])[0]["content"] == "v1b"
    restored.destroy()
    again.destroy()


def test_snapshot_id_is_unique(main_vm: Sandbox) -> None:
    """A snapshotId that is already taken is a 409, not an overwrite."""
    main_vm.snapshot("snap-dup")
    with pytest.raises(requests.HTTPError) as caught:
        main_vm.snapshot("snap-dup")
    assert caught.value.response.status_code == 409


def test_concurrent_restores(manager: SandboxManager, main_vm: Sandbox) -> None:
    """Several restores of one snapshot at once all come up, each with its own state."""
    main_vm.snapshot("snap-many")
    names = [f"arr-many-{i}" for i in range(3)]
    errors: list[BaseException] = []

    def restore(name: str) -> None:
        try:
            manager.restore(name, "snap-many")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=restore, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        for name in names:
            vm = Sandbox(manager._api, name)
            vm.upload_files([{"path": "me.txt", "content": name}])
        for name in names:
            vm = Sandbox(manager._api, name)
            assert vm.download_files(["me.txt"])[0]["content"] == name
    finally:  # the restores that came up, even if one failed, so later tests see none
        for vm in manager.list_all():
            if vm.name in names:
                vm.destroy()


def test_list_and_destroy_all_leave_own_api_sandboxes(
    manager: SandboxManager, main_vm: Sandbox, http: httpx.Client
) -> None:
    """list_all sees /v1 VMs only; destroy_all removes them and leaves /api/v1 sandboxes be."""
    other = manager.start_sandbox("arr-other")
    native = http.post("/sandboxes", json={}).json()
    try:
        names = sorted(s.name for s in manager.list_all())
        assert names == sorted([MAIN, "arr-other"])
        other.destroy()
        assert [s.name for s in manager.list_all()] == [MAIN]
        manager.destroy_all()
        assert manager.list_all() == []
        assert http.get(f"/sandboxes/{native['id']}").json()["state"] == "running"
    finally:
        http.delete(f"/sandboxes/{native['id']}")


@pytest.mark.slow
def test_no_30_second_command_limit(manager: SandboxManager) -> None:
    """A command running longer than Arrakis' 30-second cut-off finishes with its output."""
    vm = manager.start_sandbox("arr-long")
    try:
        result = vm.run_cmd("sleep 31; echo finished")
        assert result == {"output": "finished\n", "error": ""}
    finally:
        vm.destroy()
