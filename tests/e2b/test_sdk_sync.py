"""The e2b SDK (sync), unchanged, against a real Sietch server: one shared sandbox."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from e2b import (
    ALL_TRAFFIC,
    CommandExitException,
    FilesystemEventType,
    PtySize,
    Sandbox,
    SandboxQuery,
)
from e2b.exceptions import NotFoundException
from tenacity import Retrying, stop_after_delay, wait_fixed

from tests.server.harness import ApiServer


@pytest.fixture(scope="module")
def sbx(e2b_env: ApiServer) -> Iterator[Sandbox]:
    """One sandbox for the module, created with metadata and env as an E2B user would."""
    sandbox = Sandbox.create(metadata={"suite": "e2b-sync"}, envs={"GREETING": "hi"})
    yield sandbox
    sandbox.kill()


def test_run_stdout_stderr_exit_code(sbx: Sandbox) -> None:
    """commands.run returns stdout and stderr, and a non-zero exit raises with its code."""
    result = sbx.commands.run("echo out; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitException) as caught:
        sbx.commands.run("exit 3")
    assert caught.value.exit_code == 3


def test_run_env_cwd_user(sbx: Sandbox) -> None:
    """The create's env, a run's own env, cwd and user reach the command."""
    result = sbx.commands.run(
        'echo "$GREETING $EXTRA $(pwd) $(id -un)"', envs={"EXTRA": "x"}, cwd="/tmp", user="root"
    )
    assert result.stdout == "hi x /tmp root\n"
    assert sbx.commands.run("id -un", user="user").stdout == "user\n"  # E2B's default user


def test_files_roundtrip(sbx: Sandbox) -> None:
    """files.write/read (text and 5 MiB binary), list, exists, make_dir, rename, remove."""
    sbx.files.write("/tmp/e2b/a.txt", "hello")
    assert sbx.files.read("/tmp/e2b/a.txt") == "hello"
    blob = os.urandom(5 << 20)
    sbx.files.write("/tmp/e2b/blob.bin", blob)
    assert bytes(sbx.files.read("/tmp/e2b/blob.bin", format="bytes")) == blob
    assert {e.name for e in sbx.files.list("/tmp/e2b")} == {"a.txt", "blob.bin"}
    assert sbx.files.exists("/tmp/e2b/a.txt")
    assert sbx.files.make_dir("/tmp/e2b/sub") is True
    assert sbx.files.make_dir("/tmp/e2b/sub") is False
    sbx.files.rename("/tmp/e2b/a.txt", "/tmp/e2b/sub/b.txt")
    assert sbx.files.read("/tmp/e2b/sub/b.txt") == "hello"
    sbx.files.remove("/tmp/e2b/sub")
    assert not sbx.files.exists("/tmp/e2b/sub")
    with pytest.raises(NotFoundException):
        sbx.files.read("/tmp/e2b/missing")


def test_background_list_kill(sbx: Sandbox) -> None:
    """A background command is listed, then killed by pid."""
    handle = sbx.commands.run("sleep 600", background=True)
    assert handle.pid in {p.pid for p in sbx.commands.list()}
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        handle.wait()
    assert handle.pid not in {p.pid for p in sbx.commands.list()}


def test_info_list_timeout(sbx: Sandbox) -> None:
    """get_info, list by metadata, and set_timeout moving the end time."""
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.metadata == {"suite": "e2b-sync"}
    found = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-sync"})).next_items()
    assert [s.sandbox_id for s in found] == [sbx.sandbox_id]
    sbx.set_timeout(3600)
    assert sbx.get_info().end_at > info.end_at


def test_unknown_sandbox(e2b_env: ApiServer) -> None:
    """An unknown id: kill returns False, connect raises the SDK's NotFound."""
    assert Sandbox.kill("nonexistent") is False
    with pytest.raises(NotFoundException):
        Sandbox.connect("nonexistent")


def test_stdin(sbx: Sandbox) -> None:
    """A command started with stdin gets what send_stdin sends, and EOF from close_stdin."""
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, "abc")
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "abc"


def test_pty_resize_and_input(sbx: Sandbox) -> None:
    """A PTY shell takes input, and sees the size it was resized to."""
    handle = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(handle.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(handle.pid, b"stty size; exit\n")
    output = bytearray()
    handle.wait(on_pty=output.extend)
    assert b"30 100" in output


def test_watch_dir(sbx: Sandbox) -> None:
    """A directory watch reports a file created in it."""
    sbx.files.make_dir("/tmp/watched")
    watch = sbx.files.watch_dir("/tmp/watched")
    try:
        sbx.files.write("/tmp/watched/new.txt", "x")
        seen: list[tuple[str, object]] = []
        for _ in range(100):
            seen += [(e.name, e.type) for e in watch.get_new_events()]
            if ("new.txt", FilesystemEventType.CREATE) in seen:
                break
        assert ("new.txt", FilesystemEventType.CREATE) in seen
    finally:
        watch.stop()


def test_snapshot_restore_fork(sbx: Sandbox) -> None:
    """A snapshot is listed, a sandbox created from it and a fork both have the file saved,
    and the snapshot is deleted (a second delete: False)."""
    sbx.files.write("/tmp/snap.txt", "saved")
    snap = sbx.create_snapshot("e2b-snap")
    assert snap.snapshot_id in [s.snapshot_id for s in sbx.list_snapshots().next_items()]
    restored = Sandbox.create(snap.snapshot_id)
    try:
        assert restored.files.read("/tmp/snap.txt") == "saved"
    finally:
        restored.kill()
    [fork] = sbx.fork(count=1)
    assert isinstance(fork, Sandbox)
    try:
        assert fork.files.read("/tmp/snap.txt") == "saved"
        assert fork.sandbox_id != sbx.sandbox_id
    finally:
        fork.kill()
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False


def test_metrics_and_network(sbx: Sandbox, e2b_env: ApiServer) -> None:
    """get_metrics returns samples; update_network's deny-all turns Sietch's internet off."""
    metrics = sbx.get_metrics()
    assert metrics and metrics[-1].cpu_count == sbx.get_info().cpu_count
    sbx.update_network({"deny_out": [ALL_TRAFFIC], "allow_out": ["10.9.8.7"]})
    record = httpx.get(
        f"{e2b_env.url}/api/v1/sandboxes/{sbx.sandbox_id}", headers=e2b_env.headers
    ).json()
    assert record["network"]["internet"] is False
    assert "10.9.8.7" in str(record["network"]["allow"])
    sbx.update_network({})


def test_other_port_through_sandbox_url(sbx: Sandbox, e2b_env: ApiServer) -> None:
    """A guest server's port answers at E2B_SANDBOX_URL with E2b-Sandbox-Port and the
    sandbox's access token; without the token it is refused."""
    sbx.files.write("/tmp/www/hello.txt", "from the guest")
    server = sbx.commands.run("python3 -m http.server 8000 --directory /tmp/www", background=True)
    sandbox = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
    token = {"X-Access-Token": sbx._envd_access_token or ""}
    try:
        for attempt in Retrying(stop=stop_after_delay(180), wait=wait_fixed(0.2), reraise=True):
            with attempt:
                answer = httpx.get(
                    f"{e2b_env.url}/hello.txt", headers={**sandbox, **token}, timeout=60
                )
                assert answer.status_code == 200, answer.text
        assert answer.text == "from the guest"
        refused = httpx.get(f"{e2b_env.url}/hello.txt", headers=sandbox, timeout=60)
        assert refused.status_code == 401
    finally:
        server.kill()
