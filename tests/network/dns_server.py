"""A tiny authoritative DNS server for the tests' stand-in internet.

Run inside the test's "outside" namespace: ``python dns_server.py ADDR name=ip ...``.
Answers A queries for the given names (TTL 300), NXDOMAIN for the rest; ``big.test`` has
40 addresses, too many for a plain 512-byte UDP answer.
"""

from __future__ import annotations

import socket
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def main() -> None:
    address, *pairs = sys.argv[1:]
    names = dict(p.split("=", 1) for p in pairs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        reply = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if name == "big.test" and question.rdtype == dns.rdatatype.A:
            many = [f"198.51.100.{n}" for n in range(10, 50)]
            reply.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", "A", many))
        elif name in names and question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", names[name]))
        elif name not in names and name != "big.test":
            reply.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(reply.to_wire(), peer)


if __name__ == "__main__":
    main()
