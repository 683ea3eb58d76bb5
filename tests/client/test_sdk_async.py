"""The asyncio SDK against a real server and real VMs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import sietch
from sietch import AsyncSandbox
from sietch.client._async import _Streamed

pytestmark = pytest.mark.usefixtures("sdk_env")


@pytest_asyncio.fixture(scope="module")
async def sb(sdk_env: None) -> AsyncIterator[AsyncSandbox]:
    """One sandbox for the module's tests."""
    async with await AsyncSandbox.create(labels={"suite": "sdk-async"}) as sandbox:
        yield sandbox


async def test_lifecycle() -> None:
    """create, list by label, connect, and deletion when the async with block ends."""
    async with await AsyncSandbox.create(labels={"case": "async-lifecycle"}) as sandbox:
        listed = await AsyncSandbox.list(labels={"case": "async-lifecycle"})
        assert [i.id for i in listed] == [sandbox.id]
        other = await AsyncSandbox.connect(sandbox.id)
        assert (await other.exec("echo hi")).stdout == "hi\n"
        await other.close()
    with pytest.raises(sietch.SandboxNotFound):
        await AsyncSandbox.connect(sandbox.id)


async def test_exec_and_async_callbacks(sb: AsyncSandbox) -> None:
    """exec returns the result; async callbacks receive streamed output."""
    result = await sb.exec("echo a; echo b >&2; exit 1")
    assert (result.stdout, result.stderr, result.exit_code) == ("a\n", "b\n", 1)
    got: list[bytes] = []

    async def collect(data: bytes) -> None:
        got.append(data)

    result = await sb.exec("echo x; echo y", on_stdout=collect, stdin=b"")
    assert b"".join(got) == b"x\ny\n"
    assert result.exit_code == 0


async def test_stdin_a_command_never_reads(
    sb: AsyncSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that ends without reading its stdin gives its result: the server closes the
    stream as the command ends, which can be before a client (here one slowed down) has
    sent the input."""
    sending = _Streamed.send

    async def late(self: _Streamed, data: bytes | str) -> None:
        await asyncio.sleep(1.0)
        await sending(self, data)

    monkeypatch.setattr(_Streamed, "send", late)
    got: list[bytes] = []

    async def collect(data: bytes) -> None:
        got.append(data)

    result = await sb.exec("echo done; exit 3", on_stdout=collect, stdin=b"unread")
    assert result.exit_code == 3
    assert b"".join(got) == b"done\n"


async def test_terminal_input_after_its_process_ended(sb: AsyncSandbox) -> None:
    """Typing into, resizing or signalling a terminal whose process has ended (its stream
    closed by the server) does nothing, as in a terminal window whose shell has exited."""
    pty = await sb.pty(["true"])
    assert (await pty.wait()).exit_code == 0
    await asyncio.sleep(0.5)  # the server's close arrives after the exit
    await pty.send("ls\n")
    await pty.resize(100, 30)
    await pty.signal("SIGINT")
    await pty.close()


async def test_concurrent_execs(sb: AsyncSandbox) -> None:
    """Many commands at once over one client all complete with their own output."""
    results = await asyncio.gather(*(sb.exec(f"echo {i}") for i in range(10)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]


async def test_files_and_async_iterables(sb: AsyncSandbox) -> None:
    """files.write takes async iterables; read/list/remove work."""

    async def parts() -> AsyncIterator[bytes]:
        for i in range(100):
            yield bytes([i]) * 1000

    written = await sb.files.write("/tmp/parts", parts())
    assert written.size == 100_000
    data = await sb.files.read("/tmp/parts")
    assert data == b"".join(bytes([i]) * 1000 for i in range(100))
    assert "parts" in {f.name for f in await sb.files.list("/tmp")}
    await sb.files.remove("/tmp/parts")
    assert not await sb.files.exists("/tmp/parts")


async def test_background_process(sb: AsyncSandbox) -> None:
    """Background processes: start, list, wait for the exit code."""
    handle = await sb.exec("sleep 0.2; exit 5", background=True)
    assert handle.pid in {p.pid for p in await sb.process.list()}
    assert (await handle.wait(timeout=10)).exit_code == 5


async def test_pty(sb: AsyncSandbox) -> None:
    """An async PTY: input runs, resize applies, exit code comes back."""
    term = await sb.pty()
    await term.resize(90, 20)
    await term.send("stty size; exit 0\n")
    seen = b""
    async for chunk in term:
        seen += chunk
    assert b"20 90" in seen
    assert term.result is not None and term.result.exit_code == 0
    await term.close()
