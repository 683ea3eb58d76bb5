"""The synchronous SDK against a real server and real VMs."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

import httpx
import pytest

import sietch
from sietch import Sandbox
from tests.server.harness import ApiServer

pytestmark = pytest.mark.usefixtures("sdk_env")


@pytest.fixture(scope="module")
def sb(sdk_env: None) -> Iterator[Sandbox]:
    """One sandbox for the module's tests (a boot costs seconds under TCG)."""
    with Sandbox.create(labels={"suite": "sdk-sync"}, env={"GREETING": "hej"}) as sandbox:
        yield sandbox


def test_create_list_connect_and_delete_on_exit() -> None:
    """create() boots, list(labels) finds it, connect() reaches it, the with block deletes it."""
    with Sandbox.create(labels={"case": "lifecycle"}) as sandbox:
        assert sandbox.info.state == "running"
        assert [i.id for i in Sandbox.list(labels={"case": "lifecycle"})] == [sandbox.id]
        other = Sandbox.connect(sandbox.id)
        assert other.exec("echo $((1 + 2))").stdout == "3\n"
        other.close()
    with pytest.raises(sietch.SandboxNotFound):
        Sandbox.connect(sandbox.id)


def test_keep_true_survives_the_block() -> None:
    """keep=True leaves the sandbox running after the with block; kill() removes it."""
    with Sandbox.create(keep=True) as sandbox:
        pass
    again = Sandbox.connect(sandbox.id)
    assert again.refresh().state == "running"
    again.kill()
    again.close()
    assert sandbox.id not in {i.id for i in Sandbox.list()}


