"""The cluster tests' network: a bridge on the host and one network namespace per node,
each with an address of its own on it (test-made, so tests may send traffic there).

Node servers enter only the namespace's network (``nsenter --net``), not a mount
namespace of its own as ``ip netns exec`` would make: a node's copy-on-write mount must
stay visible to the node started after it was killed, as on a real machine.
"""

from __future__ import annotations

import random
import secrets
import subprocess
from dataclasses import dataclass, field


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class ClusterNet:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    prefix: str = field(
        default_factory=lambda: f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
    )
    namespaces: list[str] = field(default_factory=list)
    added: int = 0
    """Namespaces made so far: each new one takes the next address, so the cluster and
    Ray tests share the one bridge without two nodes on one address."""

    @property
    def bridge(self) -> str:
        return f"scbr{self.tag}"

    @property
    def host_address(self) -> str:
        """The host's address on the bridge (PostgreSQL listens there too)."""
        return f"{self.prefix}.1"

    @property
    def subnet(self) -> str:
        return f"{self.prefix}.0/24"

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_node(self) -> tuple[str, str]:
        """A new namespace on the bridge: its name and address."""
        self.added += 1
        index = self.added
        ns, host_end = f"sc{self.tag}n{index}", f"scv{self.tag}{index}"
        address = f"{self.prefix}.{10 + index}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", host_end, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns, address

    def remove_node(self, ns: str) -> None:
        """The namespace gone (its veth end goes with it)."""
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self.namespaces.remove(ns)

    def down(self) -> None:
        for ns in list(self.namespaces):
            self.remove_node(ns)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
