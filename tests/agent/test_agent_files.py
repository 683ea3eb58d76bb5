"""File operations on the real filesystem (the agent runs on the host here: temp dirs only)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sietch.agent import protocol as P

from .hostside import HostConnection, eventually


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory of the test's own (tmp_path also holds the agent's socket and log)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _sha(path: str | Path) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


async def _write(host: HostConnection, path: str, data: bytes, **args: Any) -> dict[str, Any]:
    s = host.open("write", path=path, **args)
    await s.write(data)
    s.eof()
    return await s.result()


async def test_write_read_twenty_mib(host: HostConnection, work: Path) -> None:
    """20 MiB go up and come back identical, through both directions' flow control."""
    data = os.urandom(20 << 20)
    path = str(work / "sub" / "big.bin")
    res = await _write(host, path, data)
    assert res == {"type": "result", "path": path, "size": len(data)}
    assert _sha(path) == hashlib.sha256(data).digest()
    out = await host.open("read", path=path).outcome()
    assert out.msgs == [
        {"type": "stat", "size": len(data), "mode": 0o644, "mtime": os.stat(path).st_mtime}
    ]
    assert out.final == {"type": "result", "size": len(data)}
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(data).digest()


async def test_upload_full_of_sync_frames(host: HostConnection, work: Path) -> None:
    """File bytes that look like SYNC frames are data, not a reconnect."""
    data = P.encode_sync(b"12345678") * 100_000  # 2.5 MB of SYNC frames
    path = str(work / "syncs")
    assert (await _write(host, path, data))["size"] == len(data)
    assert _sha(path) == hashlib.sha256(data).digest()
    assert (await host.open("read", path=path).outcome()).stdout == data


async def test_read_range(host: HostConnection, work: Path) -> None:
    """offset and length select a slice; reading past the end is short, not an error."""
    path = work / "f"
    path.write_bytes(bytes(range(256)) * 4)
    out = await host.open("read", path=str(path), offset=10, length=5).outcome()
    assert out.stdout == bytes(range(10, 15)) and out.final["size"] == 5
    out = await host.open("read", path=str(path), offset=1020, length=100).outcome()
    assert out.stdout == bytes(range(252, 256))


async def test_write_is_atomic_and_abandoned_write_leaves_nothing(
    host: HostConnection, work: Path
) -> None:
    """Until EOF the data sits in a temp file; a stream closed early removes it."""
    target = work / "f"
    target.write_bytes(b"old")
    s = host.open("write", path=str(target))
    await s.write(b"new content, never finished")

    async def temp_exists() -> None:
        assert len(_names(work)) == 2

    await eventually(temp_exists)
    assert target.read_bytes() == b"old", "never a half file under the real name"
    s.close()

    async def cleaned() -> None:
        assert _names(work) == ["f"]

    await eventually(cleaned)
    assert target.read_bytes() == b"old"


async def test_write_closed_before_its_file_is_open_leaves_nothing(
    host: HostConnection, work: Path
) -> None:
    """A write closed while the agent's thread has yet to open its temp file still cleans up.

    Appends to FIFOs hold every worker thread (copying the old content opens
    the FIFO, which waits for a writer), so the write to ``f`` waits for a
    thread when its stream is closed; it opens the temp file only afterwards.
    """
    fifos = [work / f"fifo{i}" for i in range(40)]  # more than the agent's 32 threads at most
    for fifo in fifos:
        os.mkfifo(fifo)
    blockers = [host.open("write", path=str(fifo), append=True) for fifo in fifos]
    s = host.open("write", path=str(work / "f"))
    await host.call("hello")  # answered on the loop, after the write's op has started
    s.close()
    await host.call("hello")
    unblocked: set[Path] = set()

    async def all_unblocked() -> None:
        for fifo in fifos:
            if fifo not in unblocked:
                # Succeeds once a thread waits on it; its copy then fails (sendfile from a pipe).
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    unblocked.add(fifo)
        assert unblocked == set(fifos)

    await eventually(all_unblocked)
    for blocker in blockers:
        assert (await blocker.outcome()).final["type"] == "error"

    async def cleaned() -> None:
        assert _names(work) == sorted(fifo.name for fifo in fifos)

    await eventually(cleaned)


