"""The artefact cache on its own: hashing, atomic publication, locking across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sietch.images._cache import Cache, digest


def test_digest_is_stable_and_sensitive() -> None:
    """Equal recipes hash equal whatever the dict order; any change changes the hash."""
    assert digest("x", {"a": 1, "b": [1, 2]}) == digest("x", {"b": [1, 2], "a": 1})
    assert digest("x", (1, 2)) == digest("x", [1, 2])
    assert digest("x", b"script") != digest("x", b"script ")
    assert digest("x", 1) != digest("x", "1")
    assert len(digest("x")) == 16


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    """A build that dies half-way leaves no artefact under its final name and no temp dir."""
    cache = Cache(tmp_path)
    final = cache.path("thing", "abc.img")

    def build(work: Path) -> Path:
        (work / "half.img").write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.ensure(final, build)
    assert not final.exists()
    assert list(cache.tmp.iterdir()) == []


def test_leftovers_of_a_killed_build_are_swept(tmp_path: Path) -> None:
    """A temp dir left by a SIGKILLed build is removed by the next build of that artefact."""
    cache = Cache(tmp_path)
    final = cache.path("thing", "abc.img")
    stale = cache.tmp / "thing%abc.img.dead"
    stale.mkdir(parents=True)

    def build(work: Path) -> Path:
        (work / "out").write_text("ok")
        return work / "out"

    cache.ensure(final, build)
    assert final.read_text() == "ok"
    assert final.stat().st_mode & 0o777 == 0o644
    assert list(cache.tmp.iterdir()) == []


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    """Two processes asking for one artefact at once: one builds, the other waits and reuses it."""
    code = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from sietch.images._cache import Cache

        def build(work):
            with open({str(tmp_path / "builds")!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(0.5)
            (work / "out").write_text("done")
            return work / "out"

        cache = Cache(Path({str(tmp_path / "cache")!r}))
        print(cache.ensure(cache.path("thing", "k"), build).read_text())
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["done", "done"]
    assert len((tmp_path / "builds").read_text().split()) == 1
