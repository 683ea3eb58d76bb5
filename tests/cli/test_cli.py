"""The ``sietch`` command, run as a subprocess through its installed entry point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pexpect

from sietch import Sandbox
from tests.cli.conftest import SIETCH, Run
from tests.conftest import short_tmpdir
from tests.server.harness import ApiServer, free_port


def test_ls_and_info(sietch_cli: Run, sandbox_id: str) -> None:
    """ls shows the sandbox (table, quiet and JSON); info shows it and the server."""
    table = sietch_cli("ls")
    assert table.returncode == 0
    assert sandbox_id in table.stdout.decode()
    assert sandbox_id in sietch_cli("ls", "-q", "--label", "suite=cli").stdout.decode().split()
    listed = json.loads(sietch_cli("ls", "--json").stdout)
    assert any(s["id"] == sandbox_id and s["state"] == "running" for s in listed)
    info = json.loads(sietch_cli("info", sandbox_id, "--json").stdout)
    assert info["labels"] == {"suite": "cli"}
    server = json.loads(sietch_cli("info", "--json").stdout)
    assert server["accel"] in ("kvm", "tcg")


def test_exec_streams_and_returns_exit_code(sietch_cli: Run, sandbox_id: str) -> None:
    """exec prints stdout/stderr separately and exits with the command's status."""
    done = sietch_cli("exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert done.returncode == 7
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"
    assert sietch_cli("exec", sandbox_id, "true").returncode == 0


def test_exec_stdin_and_json(sietch_cli: Run, sandbox_id: str) -> None:
    """exec -i forwards stdin; --json prints a machine-readable result."""
    done = sietch_cli("exec", "-i", sandbox_id, "tr a-z A-Z", input=b"shout\n")
    assert done.stdout == b"SHOUT\n"
    result = json.loads(sietch_cli("exec", "--json", sandbox_id, "echo hi; exit 2").stdout)
    assert result["stdout"] == "hi\n"
    assert result["exit_code"] == 2


def test_cp_both_ways(sietch_cli: Run, sandbox_id: str, tmp_path: Path) -> None:
    """cp copies a binary file into the sandbox and back, byte for byte."""
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(1 << 20))
    up = sietch_cli("cp", str(src), f"{sandbox_id}:/tmp/in/")
    assert up.returncode == 0, up.stderr.decode()
    check = sietch_cli("exec", sandbox_id, "wc -c < /tmp/in/data.bin")
    assert check.stdout.strip() == str(1 << 20).encode()
    back = tmp_path / "back.bin"
    down = sietch_cli("cp", f"{sandbox_id}:/tmp/in/data.bin", str(back))
    assert down.returncode == 0, down.stderr.decode()
    assert back.read_bytes() == src.read_bytes()
    missing = sietch_cli("cp", f"{sandbox_id}:/tmp/none", str(tmp_path / "none"))
    assert missing.returncode == 1
    assert b"file_not_found" in missing.stderr
    assert not (tmp_path / "none").exists()


def test_logs_show_the_console(sietch_cli: Run, sandbox_id: str) -> None:
    """logs prints the guest's serial console."""
    done = sietch_cli("logs", sandbox_id)
    assert done.returncode == 0
    assert done.stdout.strip()


def test_errors_are_one_line_and_exit_1(sietch_cli: Run) -> None:
    """An unknown id is a short red line on stderr and exit status 1, no traceback."""
    done = sietch_cli("exec", "sb-000000000000", "true")
    assert done.returncode == 1
    assert b"sandbox_not_found" in done.stderr
    assert b"Traceback" not in done.stderr


def test_rm_several_and_all(sietch_cli: Run) -> None:
    """rm takes several ids; rm --all --label removes exactly the labelled ones."""
    with ThreadPoolExecutor(3) as pool:  # three boots at once: this is the slow part
        made = pool.map(lambda _: sietch_cli("create", "--label", "batch=rm", "--json"), range(3))
        ids = sorted(json.loads(done.stdout)["id"] for done in made)
    done = sietch_cli("rm", ids[0], ids[1])
    assert done.returncode == 0
    assert done.stdout.decode().split() == ids[:2]
    done = sietch_cli("rm", "--all", "--label", "batch=rm")
    assert done.stdout.decode().split() == ids[2:]
    remaining = sietch_cli("ls", "-q", "--label", "batch=rm").stdout.decode().split()
    assert remaining == []


def test_shell_in_a_real_pty(api_server: ApiServer, sandbox_id: str) -> None:
    """sietch shell: type a command in a real terminal, see its output, exit cleanly."""
    child = pexpect.spawn(
        str(SIETCH), ["shell", sandbox_id], env=api_server.env, dimensions=(30, 100), timeout=60
    )
    try:
        child.expect(r"[#$] ")
        child.sendline("echo $((6 * 7)); stty size")
        child.expect("42")
        child.expect("30 100")
        child.setwinsize(40, 120)  # SIGWINCH reaches the CLI, which resizes the remote PTY
        child.sendline("sleep 0.5; stty size")
        child.expect("40 120")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


