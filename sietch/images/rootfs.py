"""Root filesystems: the built-in recipes and the builders that turn them into ext4 images."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sietch.errors import ImageBuildError, ImageNotFound
from sietch.images import desktop, interpreter, locales, login
from sietch.images._cache import digest, file_digest
from sietch.images._run import run
from sietch.images.busybox import busybox, install_applets
from sietch.images.codeserver import GUEST_DIR as CODE_SERVER_DIR
from sietch.images.codeserver import HANDSHAKE, codeserver_key, patch_for_emulation
from sietch.images.debootstrap import NO_DOCS, SOURCES, SUITE, mmdebstrap
from sietch.images.ext4 import MKFS_OPTIONS, MiB, mkfs
from sietch.images.progress import Progress

log = logging.getLogger(__name__)

LABEL = "sietch-root"
HOSTNAME = "sietch"
USER, UID = "user", 1000
_FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """What goes into a named root filesystem; its hash names the built image."""

    name: str
    description: str
    size_mib: int
    """Size of the (sparse) image: the smallest disk a sandbox of this image can have."""
    base: Literal["debian", "busybox"] = "debian"
    packages: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    """Shell run by mmdebstrap after install, the tree as ``$1``."""
    files: tuple[tuple[str, int, bytes], ...] = ()
    """(path in the tree, mode, content) written after the hooks."""
    code_server: bool = False
    """Copy the host-built code-server (see codeserver.py) into the tree."""


_DEFAULT_PACKAGES = (
    *("python3", "python3-pip", "python3-venv"),
    *("procps", "iproute2", "ca-certificates", "curl", "less", "sudo", "git"),
    *login.PACKAGES,
)
_ADD_USER = (
    f'chroot "$1" useradd --create-home --uid {UID} --user-group --shell /bin/bash {USER}',
    # What E2B-style agents expect: the unprivileged user may sudo without a password.
    f'echo "{USER} ALL=(ALL) NOPASSWD:ALL" > "$1/etc/sudoers.d/{USER}"',
    f'chmod 0440 "$1/etc/sudoers.d/{USER}"',
)

_DESKTOP = Recipe(
    name="desktop",
    description=(
        "default plus an Xfce desktop on TigerVNC (running at boot), code-server and Chromium"
    ),
    size_mib=4096,
    packages=_DEFAULT_PACKAGES + desktop.PACKAGES,
    hooks=_ADD_USER + desktop.hooks(USER, UID),
    files=desktop.files(USER, UID),
    code_server=True,
)

RECIPES: dict[str, Recipe] = {
    "default": Recipe(
        name="default",
        description=f"Debian {SUITE} with python3, pip, git, curl and a sudo user",
        size_mib=2048,
        packages=_DEFAULT_PACKAGES,
        hooks=_ADD_USER,
    ),
    "minimal": Recipe(
        name="minimal",
        description="busybox only, no python3: proves the agent needs nothing from the image",
        size_mib=256,
        base="busybox",
    ),
    "desktop": _DESKTOP,
    "code-interpreter": Recipe(
        name="code-interpreter",
        description=(
            "default plus a running Jupyter kernel (numpy, pandas, matplotlib) behind "
            "e2b-code-interpreter's gateway on port 49999"
        ),
        size_mib=2048,
        packages=_DEFAULT_PACKAGES + interpreter.PACKAGES,
        hooks=_ADD_USER + interpreter.hooks(USER, UID),
        files=interpreter.files(USER),
    ),
    # The same Debian tree (one build serves both), none of Sietch's desktop services.
    desktop.E2B_IMAGE: dataclasses.replace(
        _DESKTOP,
        name=desktop.E2B_IMAGE,
        description=(
            "the desktop's programs with nothing started (E2B's `desktop` template: the "
            "e2b-desktop SDK starts Xvfb, Xfce, x11vnc and noVNC itself); no code-server"
        ),
        files=desktop.e2b_files(),
        code_server=False,
    ),
}


MEMORY_MIB = {"desktop": 1024, desktop.E2B_IMAGE: 1024}
"""Guest RAM a sandbox of the image gets unless the caller says (Xfce, Chromium and
code-server want more than the default); not part of the image, so not of its hash."""


def recipe(name: str) -> Recipe:
    """The recipe called ``name``; :class:`ImageNotFound` names the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(RECIPES)
        raise ImageNotFound(f"no image named {name!r}; known: {known}", image=name) from None


