"""Each sandbox's DNS resolver, run by Sietch inside the sandbox's namespace.

Every query to port 53 the sandbox sends, UDP or TCP, to whatever server,
is redirected here (see :func:`sietch.network.policy.ruleset`). A name the
policy does not allow is answered REFUSED at once; an allowed one is
forwarded to the upstream resolvers, and when it is one of the policy's
domains, the addresses in the answer are let through the firewall for their
TTL before the answer goes back: that is how a domain allow-list follows
names whose addresses change.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from sietch.network import netns
from sietch.network.policy import DNS_PORT, NetworkPolicy, domain_listed
from sietch.network.relay import held

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 2.0
UDP_MIN = 512
"""What every DNS client takes over UDP (more only when it says so with EDNS)."""

Learn = Callable[[list[tuple[str, int]]], Awaitable[None]]


def system_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's nameservers, as its resolver library would use them."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    return [f[1] for f in (line.split() for line in lines) if len(f) >= 2 and f[0] == "nameserver"]


class DnsProxy(asyncio.DatagramProtocol):
    def __init__(self, policy: Callable[[], NetworkPolicy], upstreams: list[str], learn: Learn):
        self._policy = policy
        self._upstreams = upstreams
        self._learn = learn
        self._transport: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    async def start(
        cls,
        namespace: int,
        policy: Callable[[], NetworkPolicy],
        upstreams: list[str],
        learn: Learn,
    ) -> DnsProxy:
        proxy = cls(policy, upstreams, learn)
        udp = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_DGRAM)
        tcp = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind(("127.0.0.1", DNS_PORT))
            tcp.bind(("127.0.0.1", DNS_PORT))
            tcp.listen()
            loop = asyncio.get_running_loop()
            await loop.create_datagram_endpoint(lambda: proxy, sock=udp)
            proxy._server = await asyncio.start_server(proxy._serve_tcp, sock=tcp)
        except BaseException:
            udp.close()
            tcp.close()
            proxy.close()
            raise
        return proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._keep(asyncio.ensure_future(self._answer(data, addr)))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold the task until it ends: the loop keeps only weak references."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        reply = await self.resolve(query)
        # Too big for the asker's UDP size: truncated (TC), and it asks again over TCP.
        size = max(UDP_MIN, query.payload if query.edns >= 0 else UDP_MIN)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply.to_wire(max_size=size, prefer_truncation=True), addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with held(self._tasks):
            try:
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    query = dns.message.from_wire(await reader.readexactly(size))
                    wire = (await self.resolve(query)).to_wire()
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
                pass
            finally:
                writer.close()

    async def resolve(self, query: dns.message.Message) -> dns.message.Message:
        reply = await self._resolve(query)
        # We recurse for the guest. glibc takes a reply without RA and without
        # answers (a truncated one, say) for a lame server and gives up.
        reply.flags |= dns.flags.RA
        return reply

    async def _resolve(self, query: dns.message.Message) -> dns.message.Message:
        if len(query.question) != 1:
            return _error(query, dns.rcode.FORMERR)
        name = query.question[0].name.to_text(omit_final_dot=True)
        policy = self._policy()
        if not policy.allows_name(name):
            return _error(query, dns.rcode.REFUSED)
        answer = await self._forward(query)
        if answer is None:
            return _error(query, dns.rcode.SERVFAIL)
        if domain_listed(name, policy.domains):
            found = [
                (item.address, rrset.ttl)
                for rrset in answer.answer
                if rrset.rdtype == dns.rdatatype.A
                for item in rrset
            ]
            try:
                await self._learn(found)
            except Exception:
                log.exception("could not let the addresses of %s through", name)
                return _error(query, dns.rcode.SERVFAIL)
        return answer

    async def _forward(self, query: dns.message.Message) -> dns.message.Message | None:
        for server in self._upstreams:
            try:
                answer, _ = await dns.asyncquery.udp_with_fallback(
                    query, server, timeout=UPSTREAM_TIMEOUT
                )
                return answer
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("DNS upstream %s failed: %s", server, exc)
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    return reply