async def test_write_modes_append_and_parents(host: HostConnection, work: Path) -> None:
    """mode is exact, an existing file keeps its mode, append appends, parents=false refuses."""
    path = work / "x.sh"
    await _write(host, str(path), b"#!/bin/sh\n", mode=0o750)
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    await _write(host, str(path), b"echo hi\n", append=True)
    assert path.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    s = host.open("write", path=str(work / "no" / "f"), parents=False)
    s.eof()
    final = (await s.outcome()).final
    assert final["code"] == "not_found" and str(work / "no") in final["message"]
    s = host.open("write", path=str(work))
    s.eof()
    assert (await s.outcome()).final["code"] == "is_a_directory"


async def test_write_through_symlink_replaces_target(host: HostConnection, work: Path) -> None:
    """Writing to a symlink rewrites the file it points to and keeps the link."""
    (work / "real").write_text("a")
    (work / "link").symlink_to("real")
    await _write(host, str(work / "link"), b"b")
    assert (work / "link").is_symlink() and (work / "real").read_text() == "b"


async def test_list(host: HostConnection, work: Path) -> None:
    """list returns typed entries sorted by name, symlinks with targets, depth descends."""
    (work / "b.txt").write_text("hello")
    (work / "a").mkdir()
    (work / "a" / "inner").write_text("x")
    (work / "c").symlink_to("b.txt")
    res = await host.call("list", path=str(work))
    names = [(e["name"], e["type"]) for e in res["entries"]]
    assert names == [("a", "dir"), ("b.txt", "file"), ("c", "symlink")]
    b = res["entries"][1]
    assert b["size"] == 5 and b["path"] == str(work / "b.txt") and b["mode"] == 0o644
    assert res["entries"][2]["target"] == "b.txt"
    deep = await host.call("list", path=str(work), depth=2)
    assert [e["path"] for e in deep["entries"]] == [
        str(work / n) for n in ("a", "a/inner", "b.txt", "c")
    ]
    out = await host.open("list", path=str(work / "b.txt")).outcome()
    assert out.final["code"] == "not_a_directory"


async def test_stat(host: HostConnection, work: Path) -> None:
    """stat uses lstat and adds owner ids."""
    (work / "f").write_text("12345")
    (work / "l").symlink_to("f")
    st = (await host.call("stat", path=str(work / "f")))["entry"]
    assert (st["type"], st["size"], st["uid"], st["gid"]) == ("file", 5, os.getuid(), os.getgid())
    assert st["mtime"] == pytest.approx((work / "f").stat().st_mtime)
    link = (await host.call("stat", path=str(work / "l")))["entry"]
    assert link["type"] == "symlink" and link["target"] == "f"


async def test_mkdir(host: HostConnection, work: Path) -> None:
    """mkdir -p creates parents with the exact mode and accepts an existing dir."""
    path = work / "a" / "b" / "c"
    assert (await host.call("mkdir", path=str(path), mode=0o700))["path"] == str(path)
    assert path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o700
    await host.call("mkdir", path=str(path))
    out = await host.open("mkdir", path=str(path), parents=False).outcome()
    assert out.final["code"] == "exists"
    out = await host.open("mkdir", path=str(work / "x" / "y"), parents=False).outcome()
    assert out.final["code"] == "not_found"


async def test_remove(host: HostConnection, work: Path) -> None:
    """remove deletes files and empty dirs; a full dir needs recursive."""
    (work / "d" / "e").mkdir(parents=True)
    (work / "d" / "e" / "f").write_text("x")
    (work / "g").write_text("x")
    await host.call("remove", path=str(work / "g"))
    assert not (work / "g").exists()
    out = await host.open("remove", path=str(work / "d")).outcome()
    assert out.final["code"] == "not_empty" and str(work / "d") in out.final["message"]
    await host.call("remove", path=str(work / "d"), recursive=True)
    assert not (work / "d").exists()
    out = await host.open("remove", path=str(work / "d")).outcome()
    assert out.final["code"] == "not_found"


