"""One sandbox's network on the host: its namespace, firewall, uplink, DNS and relays.

The sandbox's QEMU runs inside a network namespace of its own, so its
user-mode network stack (slirp) can only reach what that namespace can:

    guest ─ QEMU slirp ─┬─ namespace loopback: DNS resolver, hostfwd ports
                        └─ nftables (the policy) ─ tap0 ─ slirp4netns ─ host sockets

The host's loopback, the Sietch API and other sandboxes' ports are out of
reach by construction (slirp's "host loopback" is the namespace's own); the
host's other addresses and private networks are rejected by the rules. Every
piece is owned by an fd or a child process, none has a name on the host, and
all of it ends with the QEMU process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from sietch.errors import NetworkError
from sietch.network import netns, nft, relay, uplink
from sietch.network.dns import DnsProxy
from sietch.network.policy import NetworkPolicy, host_addresses, learn, ruleset


def _allow_ping() -> None:
    """Let slirp (QEMU, unprivileged) answer the guest's pings through ICMP datagram sockets;
    /proc/sys/net is the namespace's own, the host's setting is untouched."""
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 2147483647")


class SandboxNetwork:
    """Made in two steps, so that QEMU can start in between: :meth:`prepare` (the
    namespace, and the pipe that will stop the uplink) before QEMU, :meth:`connect`
    (rules, uplink, DNS) while it starts. Until then the namespace has no way out."""

    def __init__(self, namespace: int, policy: NetworkPolicy, upstreams: list[str]) -> None:
        self.namespace = namespace
        self.policy = policy
        self.upstreams = upstreams
        self.uplink: uplink.Uplink | None = None
        self.dns: DnsProxy | None = None
        self._relays: dict[int, relay.Relay] = {}
        self._exit_r: int | None = None
        self._exit_w: int | None = None

    @classmethod
    async def prepare(cls, policy: NetworkPolicy, upstreams: list[str]) -> SandboxNetwork:
        net = cls(await asyncio.to_thread(netns.create), policy, upstreams)
        try:
            net._exit_r, net._exit_w = os.pipe()
            netns.call_in(net.namespace, _allow_ping)
        except BaseException:
            await net.close()
            raise
        return net

    async def connect(self, log_file: Path, wrapper: list[str] | None = None) -> None:
        """Rules first, then the way out: the namespace fails closed. ``wrapper`` prefixes
        the uplink's command (joining the sandbox's cgroup)."""
        await nft.run(self.namespace, ruleset(self.policy, host_addresses(), replace=False))
        if self._exit_r is None:
            raise NetworkError("this sandbox network is already connected")
        self.uplink = await uplink.start(self.namespace, self._exit_r, log_file, wrapper=wrapper)
        self._close_fd("_exit_r")
        await self._start_dns()

    @classmethod
    async def adopt(cls, pid: int, policy: NetworkPolicy, upstreams: list[str]) -> SandboxNetwork:
        """The network of a VM an earlier Sietch started (its uplink runs on by itself)."""
        try:
            namespace = netns.of_process(pid)
        except OSError as exc:
            raise NetworkError(f"cannot open the network namespace of pid {pid}: {exc}") from exc
        net = cls(namespace, policy, upstreams)
        try:
            await net._start_dns()
        except BaseException:
            await net.close()
            raise
        return net

    async def _start_dns(self) -> None:
        self.dns = await DnsProxy.start(
            self.namespace, lambda: self.policy, self.upstreams, self._learn
        )

    async def _learn(self, addresses: list[tuple[str, int]]) -> None:
        if commands := learn(addresses):
            await nft.run(self.namespace, commands)

    # -- QEMU's side ---------------------------------------------------------------

    def launch_prefix(self) -> list[str]:
        """Run a command inside the namespace (``nsenter`` with the fd inherited)."""
        nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
        return [nsenter, f"--net=/proc/self/fd/{self.namespace}"]

    def pass_fds(self) -> tuple[int, ...]:
        """Fds QEMU must inherit: the namespace, and the pipe end that keeps the uplink up."""
        return (self.namespace, *((self._exit_w,) if self._exit_w is not None else ()))

    def launched(self) -> None:
        """QEMU holds its copy now: the uplink lives exactly as long as QEMU does."""
        self._close_fd("_exit_w")

    def _close_fd(self, name: str) -> None:
        fd = getattr(self, name)
        if fd is not None:
            setattr(self, name, None)
            os.close(fd)

    # -- policy and ports ------------------------------------------------------------

    async def apply(self, policy: NetworkPolicy) -> None:
        """Replace the namespace's rules in one transaction."""
        await nft.run(self.namespace, ruleset(policy, host_addresses()))
        self.policy = policy

    async def open_relay(
        self, inner_port: int, host_port: int = 0, hooks: relay.RelayHooks | None = None
    ) -> int:
        """Relay a free host port (or ``host_port``: the listener ``hooks`` kept for it, if
        any) to ``inner_port`` in the namespace."""
        hooks = hooks or relay.RelayHooks()
        new = relay.Relay(self.namespace, inner_port, hooks.hold)
        kept = hooks.listener(host_port) if host_port else None
        try:
            port = await new.start(host_port, kept)
        except BaseException:
            if kept is not None:
                kept.close()
            raise
        self._relays[port] = new
        return port

    async def close_relay(self, host_port: int) -> None:
        found = self._relays.pop(host_port, None)
        if found is not None:
            await found.close()

    async def close(self) -> None:
        """Release everything on the host, once QEMU is gone (or never started)."""
        self._close_fd("_exit_r")
        self._close_fd("_exit_w")
        await self.detach()
        if self.uplink is not None:
            await self.uplink.close()
            self.uplink = None

    async def detach(self) -> None:
        """Let go of a network whose QEMU runs on (a persistent VM at shutdown): its
        uplink stays, tied to QEMU; the relays and the resolver stop until re-adoption."""
        for port in list(self._relays):
            await self.close_relay(port)
        if self.dns is not None:
            self.dns.close()
            self.dns = None
        if self.namespace >= 0:
            with contextlib.suppress(OSError):
                os.close(self.namespace)
            self.namespace = -1
