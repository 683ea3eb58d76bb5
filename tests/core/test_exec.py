"""Commands in a real microVM: output, exit status, stdin, timeouts, background processes."""

from __future__ import annotations

import asyncio
import os

import pytest

from sietch.core.live import LiveSandbox
from sietch.errors import NotFound, ProcessNotFound


async def test_uname_shows_the_guest_kernel(shared: LiveSandbox) -> None:
    """The command runs under the guest's own kernel, not the host's."""
    result = await shared.exec(["uname", "-a"])
    assert result.exit_code == 0
    guest = result.stdout.decode()
    assert "cloud-amd64" in guest
    assert os.uname().release not in guest


async def test_python_runs(shared: LiveSandbox) -> None:
    """Python code runs in the default image."""
    result = await shared.exec(["python3", "-c", "print(sum(range(10)))"])
    assert (result.exit_code, result.stdout) == (0, b"45\n")


@pytest.mark.parametrize("code", [0, 1, 137])
async def test_exit_codes(shared: LiveSandbox, code: int) -> None:
    """Exit codes come back as the process set them."""
    result = await shared.exec(f"exit {code}")
    assert (result.exit_code, result.signal) == (code, None)


async def test_killed_by_signal(shared: LiveSandbox) -> None:
    """A process killed by a signal reports the signal, not an exit code."""
    result = await shared.exec(["sh", "-c", "kill -TERM $$; sleep 5"])
    assert (result.exit_code, result.signal) == (None, 15)


async def test_stdout_and_stderr_are_separate(shared: LiveSandbox) -> None:
    """stdout and stderr arrive on their own channels."""
    result = await shared.exec("echo out; echo err >&2")
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


async def test_ten_mib_of_output_streams_completely(shared: LiveSandbox) -> None:
    """10 MiB printed by a command all arrive, in chunks as produced."""
    chunks: list[int] = []
    result = await shared.exec(
        "head -c 10485760 /dev/zero | tr '\\0' x", on_stdout=lambda b: chunks.append(len(b))
    )
    assert result.exit_code == 0
    assert len(result.stdout) == 10 * 1024 * 1024
    assert set(result.stdout) == {ord("x")}
    assert len(chunks) > 10


async def test_stdin_round_trips(shared: LiveSandbox) -> None:
    """Bytes sent to stdin come back from cat unchanged."""
    payload = os.urandom(300_000)
    result = await shared.exec(["cat"], stdin=payload)
    assert result.exit_code == 0
    assert result.stdout == payload


async def test_env_cwd_and_user(shared: LiveSandbox) -> None:
    """Environment, working directory and user apply to the command."""
    result = await shared.exec(
        'echo "$GREETING $(pwd) $(id -un)"', env={"GREETING": "hi"}, cwd="/tmp", user="user"
    )
    assert result.stdout == b"hi /tmp user\n"


async def test_timeout_kills_a_runaway_command(shared: LiveSandbox) -> None:
    """A command over its timeout is killed and reported as timed out."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await shared.exec(["sleep", "100"], timeout=1)
    assert result.timed_out
    assert result.exit_code is None
    assert loop.time() - started < 30
    listed = {p.pid: p for p in await shared.processes()}
    assert result.pid not in listed or not listed[result.pid].running


async def test_background_process_is_listed_and_killed(shared: LiveSandbox) -> None:
    """A background sleep keeps running, is listed, and dies when signalled."""
    pid = await shared.start_background(["sleep", "300"], tag="sleeper")
    listed = {p.pid: p for p in await shared.processes()}
    assert listed[pid].running and listed[pid].tag == "sleeper"
    await shared.signal(pid, "SIGKILL")
    waited = await shared.wait(pid)
    assert waited.signal == 9
    after = {p.pid: p for p in await shared.processes()}
    assert pid not in after or not after[pid].running


async def test_signal_to_unknown_pid(shared: LiveSandbox) -> None:
    """Signalling a pid the agent never started is a clear not-found error."""
    with pytest.raises(ProcessNotFound):
        await shared.signal(999_999, "SIGTERM")


async def test_missing_command_is_a_clear_error(shared: LiveSandbox) -> None:
    """A command that does not exist fails with a not-found error naming it."""
    with pytest.raises(NotFound, match="no-such-tool"):
        await shared.exec(["no-such-tool", "--help"])


async def test_pty_mode_reports_its_size(shared: LiveSandbox) -> None:
    """A PTY command sees a terminal of the requested size, and a resize applies."""
    execution = await shared.start(
        ["sh", "-c", "stty size; read x; stty size"], pty=True, cols=100, rows=30
    )
    seen = b""
    outputs = aiter(execution)
    while b"30 100" not in seen:
        seen += (await anext(outputs)).data
    await execution.resize(120, 40)
    await execution.send_stdin(b"go\n")
    rest = await execution.result()
    await execution.close()
    assert b"40 120" in rest.stdout
    assert rest.exit_code == 0


async def test_fifty_concurrent_operations(shared: LiveSandbox) -> None:
    """The agent channel carries 50 operations at once, each getting its own answer."""
    results = await asyncio.gather(*(shared.exec(["echo", str(i)]) for i in range(50)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(50)]


async def test_channel_reconnects_by_itself(shared: LiveSandbox) -> None:
    """After the host side of the channel drops, the next call reconnects."""
    await shared.agent.close()
    result = await shared.exec(["echo", "back"])
    assert result.stdout == b"back\n"