def test_exec_result(sb: Sandbox) -> None:
    """exec returns stdout, stderr and exit code; a list is an argv; env and cwd apply."""
    result = sb.exec("echo $GREETING; echo oops >&2; exit 4")
    assert (result.stdout, result.stderr, result.exit_code) == ("hej\n", "oops\n", 4)
    assert sb.exec(["printf", "%s|", "a b", "c"]).stdout == "a b|c|"
    assert sb.exec("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sb.exec("echo $X", env={"X": "y"}).stdout == "y\n"


def test_exec_stdin_and_binary_output(sb: Sandbox) -> None:
    """stdin is delivered and output bytes come back exactly."""
    data = bytes(range(256))
    result = sb.exec("cat", stdin=data)
    assert result.stdout_bytes == data


def test_exec_streams_through_callbacks(sb: Sandbox) -> None:
    """on_stdout/on_stderr receive output while the command runs (over the WebSocket)."""
    out: list[bytes] = []
    err: list[bytes] = []
    result = sb.exec(
        "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.05; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert result.exit_code == 0
    assert b"".join(out) == b"1\n2\n3\n"
    assert b"".join(err) == b"e1\ne2\ne3\n"
    assert result.stdout == "1\n2\n3\n"


def test_exec_timeout(sb: Sandbox) -> None:
    """A command that outlives its timeout is killed and reported as timed out."""
    result = sb.exec("echo started; sleep 3600", timeout=1)  # returns only through the kill
    assert result.timed_out
    assert result.exit_code != 0
    assert result.stdout == "started\n"


def test_background_process(sb: Sandbox) -> None:
    """process.start/list/kill/wait drive a background process."""
    handle = sb.exec("sleep 300", background=True)
    assert handle.pid in {p.pid for p in sb.process.list() if p.running}
    handle.kill()
    ended = handle.wait(timeout=10)
    assert ended.exit_code is None or ended.exit_code != 0
    quick = sb.process.start("echo done; exit 2")
    assert quick.wait(timeout=10).exit_code == 2


def test_background_output_and_wait_timeout(sb: Sandbox) -> None:
    """A background process's output can be followed; a wait that times out says so."""
    handle = sb.exec("echo early; sleep 0.5; echo late >&2; exit 4", background=True)
    seen: list[bytes] = []
    result = handle.output(on_stdout=seen.append, on_stderr=seen.append)
    assert (result.stdout, result.stderr, result.exit_code) == ("early\n", "late\n", 4)
    assert b"".join(seen) == b"early\nlate\n"
    sleeper = sb.process.start("sleep 100", tag="sleeper")
    assert {p.tag for p in sb.process.list() if p.pid == sleeper.pid} == {"sleeper"}
    with pytest.raises(sietch.CommandTimeout):
        sleeper.wait(timeout=0.5)
    sleeper.kill()
    assert sleeper.wait(timeout=10).signal == 9


def test_files_accept_bytes_str_and_file_objects(sb: Sandbox) -> None:
    """files.write takes bytes, str and file objects (streamed); read returns the bytes."""
    assert sb.files.write("/tmp/f/a.txt", "héllo").size == len("héllo".encode())
    assert sb.files.read_text("/tmp/f/a.txt") == "héllo"
    sb.files.write("/tmp/f/b.bin", b"\x00\xff")
    assert sb.files.read("/tmp/f/b.bin") == b"\x00\xff"
    big = os.urandom(3 * 1024 * 1024 + 7)
    assert sb.files.write("/tmp/f/big", io.BytesIO(big)).size == len(big)
    sink = io.BytesIO()
    assert sb.files.download("/tmp/f/big", sink) == len(big)
    assert sink.getvalue() == big


def test_files_list_stat_mkdir_rename_remove(sb: Sandbox) -> None:
    """The other file operations, and FileNotFound as a typed error."""
    sb.files.mkdir("/tmp/d/e")
    sb.files.write("/tmp/d/e/x", b"x")
    names = {f.name for f in sb.files.list("/tmp/d/e")}
    assert names == {"x"}
    assert sb.files.stat("/tmp/d/e").is_dir
    moved = sb.files.rename("/tmp/d/e/x", "/tmp/d/y")
    assert moved.size == 1
    assert not sb.files.exists("/tmp/d/e/x")
    sb.files.remove("/tmp/d", recursive=True)
    assert not sb.files.exists("/tmp/d")
    with pytest.raises(sietch.FileNotFound):
        sb.files.read("/tmp/d/y")


def test_pty_is_interactive(sb: Sandbox) -> None:
    """sb.pty() runs a shell in a terminal: typed input is echoed and run."""
    with sb.pty(cols=100, rows=30) as term:
        term.send("stty size; echo $((6 * 7))\n")
        seen = b""
        while b"42" not in seen or b"30 100" not in seen:
            chunk = term.recv(timeout=20)
            assert chunk is not None, seen
            seen += chunk
        term.send("exit 3\n")
        result = term.wait()
    assert result.exit_code == 3


def test_pty_close_hangs_up(sb: Sandbox) -> None:
    """Closing a terminal whose process still runs sends it SIGHUP, as a real hang-up does."""
    term = sb.pty(["sleep", "300"])
    pid = term.pid
    term.close()
    try:
        ended = sb.process.wait(pid, timeout=20)
    except sietch.ProcessNotFound:  # already reaped and forgotten
        return
    assert ended.signal == 1


def test_typed_errors(sb: Sandbox, api_server: ApiServer) -> None:
    """Unknown ids, a wrong key and an unreachable server raise the matching classes."""
    with pytest.raises(sietch.SandboxNotFound):
        Sandbox.connect("sb-000000000000")
    with pytest.raises(sietch.AuthenticationError):
        Sandbox.list(api_key="sk-wrong")
    with pytest.raises(sietch.Unavailable):
        Sandbox.list(url="http://127.0.0.1:9")
    with pytest.raises(sietch.InvalidArgument):
        sb.files.read("/tmp/../etc/shadow")


def test_expose_a_guest_web_server(sb: Sandbox) -> None:
    """expose() reaches a guest http.server from the host and via the proxy; unexpose() ends it."""
    sb.files.write("/srv/hello.txt", b"hello from the sdk\n")
    sb.process.start(["python3", "-m", "http.server", "8000"], cwd="/srv")
    probe = "import socket; socket.create_connection(('127.0.0.1', 8000))"
    for _ in range(200):
        if sb.exec(["python3", "-c", probe]).exit_code == 0:
            break
        time.sleep(0.1)
    port = sb.expose(8000)
    assert sb.expose(8000) == port and sb.ports() == [port]
    assert port in sb.refresh().ports
    assert httpx.get(f"{port.url}/hello.txt", timeout=30).text == "hello from the sdk\n"
    headers = {"Authorization": f"Bearer {os.environ['SIETCH_API_KEY']}"}
    via = httpx.get(sb.proxy_url(8000, "hello.txt"), headers=headers, timeout=30)
    assert via.text == "hello from the sdk\n"
    sb.unexpose(8000)
    assert sb.ports() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{port.url}/hello.txt", timeout=30)
    with pytest.raises(sietch.InvalidArgument):
        sb.expose(70000)
    with pytest.raises(sietch.NotFound):
        sb.unexpose(8000)


def test_browser_links_of_a_sandbox_without_a_desktop(sb: Sandbox) -> None:
    """ide.url() gives a link whose first visit sets the IDE cookie, until ide.revoke();
    desktop.url() of a sandbox without a desktop is a 409 that says how to get one."""
    url = sb.ide.url(ttl=60)
    assert f"/api/v1/sandboxes/{sb.id}/ide/?folder=%2Fhome%2Fuser&token=" in url
    first = httpx.get(url, timeout=30)
    assert first.status_code == 303 and "sietch_ide=" in first.headers["set-cookie"]
    assert sb.ide.revoke() == 1
    refused = httpx.get(url, timeout=30)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    with pytest.raises(sietch.Conflict, match="the 'desktop' image"):
        sb.desktop.url()
    with pytest.raises(sietch.InvalidArgument, match="ttl"):
        sb.desktop.url(ttl=1)
