"""Compiling sietch-front, the guest agent's compiled hot path (``sietch/agent/fast``).

Built from its C source by the set-up command with Debian's gcc and glibc's static
libc (``gcc``/``libc6-dev``, in bootstrap.sh's packages): static, so it needs nothing
from the user's image or the tools disk's runtime. Why a compiled part exists at all
is in the README ("The guest agent's compiled hot path").
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sietch.agent import protocol
from sietch.agent.guest import AGENT_VERSION
from sietch.errors import ImageBuildError
from sietch.images._run import run

SOURCE_DIR = "sietch/agent/fast/"
"""Where the front's sources sit among :func:`sietch.images.tools.agent_sources`' files."""
CC = "gcc"
CFLAGS = (
    "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2",
    "-fstack-protector-strong", "-static",
    f'-DAGENT_VERSION="{AGENT_VERSION}"', f"-DPROTOCOL_VERSION={protocol.PROTOCOL_VERSION}",
)  # fmt: skip
"""Part of the tools disk's key: a change of flags is a new disk."""


def front_sources(sources: dict[str, bytes]) -> dict[str, bytes]:
    """The front's C files among the agent's, by file name."""
    return {
        rel[len(SOURCE_DIR) :]: data for rel, data in sources.items() if rel.startswith(SOURCE_DIR)
    }


def compile_front(sources: dict[str, bytes], out: Path) -> None:
    """Compile the C files of ``sources`` (name -> bytes) into the static binary ``out``."""
    if shutil.which(CC) is None:
        raise ImageBuildError(
            f"{CC} not found: the guest agent's compiled part (sietch-front) is built with "
            "Debian's gcc and libc6-dev; run ./bootstrap.sh install"
        )
    with tempfile.TemporaryDirectory(prefix="sietch-front-") as tmp:
        for name, data in sources.items():
            (Path(tmp) / name).write_bytes(data)
        units = sorted(name for name in sources if name.endswith(".c"))
        run([CC, *CFLAGS, "-o", out, *units], what="compile sietch-front", cwd=Path(tmp))
    out.chmod(0o755)
