"""Save and load a running QEMU's device state.

Two formats. :func:`save_devices` (QMP ``xen-save-devices-state``: despite
its name generic) writes the device sections only, never RAM, whatever the
memory backend: ~3 ms and ~26 KB here. The caller makes the memory file
(:mod:`sietch.vmm.dirty` for a private mapping). Such a stream has no
configuration section, so the QEMU that loads it runs with
``migration.send-configuration=off`` (:attr:`MachineConfig.devices_only`).

:func:`save_state` is a migration stream: with ``x-ignore-shared`` the RAM of
a ``share=on`` file is left out of it, but a ``share=off`` mapping's RAM goes
in (``ram_in_stream``, ~0.5 s, ~100 MB): now only the fallback where QEMU's
memory can't be read, and what snapshots recorded before the device format hold.

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


async def save_state(machine: QemuMachine, dest: Path, timeout: float = 120.0) -> int:
    """Stop the VM and write its device state to ``dest``; returns the stream's size.

    The VM stays stopped (``postmigrate``, disks flushed and inactivated) so the
    caller can freeze its memory file and disk before :func:`resume`.
    """
    await pause(machine)
    await _prepare(machine, ignore_shared=machine.config.memory_shared)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        await _send_fd(machine, fd)  # QEMU gets its own copy of the descriptor
        await machine.execute("migrate", {"uri": f"fd:{_FD_NAME}"})
        await _wait_migration(machine, timeout)
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


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