def test_shell_hangup_hangs_up_the_guest_shell(api_server: ApiServer, sandbox_id: str) -> None:
    """When sietch shell's own terminal goes away (SIGHUP), the guest's shell goes too."""
    child = pexpect.spawn(str(SIETCH), ["shell", sandbox_id], env=api_server.env, timeout=60)
    child.expect(r"[#$] ")
    child.kill(signal.SIGHUP)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 129
    with Sandbox.connect(sandbox_id, url=api_server.url, api_key=api_server.api_key) as sb:
        deadline = time.monotonic() + 20
        while [p for p in sb.process.list() if p.pty and p.running]:
            assert time.monotonic() < deadline, sb.process.list()
            time.sleep(0.2)


def test_serve_refuses_no_auth_off_loopback(tmp_path: Path) -> None:
    """serve --no-auth on a non-loopback address is refused before anything starts."""
    env = {**os.environ, "SIETCH_STATE_DIR": str(tmp_path)}
    child = pexpect.spawn(
        str(SIETCH), ["serve", "--no-auth", "--host", "0.0.0.0"], env=env, timeout=30
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert b"loopback" in (child.before or b"")


def test_serve_prints_a_new_key_once_and_stores_its_hash() -> None:
    """First start prints a key (stored hashed, 0600); the key works; a restart prints none."""
    state = short_tmpdir("stc")
    port = free_port()
    env = {**os.environ, "SIETCH_STATE_DIR": str(state)}
    servers: list[pexpect.spawn] = []
    try:
        first = pexpect.spawn(str(SIETCH), ["serve", "--port", str(port)], env=env, timeout=60)
        servers.append(first)
        first.expect(r"(sk-sietch-[A-Za-z0-9_-]+)")
        key = first.match.group(1).decode()
        first.expect("Uvicorn running on")  # listening: startup completes just before
        url = f"http://127.0.0.1:{port}/api/v1/info"
        assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        stored = b"".join(p.read_bytes() for p in state.glob("tenants.db*"))
        assert key.encode() not in stored
        assert (state / "tenants.db").stat().st_mode & 0o777 == 0o600
        first.kill(signal.SIGINT)
        first.expect(pexpect.EOF)
        second = pexpect.spawn(str(SIETCH), ["serve", "--port", str(port)], env=env, timeout=60)
        servers.append(second)
        second.expect("Uvicorn running on")
        assert b"sk-sietch-" not in (second.before or b"")
        second.kill(signal.SIGINT)
        second.expect(pexpect.EOF)
    finally:
        for server in servers:  # a failed step must not leave one running, or its mount
            if server.isalive():
                server.kill(signal.SIGINT)
                server.expect(pexpect.EOF)
        shutil.rmtree(state, ignore_errors=True)


def test_expose_ports_unexpose(sietch_cli: Run, sandbox_id: str) -> None:
    """expose prints host:port (the same twice), ports and info list it, unexpose removes it."""
    done = sietch_cli("expose", sandbox_id, "8000")
    assert done.returncode == 0, done.stderr.decode()
    address = done.stdout.decode().strip()
    assert address.startswith("127.0.0.1:")
    assert sietch_cli("expose", sandbox_id, "8000").stdout.decode().strip() == address
    host_port = int(address.rsplit(":", 1)[1])
    listed = json.loads(sietch_cli("ports", sandbox_id, "--json").stdout)
    assert listed == [{"guest_port": 8000, "host": "127.0.0.1", "host_port": host_port}]
    assert address in sietch_cli("ports", sandbox_id).stdout.decode()
    assert f"8000->{address}" in sietch_cli("info", sandbox_id).stdout.decode()
    assert sietch_cli("unexpose", sandbox_id, "8000").returncode == 0
    assert json.loads(sietch_cli("ports", sandbox_id, "--json").stdout) == []
    bad = sietch_cli("expose", sandbox_id, "0")
    assert bad.returncode != 0 and b"65535" in bad.stderr


def test_network_set_and_show(sietch_cli: Run, sandbox_id: str) -> None:
    """network with options replaces the policy (--json prints it); without, shows it."""
    try:
        options = ["--no-internet", "--allow", "example.com", "--json"]
        done = sietch_cli("network", sandbox_id, *options)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout) == {"internet": False, "allow": ["example.com"]}
        shown = sietch_cli("network", sandbox_id)
        assert shown.returncode == 0, shown.stderr.decode()
        text = shown.stdout.decode()
        assert "internet: off" in text and "example.com" in text
        info = json.loads(sietch_cli("info", sandbox_id, "--json").stdout)
        assert info["network"] == {"internet": False, "allow": ["example.com"]}
        bad = sietch_cli("network", sandbox_id, "--allow", "not a domain!")
        assert bad.returncode == 1 and b"validation_failed" in bad.stderr
        assert b"Traceback" not in bad.stderr
    finally:
        sietch_cli("network", sandbox_id, "--internet")
    assert "internet: on" in sietch_cli("network", sandbox_id).stdout.decode()


def test_ide_and_desktop_links(sietch_cli: Run, sandbox_id: str) -> None:
    """``sietch ide ID`` prints a working link; ``sietch desktop ID`` of a sandbox without a
    desktop says so on stderr with exit status 1."""
    done = sietch_cli("ide", sandbox_id, "--ttl", "60")
    assert done.returncode == 0, done.stderr.decode()
    url = done.stdout.decode().strip()
    assert httpx.get(url, timeout=30).status_code == 303
    refused = sietch_cli("desktop", sandbox_id)
    assert refused.returncode == 1
    assert b"has no desktop" in refused.stderr
