"""A sandbox namespace's way out: slirp4netns, a user-mode TCP/IP stack on the host side.

slirp4netns owns a tap device inside the namespace and turns what leaves
through it into ordinary sockets of the host. No host interface, route,
forwarding switch or firewall table changes. What reaches the tap has
already passed the namespace's own nftables rules (:mod:`sietch.network.policy`);
``--disable-host-loopback`` keeps the slirp gateway from leading to the host's
loopback as well.

Its life is tied to the sandbox's QEMU, not to Sietch: it stops when its
``--exit-fd`` pipe closes, and the pipe's write end is held by QEMU alone
(:class:`sietch.network.sandbox.SandboxNetwork` makes the pipe). So a VM that
outlives a Sietch restart keeps its network, and one that dies, however,
takes its uplink with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from sietch.errors import NetworkError

MTU = 65520
"""The namespace side only: the guest's own MTU is QEMU's slirp's (1500)."""


class Uplink:
    """One slirp4netns process serving one namespace."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def close(self, timeout: float = 5.0) -> None:
        """Wait for it to stop (its exit pipe must be closed by now); kill it if it won't."""
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def start(
    namespace: int,
    exit_fd: int,
    log: Path,
    timeout: float = 10.0,
    wrapper: list[str] | None = None,
) -> Uplink:
    """Start slirp4netns on ``namespace`` (an fd) and wait until its tap is configured.

    It stops when every copy of the write end of ``exit_fd``'s pipe is closed."""
    binary = shutil.which("slirp4netns")
    if binary is None:
        raise NetworkError("slirp4netns is not installed (apt-get install slirp4netns)")
    ready_r, ready_w = os.pipe()
    try:
        with open(log, "ab") as log_file:  # noqa: ASYNC230 (a local file, opened once)
            proc = await asyncio.create_subprocess_exec(
                *(wrapper or []),
                binary,
                "--configure",
                f"--mtu={MTU}",
                "--disable-host-loopback",
                "--enable-seccomp",
                f"--ready-fd={ready_w}",
                f"--exit-fd={exit_fd}",
                "--netns-type=path",
                f"/proc/self/fd/{namespace}",
                "tap0",
                pass_fds=(namespace, ready_w, exit_fd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
    except BaseException:
        os.close(ready_r)
        os.close(ready_w)
        raise
    os.close(ready_w)
    uplink = Uplink(proc)
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await uplink.close()
        raise
    finally:
        os.close(ready_r)
    if ready != b"1":
        await uplink.close()
        output = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:].strip()
        raise NetworkError(
            f"slirp4netns did not start (exit code {proc.returncode}): {output or 'no output'}"
        )
    return uplink
