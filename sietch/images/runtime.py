"""The tools disk's own Python runtime: python3.11, its stdlib and exactly the libraries it loads.

The guest agent must run on any user image (some have no python3, or another
libc), so the tools disk carries everything down to the dynamic loader, and
the agent is started through that loader (see ``tools.LAUNCHER``); nothing of
the user's rootfs is loaded.

Built from a minbase tree (the expensive ``mmdebstrap``, cached on its own so
an agent change only re-runs ``mkfs``), then cut down to what is reachable:
the interpreter, ``resize2fs`` and every stdlib extension, plus the
transitive closure of their shared libraries as the loader itself resolves it.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._cache import digest
from sietch.images._run import run
from sietch.images.debootstrap import NO_DOCS, SUITE, mmdebstrap
from sietch.images.progress import Progress

log = logging.getLogger(__name__)

PACKAGES = ("python3", "e2fsprogs")
PYTHON = "python3.11"
GUEST_ROOT = "/run/sietch"
"""Where the tools disk is mounted in the guest."""
LIBDIR = "usr/lib/x86_64-linux-gnu"
LOADER = "lib64/ld-linux-x86-64.so.2"
RESIZE2FS = "usr/libexec/resize2fs"
AGENT_DIR = "agent"
"""Agent code, relative to the tools disk root."""
EXTRA_LIBS = ("libgcc_s.so.1",)
"""Loaded with dlopen, so invisible to ldd: glibc needs libgcc_s for pthread_exit/cancel."""
STDLIB_PRUNE = (
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__",
    "_test*.so", "_ctypes_test*.so", "_xxtestfuzz*.so", "xxlimited*.so", "*.exe",
)  # fmt: skip
_FORMAT = 1

# A ._pth file next to the interpreter fixes sys.path and puts Python in
# isolated mode (3.11+, all platforms): no PYTHONHOME/PYTHONPATH needed, so
# none leak into the processes the agent starts, and the user's PYTHON*
# variables can never reach the agent. No site import either: faster start.
PTH = f"../lib/{PYTHON}\n../lib/{PYTHON}/lib-dynload\n../../{AGENT_DIR}\n"


def runtime_key() -> str:
    """Hash of the runtime recipe."""
    return digest("runtime", _FORMAT, SUITE, PACKAGES, NO_DOCS, EXTRA_LIBS, STDLIB_PRUNE, PTH)


def python_argv(root: Path) -> list[str]:
    """Command prefix running the runtime's python under ``root`` through its own loader."""
    return [
        str(root / LOADER), "--inhibit-cache", "--library-path", str(root / LIBDIR),
        str(root / "usr/bin" / PYTHON),
    ]  # fmt: skip


def _closure(tree: Path, binaries: list[Path]) -> dict[str, Path]:
    """soname -> file in ``tree`` for every library ``binaries`` load, per the loader itself."""
    loader = tree / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    found: dict[str, Path] = {}
    for binary in binaries:
        out = run(
            [loader, "--inhibit-cache", "--library-path", tree / LIBDIR, "--list", binary],
            what=f"list the libraries of {binary.name}",
        )
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (\S+) \(0x", line)
            if not m:
                if "not found" in line:
                    raise ImageBuildError(f"{binary.name} needs a missing library: {line.strip()}")
                continue
            name, path = m.group(1), Path(m.group(2))
            if not path.resolve().is_relative_to(tree.resolve()):
                raise ImageBuildError(f"{binary.name} resolved {name} outside the tree: {path}")
            found[Path(name).name] = path.resolve()
    return found


def build_runtime(work: Path, progress: Progress) -> Path:
    """Bootstrap and cut down the runtime into ``work``; returns the runtime tree."""
    progress("tools runtime: mmdebstrap", None)
    full = mmdebstrap(work / "full", PACKAGES)

    progress("tools runtime: selecting files", None)
    out = work / "runtime"
    (out / "usr/bin").mkdir(parents=True)
    (out / "usr/libexec").mkdir()
    (out / LIBDIR).mkdir(parents=True)
    (out / "lib64").mkdir()
    shutil.copy2(full / "usr/bin" / PYTHON, out / "usr/bin" / PYTHON)
    # Not in a bin directory: run directly it would use the user's loader. The
    # tools disk's sbin/resize2fs wrapper runs it through ours.
    shutil.copy2(full / "usr/sbin/resize2fs", out / RESIZE2FS)
    shutil.copytree(
        full / "usr/lib" / PYTHON, out / "usr/lib" / PYTHON,
        symlinks=True, ignore=shutil.ignore_patterns(*STDLIB_PRUNE),
    )  # fmt: skip
    binaries = [out / "usr/bin" / PYTHON, out / RESIZE2FS]
    binaries += sorted((out / "usr/lib" / PYTHON / "lib-dynload").glob("*.so"))
    libs = _closure(full, binaries)
    for name in EXTRA_LIBS:
        libs[name] = (full / LIBDIR / name).resolve()
    for name, path in sorted(libs.items()):
        shutil.copy2(path, out / LIBDIR / name)
    # The tree's own lib64 link is absolute (/lib/...), which in the guest would
    # point into the user's rootfs: give the launcher a real file instead.
    (out / LOADER).hardlink_to(out / LIBDIR / "ld-linux-x86-64.so.2")
    (out / "usr/bin" / f"{PYTHON}._pth").write_text(PTH)
    shutil.rmtree(full)

    progress("tools runtime: compiling the stdlib", None)
    compile_tree(out, out / "usr/lib" / PYTHON)
    check_runtime(out)
    return out


def compile_tree(root: Path, target: Path) -> None:
    """Byte-compile ``target`` with the runtime's own python (so the .pyc match it exactly).

    The .pyc name their sources by guest path, and are never checked against
    the source: the tools disk is read-only, and startup under TCG is slow
    enough that every stat saved counts.
    """
    run(
        [*python_argv(root), "-m", "compileall", "-q", "-j", "0",
         "--invalidation-mode", "unchecked-hash",
         "-s", root, "-p", GUEST_ROOT, target],
        what=f"byte-compile {target.name}",
    )  # fmt: skip


def check_runtime(root: Path) -> None:
    """Fail the build now, not at boot, if the runtime cannot import what the agent uses."""
    probe = (
        "import asyncio, ctypes, hashlib, json, pty, pwd, select, sqlite3, ssl, termios, zlib\n"
        "import sys\n"
        "assert sys.flags.isolated and sys.flags.no_site, 'the ._pth file was not applied'\n"
        "print(sys.version.split()[0])"
    )
    version = run([*python_argv(root), "-c", probe], what="run the tools python").strip()
    log.info("tools runtime: python %s", version)
