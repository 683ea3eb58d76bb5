"""Each sandbox's DNS resolver, run by Sietch inside the sandbox's namespace.

Every UDP query to port 53 the sandbox sends, to whatever server, is
redirected here (see :func:`sietch.network.policy.ruleset`). A name the
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

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from sietch.network import netns
from sietch.network.policy import DNS_PORT, NetworkPolicy, domain_listed

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 2.0

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
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls,
        namespace: int,
        policy: Callable[[], NetworkPolicy],
        upstreams: list[str],
        learn: Learn,
    ) -> DnsProxy:
        sock = netns.socket_in(namespace, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", DNS_PORT))
        except BaseException:
            sock.close()
            raise
        proxy = cls(policy, upstreams, learn)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: proxy, sock=sock)
        return proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.ensure_future(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        reply = await self.resolve(query)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply.to_wire(), addr)

    async def resolve(self, query: dns.message.Message) -> dns.message.Message:
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
                return await dns.asyncquery.udp(query, server, timeout=UPSTREAM_TIMEOUT)
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("DNS upstream %s failed: %s", server, exc)
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for task in self._tasks:
            task.cancel()


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    return reply
