"""Node-to-node copies (:mod:`sietch.core.transfer`), without a VM: what arrives is what
was sent, and a stream that was altered or cut on the way is refused, never taken."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sietch.core import transfer
from sietch.errors import InvalidArgument

PAYLOAD = b"layer-bytes:" + os.urandom(3 << 20)


async def _sent(tmp_path: Path) -> bytes:
    """The stream of a directory of two files (one of them nested), as a node sends it."""
    source = tmp_path / "source"
    (source / "layers").mkdir(parents=True)
    (source / "layers" / "disk.qcow2").write_bytes(PAYLOAD)
    (source / "snapshot.json").write_text('{"id": "snap-000000000001"}')
    files: transfer.Files = [
        (p.relative_to(source).as_posix(), p) for p in sorted(source.rglob("*")) if p.is_file()
    ]
    return b"".join([chunk async for chunk in transfer.export_files(files, "a test copy")])


async def _chunks(data: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_copy_arrives_whole(tmp_path: Path) -> None:
    """Every file, nested ones too, arrives with its bytes."""
    into = tmp_path / "into"
    await transfer.receive(into, _chunks(await _sent(tmp_path)))
    assert (into / "layers" / "disk.qcow2").read_bytes() == PAYLOAD
    assert (into / "snapshot.json").read_text() == '{"id": "snap-000000000001"}'


async def test_a_byte_changed_on_the_way_is_refused(tmp_path: Path) -> None:
    """One byte of a file's contents flipped in the stream: the checksum names the file."""
    sent = bytearray(await _sent(tmp_path))
    at = sent.index(b"layer-bytes:") + (1 << 20)
    sent[at] ^= 0xFF
    with pytest.raises(InvalidArgument, match=r"does not match its checksums: \['layers/disk"):
        await transfer.receive(tmp_path / "into", _chunks(bytes(sent)))


async def test_a_stream_cut_short_is_refused(tmp_path: Path) -> None:
    """A stream that ends before its checksums (a sender that died half way) is refused."""
    sent = await _sent(tmp_path)
    with pytest.raises(InvalidArgument, match="cut short"):
        await transfer.receive(tmp_path / "into", _chunks(sent[: sent.index(b"SHA256SUMS")]))