def rootfs_key(r: Recipe) -> str:
    """Hash of everything that goes into the image built from ``r``."""
    extra: tuple[object, ...] = (
        (SOURCES, NO_DOCS, login.files(), login.STATIC_BASH, locales.KEY)
        if r.base == "debian"
        else (file_digest(busybox()),)
    )
    if r.code_server:
        extra += (codeserver_key(), HANDSHAKE)
    content = dataclasses.replace(r, description="")  # rewording it needs no rebuild
    return digest("rootfs", _FORMAT, content, SUITE, _etc_files(), MKFS_OPTIONS, *extra)


def _etc_files() -> dict[str, str]:
    return {
        "etc/hostname": f"{HOSTNAME}\n",
        "etc/hosts": (
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        ),
        # QEMU user-mode networking's resolver; the agent rewrites this if the
        # network differs.
        "etc/resolv.conf": "nameserver 10.0.2.3\n",
    }


def _busybox_tree(tree: Path) -> None:
    """A root with busybox as its only program, root and ``user`` accounts."""
    tree.mkdir(mode=0o755)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700)):
        (tree / d).mkdir(exist_ok=True)
        (tree / d).chmod(mode)
    shutil.copy2(busybox(), tree / "bin/busybox")
    install_applets(tree)
    files = {
        "etc/passwd": (
            f"root:x:0:0:root:/root:/bin/sh\n{USER}:x:{UID}:{UID}:{USER}:/home/{USER}:/bin/sh\n"
        ),
        "etc/group": f"root:x:0:\n{USER}:x:{UID}:\n",
        "etc/shadow": f"root:*:19000:0:99999:7:::\n{USER}:*:19000:0:99999:7:::\n",
        "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
        "etc/profile": 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nPS1="\\u@\\h:\\w\\$ "\n',
    }
    for rel, text in files.items():
        (tree / rel).write_text(text)
    (tree / "etc/shadow").chmod(0o640)
    home = tree / "home" / USER
    home.mkdir(parents=True)
    os.chown(home, UID, UID)


def tree_key(r: Recipe) -> str:
    """Hash of the Debian tree of ``r``: what mmdebstrap makes, before files and mkfs."""
    return digest("rootfs-tree", _FORMAT, r.packages, r.hooks, SUITE, SOURCES, NO_DOCS)


def build_tree(r: Recipe, work: Path, progress: Progress) -> Path:
    """The Debian tree of ``r`` (the slow part, cached on its own: editing a file of the
    recipe then only re-runs mkfs)."""
    progress(f"rootfs {r.name}: mmdebstrap", None)
    return mmdebstrap(work / "tree", r.packages, hooks=r.hooks)


def build_rootfs(
    r: Recipe,
    work: Path,
    progress: Progress,
    base: Path | None = None,
    code_server: Path | None = None,
) -> Path:
    """Build the image for ``r`` inside ``work``; returns the image file.

    ``base`` is the store's :func:`build_tree` for a Debian recipe;
    ``code_server`` the built code-server, when ``r.code_server`` is set.
    """
    tree = work / "tree"
    if r.base == "debian":
        if base is None:
            raise ImageBuildError(f"the {r.name!r} image needs its Debian tree")
        progress(f"rootfs {r.name}: linking the Debian tree", None)
        # Hard links, owners kept: every file written below is unlinked first,
        # so the cached tree never changes.
        run(["cp", "-a", "--link", base, tree], what="link the Debian tree")
    else:
        if os.geteuid() != 0:
            raise ImageBuildError(f"building the {r.name!r} image needs root (file ownership)")
        progress(f"rootfs {r.name}: busybox tree", None)
        _busybox_tree(tree)
    for rel, text in _etc_files().items():
        path = tree / rel
        path.unlink(missing_ok=True)  # resolv.conf may be a dangling symlink
        path.write_text(text)
        path.chmod(0o644)
    for rel, mode, data in (login.files() if r.base == "debian" else ()) + r.files:
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    if r.base == "debian":
        locales.archive_c_utf8(tree)
        login.link_static_bash(tree)
    if r.code_server:
        if code_server is None:
            raise ImageBuildError(f"the {r.name!r} image needs the built code-server")
        progress(f"rootfs {r.name}: adding code-server", None)
        # Hard links: hundreds of MB on the cache's own filesystem, only read by mkfs.
        installed = tree / CODE_SERVER_DIR.lstrip("/")
        shutil.copytree(code_server, installed, symlinks=True, copy_function=os.link)
        patch_for_emulation(installed)
    progress(f"rootfs {r.name}: mkfs.ext4", None)
    image = mkfs(tree, work / "rootfs.ext4", r.size_mib * MiB, label=LABEL)
    shutil.rmtree(tree)
    return image
