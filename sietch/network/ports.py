"""Host-to-guest TCP port forwards on QEMU user-mode networking (``hostfwd``).

Forwards are added and removed at run time with the HMP commands
``hostfwd_add`` / ``hostfwd_remove`` (sent through QMP's
``human-monitor-command``). QEMU binds 127.0.0.1 of the network namespace
it runs in: the sandbox's own, reached from the host through a relay
(:mod:`sietch.network.relay`), or the host's when Sietch can't isolate
(not root). Asking for port 0 lets the kernel pick a free one inside QEMU (no
race with another process taking it first), and ``info usernet`` tells which
one it got.
"""

from __future__ import annotations

import re

from sietch.errors import InvalidArgument, VMError
from sietch.vmm.qemu import QemuMachine

HOST = "127.0.0.1"
NETDEV = "net0"

# "  TCP[HOST_FORWARD]  12       127.0.0.1 39631       10.0.2.15  8000     0     0"
_ROW = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)")


def check_port(port: object) -> int:
    """A TCP port number 1..65535, or :class:`InvalidArgument`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidArgument(f"a port is a number from 1 to 65535, not {port!r}")
    return port


async def _hmp(machine: QemuMachine, line: str) -> str:
    return str(await machine.execute("human-monitor-command", {"command-line": line}) or "")


async def forwards(machine: QemuMachine) -> dict[int, int]:
    """The machine's TCP forwards: guest port -> host port."""
    table = await _hmp(machine, "info usernet")
    return {int(m[4]): int(m[2]) for m in _ROW.finditer(table) if m[1] == HOST}


async def forward(machine: QemuMachine, guest_port: int) -> int:
    """Forward a free 127.0.0.1 port to ``guest_port``; returns the host port."""
    existing = await forwards(machine)
    if guest_port in existing:
        return existing[guest_port]
    out = await _hmp(machine, f"hostfwd_add {NETDEV} tcp:{HOST}:0-:{guest_port}")
    if out.strip():
        raise VMError(f"QEMU refused to forward guest port {guest_port}: {out.strip()}")
    host_port = (await forwards(machine)).get(guest_port)
    if host_port is None:
        raise VMError(f"the forward of guest port {guest_port} did not appear in QEMU")
    return host_port


async def unforward(machine: QemuMachine, host_port: int) -> None:
    """Close the listening 127.0.0.1 socket; a missing forward is not an error."""
    await _hmp(machine, f"hostfwd_remove {NETDEV} tcp:{HOST}:{host_port}")