async def test_rename(host: HostConnection, work: Path) -> None:
    """rename moves; an existing destination needs overwrite."""
    (work / "a").write_text("A")
    (work / "b").write_text("B")
    out = await host.open("rename", src=str(work / "a"), dst=str(work / "b")).outcome()
    assert out.final["code"] == "exists"
    await host.call("rename", src=str(work / "a"), dst=str(work / "b"), overwrite=True)
    assert (work / "b").read_text() == "A" and not (work / "a").exists()
    await host.call("rename", src=str(work / "b"), dst=str(work / "c"))
    assert (work / "c").read_text() == "A"
    out = await host.open("rename", src=str(work / "zz"), dst=str(work / "y")).outcome()
    assert out.final["code"] == "not_found"


@pytest.mark.parametrize(
    ("op", "args", "code"),
    [
        ("read", {"path": "relative/file"}, "invalid_argument"),
        ("read", {"path": "/proc/self/environ"}, "permission_denied"),
        ("read", {"path": "/tmp/../proc/1/mem"}, "permission_denied"),
        ("stat", {"path": "/sys"}, "permission_denied"),
        ("write", {"path": "/dev/sda"}, "permission_denied"),
        ("list", {"path": "/run/sietch"}, "permission_denied"),
        ("read", {"path": "/tmp/a\0b"}, "permission_denied"),
        ("read", {"path": 42}, "invalid_argument"),
        ("remove", {"path": "/"}, "permission_denied"),
    ],
)
async def test_path_errors(host: HostConnection, op: str, args: dict[str, Any], code: str) -> None:
    """Bad paths are refused before any filesystem call, with the stable code."""
    s = host.open(op, **args)
    s.eof()
    out = await s.outcome()
    assert out.final["code"] == code, out.final


async def test_symlink_into_proc_is_refused(host: HostConnection, work: Path) -> None:
    """A symlink cannot smuggle a read or write into /proc."""
    (work / "env").symlink_to("/proc/self/environ")
    out = await host.open("read", path=str(work / "env")).outcome()
    assert out.final["code"] == "permission_denied"
    s = host.open("write", path=str(work / "env"))
    s.eof()
    assert (await s.outcome()).final["code"] == "permission_denied"


async def test_read_errors(host: HostConnection, work: Path) -> None:
    """Missing files and directories give not_found and is_a_directory, naming the path."""
    out = await host.open("read", path=str(work / "missing")).outcome()
    assert out.final["code"] == "not_found" and "missing" in out.final["message"]
    out = await host.open("read", path=str(work)).outcome()
    assert out.final["code"] == "is_a_directory"


async def test_read_hundred_mib_with_flat_memory(host: HostConnection, work: Path) -> None:
    """100 MiB stream through the agent without its memory growing with the file."""
    path = work / "huge"
    with open(path, "wb") as f:
        f.truncate(100 << 20)  # sparse: cheap to make, real bytes to read
    pid = (await host.call("hello"))["pid"]
    s = host.open("read", path=str(path))
    total, peak = 0, 0
    while True:
        event = await s.next()
        if event[0] == "data":
            total += len(event[2])
            if total % (8 << 20) < P.CHUNK:
                peak = max(peak, _rss(pid))
        elif event[0] == "close":
            break
    assert total == 100 << 20
    assert peak < 80 << 20, f"agent RSS reached {peak >> 20} MiB"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_concurrent_file_and_exec_streams(host: HostConnection, work: Path) -> None:
    """Writes, reads and execs interleave on one connection without mixing bytes."""
    blobs = {f"f{i}": os.urandom(300_000 + i) for i in range(10)}
    await asyncio.gather(*(_write(host, str(work / k), v) for k, v in blobs.items()))
    outs = await asyncio.gather(
        *(host.open("read", path=str(work / k)).outcome() for k in blobs),
        *(host.run(argv=["cat", str(work / k)]) for k in blobs),
    )
    expected = list(blobs.values()) * 2
    assert [o.stdout for o in outs] == expected
