"""The guest kernel: Debian's cloud kernel package, downloaded and unpacked into the cache.

The package is never installed: ``apt-get download`` + ``dpkg-deb -x`` leave
the host's /boot and /lib/modules alone. The metapackage is resolved to the
real ``linux-image-<release>`` package once, at the first build; later builds
reuse that kernel until the recipe (the constants below) changes, so a Debian
kernel update never silently changes the kernel under existing templates.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._cache import digest
from sietch.images._run import run
from sietch.images.progress import Progress
from sietch.images.vmlinux import extract_vmlinux

log = logging.getLogger(__name__)

KERNEL_PACKAGE = "linux-image-cloud-amd64"
"""The metapackage; it depends on the current ``linux-image-<release>-cloud-amd64``."""
KERNEL_PIN: str | None = None
"""A real package (``linux-image-6.1.0-56-cloud-amd64``) to use instead of resolving."""
_FORMAT = 2
"""Bump when the layout produced below changes."""

_APT_OPTS = ("-o", "APT::Sandbox::User=root")  # root downloads into our dir without the _apt dance


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel in the cache."""

    root: Path
    package: str
    version: str
    release: str
    """``uname -r`` of this kernel, the name of its modules directory."""

    @property
    def vmlinuz(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def boot_image(self) -> Path:
        """What QEMU's ``-kernel`` gets: the ELF vmlinux (PVH, boots faster) if there is one."""
        vmlinux = self.root / "vmlinux"
        return vmlinux if vmlinux.exists() else self.vmlinuz

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def modules(self) -> Path:
        return self.root / "modules" / self.release

    @classmethod
    def load(cls, root: Path) -> Kernel:
        info = json.loads((root / "info.json").read_text())
        return cls(root, info["package"], info["version"], info["release"])


def kernel_key() -> str:
    """Hash of the kernel recipe."""
    return digest("kernel", _FORMAT, KERNEL_PACKAGE, KERNEL_PIN)


def _depends(package: str) -> list[str]:
    out = run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", package],
        what=f"look up {package}",
    )
    return re.findall(r"^\s*Depends:\s*(linux-image-\S+)", out, re.MULTILINE)


def resolve_package() -> str:
    """The real kernel package behind the metapackage (``apt-get update`` if apt knows nothing)."""
    if KERNEL_PIN:
        return KERNEL_PIN
    try:
        found = _depends(KERNEL_PACKAGE)
    except ImageBuildError:
        found = []
    if not found:
        log.info("apt knows no %s; running apt-get update", KERNEL_PACKAGE)
        run(["apt-get", "update", "-q"], what="update the apt package lists", timeout=600)
        found = _depends(KERNEL_PACKAGE)
    if not found:
        raise ImageBuildError(f"{KERNEL_PACKAGE} depends on no linux-image package")
    return found[0]


def build_kernel(work: Path, progress: Progress) -> Path:
    """Download and unpack the kernel into ``work``; returns the finished kernel directory."""
    progress("kernel: resolving package", None)
    package = resolve_package()
    progress(f"kernel: downloading {package}", None)
    download = work / "download"
    download.mkdir()
    run(["apt-get", *_APT_OPTS, "download", package], what=f"download {package}",
        cwd=download, timeout=900)  # fmt: skip
    debs = list(download.glob("*.deb"))
    if len(debs) != 1:
        raise ImageBuildError(f"apt-get download {package} left {len(debs)} .deb files, not 1")
    version = run(["dpkg-deb", "-f", debs[0], "Version"], what="read the kernel version").strip()

    progress("kernel: unpacking", None)
    unpacked = work / "unpacked"
    run(["dpkg-deb", "-x", debs[0], unpacked], what=f"unpack {debs[0].name}")
    images = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise ImageBuildError(f"{debs[0].name} holds {len(images)} vmlinuz files, not 1")
    release = images[0].name.removeprefix("vmlinuz-")
    modules = unpacked / "lib" / "modules" / release
    if not modules.is_dir():
        modules = unpacked / "usr" / "lib" / "modules" / release
    if not modules.is_dir():
        raise ImageBuildError(f"{debs[0].name} has no modules directory for {release}")

    out = work / "kernel"
    (out / "modules").mkdir(parents=True)
    images[0].replace(out / "vmlinuz")
    progress("kernel: extracting vmlinux", None)
    extract_vmlinux(out / "vmlinuz", out / "vmlinux")
    config = unpacked / "boot" / f"config-{release}"
    if config.exists():
        config.replace(out / "config")
    modules.replace(out / "modules" / release)
    info = {"package": package, "version": version, "release": release}
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(unpacked)
    shutil.rmtree(download)
    log.info("kernel %s %s (%s) unpacked", package, version, release)
    return out
