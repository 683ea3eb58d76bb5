"""A stand-in internet: a network namespace with web and DNS servers, joined to the host by veth.

Tests send traffic only to the addresses made here (DESIGN.md): a random /24
of 198.18.0.0/15 (the benchmarking range, which sandboxes treat as public),
with ``.1`` on the host's end of the veth and ``.2``/``.3`` inside.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""


@dataclass
class Outside:
    name: str
    host_end: str
    web: str
    """Serves ``/hello`` ("hello from outside") on port 80, DNS on port 53, UDP echo on 7."""
    other: str
    """A second address of the same servers, for allow-lists that leave it out."""
    names: dict[str, str]
    root: Path
    """The web server's document root: a test may put files there to serve."""


def uplinks(state_dir: Path) -> list[int]:
    """slirp4netns processes of sandboxes under ``state_dir`` (their output goes to a log in
    the sandbox's directory)."""
    found = subprocess.run(["pgrep", "slirp4netns"], check=False, capture_output=True)
    mine = []
    for pid in found.stdout.split():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{int(pid)}/fd/1").startswith(f"{state_dir}/"):
                mine.append(int(pid))
    return mine


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def outside_network() -> Iterator[Outside]:
    tag = secrets.token_hex(3)
    name, veth = f"sietch-out-{tag}", f"so{tag}"
    net = f"198.18.{secrets.randbelow(256)}"
    web, other = f"{net}.2", f"{net}.3"
    names = {"good.test": web, "www.good.test": web, "other.test": other}
    procs: list[subprocess.Popen[bytes]] = []
    root = Path(tempfile.mkdtemp(prefix="sietch-out-"))
    try:
        _ip("netns", "add", name)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("addr", "add", f"{net}.1/24", "dev", veth)
        _ip("link", "set", veth, "up")
        for addr in (web, other):
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        (root / "hello").write_text("hello from outside\n")
        run = ["ip", "netns", "exec", name]
        procs.append(
            subprocess.Popen(
                [*run, sys.executable, "-m", "http.server", "80", "-d", str(root)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(subprocess.Popen([*run, sys.executable, "-c", UDP_ECHO]))
        pairs = [f"{k}={v}" for k, v in names.items()]
        procs.append(
            subprocess.Popen([*run, sys.executable, str(HERE / "dns_server.py"), "0.0.0.0", *pairs])
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://{web}/hello", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Outside(name=name, host_end=f"{net}.1", web=web, other=other, names=names, root=root)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
