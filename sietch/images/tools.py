"""The tools disk: a read-only ext4 the guest mounts at /run/sietch, carrying the agent and
everything it runs on (the runtime tree, busybox, resize2fs), independent of the user's image.

Layout in the guest::

    bin/sietch-agent        launcher (what the initramfs hands over to)
    bin/sietch-front        the agent's compiled hot path (sietch/agent/fast), which
                            forks off to serve the port and execs the Python agent
    bin/sietch-python       the runtime's python, for anything else that needs one
    bin/busybox, bin/<applet> -> busybox
    sbin/resize2fs          wrapper running usr/libexec/resize2fs through our loader
    lib64/, usr/            the runtime (see runtime.py)
    agent/sietch/...        the agent package; found through usr/bin/python3.11._pth
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import sietch.agent
from sietch.images._cache import digest, file_digest
from sietch.images.busybox import busybox, install_applets
from sietch.images.ext4 import MKFS_OPTIONS, mkfs, tree_size
from sietch.images.front import CFLAGS, SOURCE_DIR, compile_front, front_sources
from sietch.images.progress import Progress
from sietch.images.runtime import (
    AGENT_DIR,
    GUEST_ROOT,
    LIBDIR,
    LOADER,
    PYTHON,
    RESIZE2FS,
    compile_tree,
)

log = logging.getLogger(__name__)

LABEL = "sietch-tools"
_FORMAT = 1


def _script(program: str, *, prelude: str = "", runner: str = "") -> str:
    """A busybox sh script that runs the tools disk's ``program`` through the tools' own loader.

    ``--inhibit-cache``: the /etc/ld.so.cache in the guest is the user's, never ours.
    """
    return (
        f"#!{GUEST_ROOT}/bin/busybox sh\n{prelude}"
        f"exec {runner}{GUEST_ROOT}/{LOADER} --inhibit-cache"
        f" --library-path {GUEST_ROOT}/{LIBDIR} \\\n"
        f'    {GUEST_ROOT}/{program} "$@"\n'
    )


FRONT = "bin/sietch-front"
FASTPATH_OFF = "sietch.fastpath=0"
"""On the guest kernel's command line: the launcher leaves the front out."""
LAUNCHER = _script(
    f"usr/bin/{PYTHON} -m sietch.agent.guest",
    prelude=(
        "# The guest agent, on the tools disk's own python through its own loader:\n"
        "# nothing of the user's rootfs (its libc, its python3 or lack of one) is used.\n"
        "# sietch-front (the compiled hot path) forks off to serve the port, then execs\n"
        "# the rest, so Python stays PID 1; sietch.fastpath=0 on the kernel command\n"
        "# line leaves it out.\n"
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"FRONT={GUEST_ROOT}/{FRONT}\n"
        "read -r CMDLINE < /proc/cmdline\n"
        f'case " $CMDLINE " in *" {FASTPATH_OFF} "*) FRONT= ;; esac\n'
    ),
    runner="$FRONT ",
)
SCRIPTS = {
    "bin/sietch-agent": LAUNCHER,
    "bin/sietch-python": _script(f"usr/bin/{PYTHON}"),
    "sbin/resize2fs": _script(RESIZE2FS),
}


def agent_sources() -> dict[str, bytes]:
    """The agent's files as they go on the disk (path under agent/ -> bytes).

    Only what the guest needs: ``sietch/__init__.py`` is replaced by an empty
    one (the real one may import host-only libraries).
    """
    package = Path(sietch.agent.__file__).parent
    files = {
        "sietch/__init__.py": b"",
        "sietch/agent/__init__.py": b"",
        "sietch/agent/protocol.py": (package / "protocol.py").read_bytes(),
    }
    for path in sorted((package / "guest").rglob("*.py")):
        files[f"sietch/agent/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    for path in sorted((package / "fast").glob("*.[ch]")):
        files[f"sietch/agent/fast/{path.name}"] = path.read_bytes()
    if "sietch/agent/guest/__main__.py" not in files:
        log.warning("sietch/agent/guest has no __main__.py: the tools disk's agent cannot start")
    return files


def tools_key(runtime_key: str, sources: dict[str, bytes]) -> str:
    """Hash of the tools disk: runtime, busybox, scripts and every agent source file."""
    parts = (file_digest(busybox()), SCRIPTS, MKFS_OPTIONS, CFLAGS, sources)
    return digest("tools", _FORMAT, runtime_key, *parts)


def _stage(runtime: Path, sources: dict[str, bytes], stage: Path) -> None:
    # Hard links: the runtime is tens of MB and lives on the same filesystem.
    shutil.copytree(runtime, stage, symlinks=True, copy_function=os.link)
    stage.chmod(0o755)
    (stage / "bin").mkdir()
    (stage / "sbin").mkdir()
    shutil.copy2(busybox(), stage / "bin/busybox")
    for rel, text in SCRIPTS.items():
        (stage / rel).write_text(text)
        (stage / rel).chmod(0o755)
    install_applets(stage, flat="bin")
    compile_front(front_sources(sources), stage / FRONT)
    agent = stage / AGENT_DIR
    for rel, data in sources.items():
        if rel.startswith(SOURCE_DIR):
            continue  # compiled above; the disk carries the binary only
        (agent / rel).parent.mkdir(parents=True, exist_ok=True)
        (agent / rel).write_bytes(data)


def build_tools(runtime: Path, sources: dict[str, bytes], work: Path, progress: Progress) -> Path:
    """Write the tools disk image (``sources`` from :func:`agent_sources`) into ``work``."""
    progress("tools: staging files", None)
    stage = work / "stage"
    _stage(runtime, sources, stage)
    progress("tools: compiling the agent", None)
    compile_tree(stage, stage / AGENT_DIR)
    progress("tools: mkfs.ext4", None)
    size, inodes = tree_size(stage)
    # No journal: the disk is only ever mounted read-only.
    image = mkfs(stage, work / "tools.ext4", size, label=LABEL, journal=False, inodes=inodes)
    shutil.rmtree(stage)
    log.info("tools disk: %d MiB", size >> 20)
    return image
