"""File operations: streamed read and write of any size, and the small ones.

Every filesystem call runs in a worker thread: a disk behind emulated virtio
can stall for a long time, and the event loop also carries every other
stream. Streamed bodies move in bounded chunks, with credit returned only as
bytes reach the disk (write) or leave the queue (read), so memory stays flat
however large the file.

Paths must be absolute; they are normalised and refused under /proc, /sys,
/dev and the tools disk, also when a symlink leads there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sietch.agent import protocol as P
from sietch.agent.guest.errors import OpError, arg_bool, arg_int, from_os_error
from sietch.agent.guest.stream import Stream

if TYPE_CHECKING:
    from sietch.agent.guest.ops import Agent

T = TypeVar("T")
log = logging.getLogger(__name__)

FORBIDDEN = ("/proc", "/sys", "/dev", "/run/sietch")
READ_BLOCK = 256 * 1024
READ_AHEAD = 512 * 1024
"""Bytes a read may have queued on its stream before it waits."""
WRITE_BATCH = 1 << 20
MAX_LIST_BYTES = P.MAX_PAYLOAD - 64 * 1024
"""A listing must fit one MSG; beyond this it is cut short and says so."""


# -- paths ------------------------------------------------------------------


def clean_path(args: dict[str, Any], key: str = "path") -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise OpError("invalid_argument", f"argument {key!r} must be a non-empty path")
    if "\0" in value:
        raise OpError("permission_denied", f"{key} {value!r} contains a NUL byte")
    if not value.startswith("/"):
        raise OpError("invalid_argument", f"{key} {value!r} is not absolute")
    path = "/" + os.path.normpath(value).lstrip("/")
    _refuse(path, value)
    return path


def _refuse(path: str, shown: str) -> None:
    for top in FORBIDDEN:
        if path == top or path.startswith(top + "/"):
            raise OpError("permission_denied", f"{shown}: {top} is off limits")


def _refuse_resolved(path: str, *, follow: bool) -> None:
    """The same limits for where a path leads, through symlinks."""
    if follow:
        real = os.path.realpath(path)
    else:
        parent, name = os.path.split(path)
        real = os.path.join(os.path.realpath(parent), name)
    _refuse(real, f"{path} (via {real})" if real != path else path)


def _owner_for_new(parent: str) -> tuple[int, int] | None:
    """New files take their directory's owner: what the host writes into a user's
    home must be usable by that user, though the agent runs as root."""
    if os.geteuid() != 0:
        return None
    st = os.stat(parent)
    return (st.st_uid, st.st_gid) if (st.st_uid, st.st_gid) != (0, 0) else None


def _makedirs(path: str, mode: int = 0o755) -> None:
    missing: list[str] = []
    head = path
    while head != "/" and not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        owner = _owner_for_new(os.path.dirname(directory))
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise OpError(
                    "not_a_directory", f"{directory}: exists and is not a directory"
                ) from None
            continue
        os.chmod(directory, mode)  # exactly this mode, whatever the umask
        if owner is not None:
            os.chown(directory, *owner)


def _entry(path: str, st: os.stat_result) -> dict[str, Any]:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        kind = "file"
    elif stat.S_ISDIR(mode):
        kind = "dir"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
    else:
        kind = "other"
    entry: dict[str, Any] = {
        "name": os.path.basename(path) or "/",
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mode": stat.S_IMODE(mode),
        "mtime": st.st_mtime,
    }
    if kind == "symlink":
        try:
            entry["target"] = os.readlink(path)
        except OSError:
            entry["target"] = None
    return entry


# -- running blocking calls -------------------------------------------------


class _Worker:
    """Runs one blocking call at a time in a thread, and lets cleanup wait for it.

    Cancelling the task that awaits a thread does not stop the thread; closing
    a descriptor under a still-running read or write could hit a reused fd
    number. So cleanup first waits for the last call to really end.
    """

    def __init__(self) -> None:
        self._last: asyncio.Future[Any] | None = None

    async def __call__(
        self, fn: Callable[..., T], *args: Any, release: Callable[[T], None] | None = None
    ) -> T:
        """Run ``fn`` in a thread; if we are cancelled meanwhile, ``release`` what it returns.

        A stream closed while the thread opens its file cancels the op before
        it holds what the thread returns: without ``release`` the descriptor,
        and a write's temp file, would outlive it.
        """
        fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        self._last = fut
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if release is not None:
                fut.add_done_callback(lambda done: _release_result(done, release))
            raise

    async def settle(self) -> None:
        fut = self._last
        while fut is not None and not fut.done():
            try:
                await asyncio.wait([fut])
            except asyncio.CancelledError:
                continue  # already unwinding; the thread must still finish first


def _release_result(done: asyncio.Future[T], release: Callable[[T], None]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    try:
        release(done.result())
    except OSError as exc:
        log.warning("releasing an abandoned open failed: %s", exc)


def _oserrors(what: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except OSError as exc:
        raise from_os_error(exc, what) from None


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -- write ------------------------------------------------------------------


def _open_temp(path: str, mode: int | None, parents: bool, append: bool) -> tuple[int, str, str]:
    """Open a temp file beside the target; (fd, temp path, final path)."""
    _refuse_resolved(path, follow=True)
    target = os.path.realpath(path) if os.path.islink(path) else path
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    if old is not None and stat.S_ISDIR(old.st_mode):
        raise OpError("is_a_directory", f"{path}: is a directory")
    parent, name = os.path.split(target)
    if not os.path.isdir(parent):
        if not parents:
            raise OpError("not_found", f"{path}: parent directory {parent} does not exist")
        _makedirs(parent)
    temp = f"{parent}/.{name}.sietch-{os.urandom(6).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if old is not None and append:
            with open(target, "rb") as src:
                while os.sendfile(fd, src.fileno(), None, 1 << 30):
                    pass
        owner = (old.st_uid, old.st_gid) if old is not None else _owner_for_new(parent)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        # After the chown, which clears setuid and setgid bits (for root too).
        os.fchmod(fd, mode if mode is not None else stat.S_IMODE(old.st_mode) if old else 0o644)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    return fd, temp, target


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _commit(fd: int, temp: str, target: str) -> int:
    size = os.fstat(fd).st_size
    os.replace(temp, target)
    return size


def _discard(temp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


def _abandon_write(opened: tuple[int, str, str]) -> None:
    fd, temp, _ = opened
    os.close(fd)
    _discard(temp)


async def op_write(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    """Args: path, mode, parents, append; and size, what the host expects to send, read
    only by sietch-front (it writes small files itself, sietch/agent/fast/files.c)."""
    path = clean_path(args)
    mode = arg_int(args, "mode")
    if mode is not None and not 0 <= mode <= 0o7777:
        raise OpError("invalid_argument", f"invalid mode {mode:o}")
    worker = _Worker()
    fd, temp, target = await worker(
        _oserrors,
        path,
        _open_temp,
        path,
        mode,
        arg_bool(args, "parents", True),
        arg_bool(args, "append", False),
        release=_abandon_write,
    )
    try:
        pending: tuple[Any, ...] | None = None
        while True:
            event = pending or await stream.recv()
            pending = None
            if event[0] == "eof":
                break
            if event[0] != "data" or event[1] != P.CHANNEL_IN:
                continue
            # Batch what has already arrived into one trip to the thread.
            chunks, size = [event[2]], len(event[2])
            while size < WRITE_BATCH and (more := stream.recv_nowait()) is not None:
                if more[0] != "data":
                    pending = more
                    break
                if more[1] == P.CHANNEL_IN:
                    chunks.append(more[2])
                    size += len(more[2])
            await worker(_oserrors, path, _write_all, fd, chunks)
            stream.consumed(size)
        final = await worker(_oserrors, path, _commit, fd, temp, target)
        temp = ""  # it is the real file now
        return {"path": path, "size": final}
    finally:
        await worker.settle()
        if temp:
            await _run(_discard, temp)
        os.close(fd)


# -- read -------------------------------------------------------------------


def _open_read(path: str) -> tuple[int, os.stat_result]:
    _refuse_resolved(path, follow=True)
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise OpError("is_a_directory", f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device could block the thread forever.
        raise OpError("invalid_argument", f"{path}: not a regular file")
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC), st


async def op_read(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    path = clean_path(args)
    offset = arg_int(args, "offset", 0) or 0
    length = arg_int(args, "length")
    if offset < 0 or (length is not None and length < 0):
        raise OpError("invalid_argument", "offset and length must not be negative")
    worker = _Worker()
    fd, st = await worker(
        _oserrors, path, _open_read, path, release=lambda opened: os.close(opened[0])
    )
    try:
        stream.send(
            {
                "type": "stat",
                "size": st.st_size,
                "mode": stat.S_IMODE(st.st_mode),
                "mtime": st.st_mtime,
            }
        )
        sent = 0
        while length is None or sent < length:
            want = READ_BLOCK if length is None else min(READ_BLOCK, length - sent)
            data = await worker(_oserrors, path, os.pread, fd, want, offset + sent)
            if not data:
                break
            sent += len(data)
            stream.write(P.CHANNEL_STDOUT, data)
            await stream.drained(READ_AHEAD)
        return {"size": sent}
    finally:
        await worker.settle()
        os.close(fd)


# -- the small ones ---------------------------------------------------------


def _list(path: str, depth: int) -> dict[str, Any]:
    _refuse_resolved(path, follow=True)
    if not os.path.isdir(path):
        os.stat(path)  # raises not_found for a missing path
        raise OpError("not_a_directory", f"{path}: not a directory")
    entries: list[dict[str, Any]] = []
    budget = MAX_LIST_BYTES
    truncated = False

    def walk(directory: str, level: int) -> None:
        nonlocal budget, truncated
        try:
            with os.scandir(directory) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            if level == 1:
                raise
            return  # an unreadable subdirectory is left out, not fatal
        for item in found:
            if truncated:
                return
            try:
                entry = _entry(item.path, item.stat(follow_symlinks=False))
            except OSError:
                continue
            budget -= 120 + len(item.path) * 2 + len(entry.get("target") or "")
            if budget < 0:
                truncated = True
                return
            entries.append(entry)
            if (
                level < depth
                and item.is_dir(follow_symlinks=False)
                and not any(item.path == t or item.path.startswith(t + "/") for t in FORBIDDEN)
            ):
                walk(item.path, level + 1)

    walk(path, 1)
    return {"entries": entries, "truncated": truncated}


async def op_list(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    path = clean_path(args)
    depth = arg_int(args, "depth", 1) or 1
    if depth < 1:
        raise OpError("invalid_argument", "depth must be at least 1")
    return await _run(_oserrors, path, _list, path, depth)


def _stat(path: str) -> dict[str, Any]:
    _refuse_resolved(path, follow=False)
    st = os.lstat(path)
    # Nested: an entry's "type" would clash with the final MSG's "type": "result".
    return {"entry": {**_entry(path, st), "uid": st.st_uid, "gid": st.st_gid}}


async def op_stat(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    path = clean_path(args)
    return await _run(_oserrors, path, _stat, path)


def _mkdir(path: str, parents: bool, mode: int) -> None:
    _refuse_resolved(path, follow=False)
    if os.path.isdir(path):
        if parents:
            return
        raise OpError("exists", f"{path}: already exists")
    if os.path.lexists(path):
        raise OpError("exists", f"{path}: exists and is not a directory")
    if parents:
        _makedirs(path, mode)
        return
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise OpError("not_found", f"{path}: parent directory {parent} does not exist")
    owner = _owner_for_new(parent)
    os.mkdir(path, mode)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)


async def op_mkdir(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    path = clean_path(args)
    mode = arg_int(args, "mode", 0o755)
    if mode is None or not 0 <= mode <= 0o7777:
        raise OpError("invalid_argument", "invalid mode")
    await _run(_oserrors, path, _mkdir, path, arg_bool(args, "parents", True), mode)
    return {"path": path}


def _remove(path: str, recursive: bool) -> None:
    _refuse_resolved(path, follow=False)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
    elif not recursive:
        os.rmdir(path)
    else:
        import shutil

        shutil.rmtree(path)


async def op_remove(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    path = clean_path(args)
    if path == "/":
        raise OpError("permission_denied", "/: removing the root directory is not allowed")
    await _run(_oserrors, path, _remove, path, arg_bool(args, "recursive", False))
    return {}


def _rename(src: str, dst: str, overwrite: bool) -> None:
    _refuse_resolved(src, follow=False)
    _refuse_resolved(dst, follow=False)
    os.lstat(src)  # a missing source is reported as such, not as a dst problem
    if not overwrite and os.path.lexists(dst):
        raise OpError("exists", f"{dst}: already exists")
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # another filesystem: copy, then delete
            raise from_os_error(exc, f"rename {src} -> {dst}") from None
        import shutil

        shutil.move(src, dst)


async def op_rename(agent: Agent, stream: Stream, args: dict[str, Any]) -> dict[str, Any]:
    src, dst = clean_path(args, "src"), clean_path(args, "dst")
    if src == "/" or dst == "/":
        raise OpError("permission_denied", "renaming / is not allowed")
    await _run(_oserrors, src, _rename, src, dst, arg_bool(args, "overwrite", False))
    return {}
