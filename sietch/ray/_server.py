"""The actor that owns one ``sietch serve --node`` or ``--gateway`` on its Ray node."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import httpx
import ray

from sietch.errors import Unavailable

logger = logging.getLogger(__name__)

Role = Literal["node", "gateway"]
HEALTH = "/api/v1/health"
"""Answered by a node's internal port without the cluster secret, and by a gateway."""
MIN_UPTIME_S = 10.0
"""A server that exits sooner ends its actor only this long after it started: Ray
restarts actors at once, and a server refused by a bad setting would otherwise spin."""


def node_name(node_id: str) -> str:
    """The Sietch node name of the Ray node ``node_id`` (hex): what ``prefer_node`` takes.

    From the Ray node's id, not its host name: several Ray nodes may share a machine.
    """
    return f"ray-{node_id[:12]}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def sietch_command() -> str:
    """The ``sietch`` of this worker's environment (next to its interpreter), else PATH's."""
    beside = Path(sys.executable).with_name("sietch")
    found = str(beside) if beside.exists() else shutil.which("sietch")
    if found is None:
        raise Unavailable(
            f"no sietch command on Ray node {ray.util.get_node_ip_address()}: "
            "pip install 'sietch[server,ray]' on every node"
        )
    return found


class ServerProcess:
    """One Sietch server process on the Ray node this actor is pinned to.

    The server runs under :mod:`sietch.ray._reaper`, which ends it when this actor ends,
    however it ends. When the server exits on its own this actor crashes on purpose, so
    that Ray restarts it (``max_restarts``), with a new server; a node's server adopts
    its sandboxes again from its state directory.
    """

    def __init__(self, role: Role, env: dict[str, str], port: int, state_dir: str | None) -> None:
        """``port``: the gateway's public port or the node's internal one (0: a free one);
        ``env``: the ``SIETCH_*`` settings common to the whole cluster."""
        self.role = role
        host = ray.util.get_node_ip_address()
        self.port = port or free_port(host)
        server_env = {**os.environ, **env, "SIETCH_HOST": host}
        scheme = "https" if server_env.get("SIETCH_TLS_CERT") else "http"
        self.url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"
        if state_dir is not None:
            server_env["SIETCH_STATE_DIR"] = state_dir
        if role == "node":
            server_env["SIETCH_NODE_NAME"] = node_name(ray.get_runtime_context().get_node_id())
            server_env["SIETCH_INTERNAL_PORT"] = str(self.port)
            server_env["SIETCH_NODE_URL"] = self.url
        else:
            server_env["SIETCH_PORT"] = str(self.port)
        self._stopping = threading.Event()
        self._started = time.monotonic()
        reaper = [sys.executable, "-m", "sietch.ray._reaper"]
        self._reaper = subprocess.Popen(
            [*reaper, sietch_command(), "serve", f"--{role}"],
            stdin=subprocess.PIPE,
            env=server_env,
        )
        threading.Thread(target=self._watch, name="sietch-server-watch", daemon=True).start()

    def _watch(self) -> None:
        status = self._reaper.wait()
        if not self._stopping.is_set():
            # ready() reports the exit meanwhile, rather than a dead actor.
            time.sleep(max(0.0, self._started + MIN_UPTIME_S - time.monotonic()))
            logger.error(
                "sietch serve --%s exited with status %s: ending its actor, for Ray to "
                "restart both",
                self.role,
                status,
            )
            os._exit(1)

    def ready(self, timeout_s: float) -> str:
        """Wait until the server answers its health check; returns its URL."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._reaper.poll() is not None:
                raise Unavailable(f"sietch serve --{self.role} exited ({self._reaper.returncode})")
            try:
                if httpx.get(self.url + HEALTH, timeout=5.0).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"sietch serve --{self.role} at {self.url} did not answer in {timeout_s} s"
                )
            time.sleep(0.5)

    def pid(self) -> int:
        """The reaper's process id (the server is its only child)."""
        return self._reaper.pid

    def stop(self) -> int:
        """End the server (SIGTERM, then SIGKILL); returns its status. The actor stays."""
        self._stopping.set()
        if self._reaper.stdin is not None:
            self._reaper.stdin.close()
        return self._reaper.wait()
