"""Save a stopped QEMU's device state and, where the host can't read it, its RAM; load them.

:func:`save_devices` (QMP ``xen-save-devices-state``: despite its name
generic) writes the device sections only, never RAM, whatever the memory
backend: ~3 ms and ~26 KB here. The caller makes the memory file
(:mod:`sietch.vmm.dirty` for a private mapping, else :func:`save_ram`). Such
a stream has no configuration section, so the QEMU that loads it runs with
``migration.send-configuration=off`` (:attr:`MachineConfig.devices_only`),
and QEMU 10 aborts any outgoing migration of a VM started so (an assertion
in its JSON writer): snapshots no longer use ``migrate``.

:func:`load_state` feeds a state to a QEMU started with ``-incoming defer``:
device-only states, and the migration streams of snapshots recorded before
(with ``x-ignore-shared`` the RAM of a ``share=on`` file was left out; a
``share=off`` mapping's RAM went in, ``ram_in_stream``).

QEMU 7.2 has no ``file:`` migration URI and ``-sandbox spawn=deny`` forbids
``exec:``, so every stream goes through a file descriptor we open and hand to
QEMU over QMP (``getfd``, or ``add-fd`` for a ``/dev/fdset/N`` path). That also
spares the unprivileged QEMU user from needing any permission on the snapshot
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

from sietch.errors import VMError
from sietch.vmm.qemu import QemuMachine

_FD_NAME = "sietch-migration"
_BANDWIDTH = 1 << 40
"""Bytes per second: QEMU's default (32 MiB/s) would make a RAM-bearing stream crawl."""


async def _pass_fd(machine: QemuMachine, fd: int) -> None:
    """Pass ``fd`` to QEMU (SCM_RIGHTS on the QMP socket) for the next ``getfd``/``add-fd``.

    Not ``QMPClient.send_fd_scm``: it reaches into asyncio's private socket
    wrapper, which uvloop (the server's event loop) does not have. A dup of the
    socket's descriptor works under any loop; the lone space is JSON whitespace.
    """
    qmp = machine.qmp
    writer = getattr(qmp, "_writer", None)
    if qmp is None or writer is None:
        raise VMError(f"machine {machine.config.name} has no QMP connection")
    await writer.drain()
    fileno = writer.transport.get_extra_info("socket").fileno()
    with socket.socket(fileno=os.dup(fileno)) as sock:
        sock.sendmsg([b" "], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("@i", fd))])


async def _send_fd(machine: QemuMachine, fd: int) -> None:
    """Give QEMU its own copy of ``fd`` under the name the migration URIs use."""
    await _pass_fd(machine, fd)
    await machine.execute("getfd", {"fdname": _FD_NAME})


async def _prepare(machine: QemuMachine, ignore_shared: bool) -> None:
    # Both ends must agree: with it on, the stream carries each RAM block's
    # address and the pages of no share=on block.
    await machine.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared}]},
    )
    await machine.execute("migrate-set-parameters", {"max-bandwidth": _BANDWIDTH})


async def _wait_migration(machine: QemuMachine, timeout: float) -> dict[str, Any]:
    """Poll ``query-migrate`` until it ends; QMP round trips are sub-millisecond."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        info: dict[str, Any] = await machine.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise VMError(
                f"migration of {machine.config.name} {status}: {info.get('error-desc', '')}"
            )
        if time.monotonic() > deadline:
            with contextlib.suppress(VMError):
                await machine.execute("migrate_cancel")
            raise VMError(f"migration of {machine.config.name} did not finish in {timeout:.0f}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.01)


async def pause(machine: QemuMachine) -> None:
    await machine.execute("stop")


async def resume(machine: QemuMachine) -> None:
    """``cont``: also re-activates the block devices a finished migration inactivated."""
    await machine.execute("cont")


async def save_devices(machine: QemuMachine, dest: Path) -> int:
    """Write the stopped VM's device state (no RAM) to ``dest``; returns its size.

    QEMU writes through a descriptor of ours in an fd set (``/dev/fdset/N``);
    the set is removed again whatever happens.
    """
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        await _pass_fd(machine, fd)
        added = await machine.execute("add-fd", {})
        fdset = added["fdset-id"]
        try:
            path = f"/dev/fdset/{fdset}"
            await machine.execute("xen-save-devices-state", {"filename": path, "live": False})
        finally:
            with contextlib.suppress(VMError):
                await machine.execute("remove-fd", {"fdset-id": fdset})
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


_RAM_ALIAS = re.compile(
    r"([0-9a-f]+)-[0-9a-f]+ \(prio -?\d+, ram\): alias ram-(?:below|above)-4g "
    r"@ram ([0-9a-f]+)-([0-9a-f]+)"
)
"""A line of ``info mtree``: where in guest physical memory a slice of the RAM backend is."""


async def save_ram(machine: QemuMachine, dest: Path) -> None:
    """Write the stopped VM's RAM to ``dest`` as its memory backend holds it (QMP ``pmemsave``
    of each slice of guest physical memory the backend is mapped at).

    Slow (the whole RAM, a KiB per write inside QEMU): only for where the
    written pages can't be read from the host (:mod:`sietch.vmm.dirty`).
    ``pmemsave`` takes a path, not an fd set: QEMU writes each slice into a
    file made for it in its work dir, owned by the QEMU user, which is then
    copied into place.
    """
    mtree = await machine.execute("human-monitor-command", {"command-line": "info mtree"})
    slices = sorted({(int(a, 16), int(b, 16), int(c, 16)) for a, b, c in _RAM_ALIAS.findall(mtree)})
    if not slices:
        raise VMError(f"machine {machine.config.name}: no RAM found in its memory tree")
    run_as = machine.config.run_as
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(out, machine.config.memory_mib << 20)
        for n, (guest, start, end) in enumerate(slices):
            # In the work dir: the one place a jailed QEMU can write (sietch.vmm.jail).
            part = machine.config.workdir / f"pmemsave.{n}"
            part.touch(0o600)
            try:
                if run_as is not None:
                    os.chown(part, *run_as)
                args = {"val": guest, "size": end - start + 1, "filename": str(part)}
                await machine.execute("pmemsave", args)
                await asyncio.to_thread(_copy_into, part, out, start, end - start + 1)
            finally:
                part.unlink(missing_ok=True)
        os.fsync(out)
    finally:
        os.close(out)


def _copy_into(part: Path, out: int, offset: int, size: int) -> None:
    fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = 0
        while pos < size:
            copied = os.copy_file_range(fd, out, size - pos, pos, offset + pos)
            if copied == 0:
                raise VMError(f"{part} holds {pos} bytes, not {size}")
            pos += copied
    finally:
        os.close(fd)


async def load_state(
    machine: QemuMachine, source: Path, *, ram_in_stream: bool, timeout: float = 120.0
) -> None:
    """Feed ``source`` to a machine started with ``incoming=True``; it is left paused.

    ``ram_in_stream``: the stream was saved from a share=off VM and carries its RAM.
    A device-only stream (:func:`save_devices`) loads the same way.
    """
    await _prepare(machine, ignore_shared=not ram_in_stream)
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await _send_fd(machine, fd)
    finally:
        os.close(fd)
    await machine.execute("migrate-incoming", {"uri": f"fd:{_FD_NAME}"})
    await _wait_migration(machine, timeout)
