"""The artefact cache: content-hash keys, one lock per artefact, atomic publication.

An artefact's path contains the hash of everything that went into it, so a
changed recipe gets a new path (and a rebuild) while an unchanged one is found
by a single ``exists()``. A build runs in a temp dir inside the cache and is
renamed into place only when complete, so a crash never leaves a half-built
artefact under its final name; an ``fcntl`` lock per artefact keeps two
processes from building the same thing at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path

from sietch.storage.publish import publish

log = logging.getLogger(__name__)

HASH_LEN = 16


def _jsonable(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **dataclasses.asdict(obj)}
    if isinstance(obj, bytes):
        return {"sha256": hashlib.sha256(obj).hexdigest()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set | frozenset):
        return sorted(obj) if isinstance(obj, set | frozenset) else list(obj)
    raise TypeError(f"cannot hash {type(obj).__name__}")


def digest(*parts: object) -> str:
    """Short, stable hash of recipe parts (str, numbers, bytes, lists, dicts, dataclasses)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def file_digest(path: Path) -> str:
    """Hash of a file's bytes, remembered while the file's inode, size and mtime stay put."""
    st = path.stat()
    return _file_digest(path.resolve(), st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_digest(path: Path, ino: int, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_dir(path: Path) -> Path:
    """``mkdir -p`` with mode 0755 whatever the umask: QEMU runs as another user and must read."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    return path


def _publishable(path: Path) -> None:
    """Readable by everyone: QEMU runs unprivileged."""
    mode = path.lstat().st_mode
    if stat.S_ISDIR(mode):
        path.chmod(0o755)
    else:
        path.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


class Cache:
    """Artefacts under ``root``, each built at most once at a time across processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the exclusive lock ``name`` (blocks while another process holds it)."""
        with self._flock(name, wait=True):
            yield

    def claim(self, name: str) -> AbstractContextManager[bool]:
        """Hold the lock ``name`` if no one else does (this process's other holders
        included); yields whether this block holds it. Never waits."""
        return self._flock(name, wait=False)

    @contextmanager
    def _flock(self, name: str, *, wait: bool) -> Iterator[bool]:
        lock_file = make_dir(self.root / "locks") / f"{name}.lock"
        with open(lock_file, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.info("waiting for another process building %s", name)
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def ensure(self, final: Path, build: Callable[[Path], Path]) -> Path:
        """Return ``final``, first building it if missing.

        ``build(workdir)`` gets an empty temp dir inside the cache and returns
        the finished artefact (a file or a directory) somewhere inside it; that
        is renamed onto ``final`` in one step. The temp dir is removed whatever
        happens; leftovers of a killed build are swept by the next one.
        """
        if final.exists():
            return final
        name = self._lock_name(final)
        with self.lock(name):
            if final.exists():  # another process built it while we waited
                return final
            make_dir(self.tmp)
            for stale in self.tmp.glob(f"{name}.*"):
                log.info("removing %s, left over by an interrupted build", stale)
                shutil.rmtree(stale, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=self.tmp))
            try:
                result = build(work)
                _publishable(result)
                make_dir(final.parent)
                publish(result, final, many_files=result.is_dir())
            finally:
                shutil.rmtree(work, ignore_errors=True)
        log.info("built %s", final)
        return final

    def remove(self, final: Path) -> None:
        """Delete an artefact, after any build of it in progress has finished."""
        with self.lock(self._lock_name(final)):
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink(missing_ok=True)
        log.info("removed %s", final)

    def _lock_name(self, final: Path) -> str:
        return str(final.relative_to(self.root)).replace("/", "%")
