"""ImageStore: the one entry point for the guest kernel, initramfs, tools disk and root images.

Cache layout (under ``<cache_dir>/images``; every name carries the hash of its recipe)::

    kernel/<hash>/vmlinux, vmlinuz, config, info.json, modules/<release>/
    initramfs/<hash>.cpio
    runtime/<hash>/            tools disk's python runtime (the slow mmdebstrap part)
    codeserver/<hash>/         code-server and its node, for the images that have it
    novnc/<hash>/              noVNC, which the server's desktop viewer serves (desktop images)
    webui/<hash>/              the web console's npm packages (htmx, xterm.js, axe-core)
    rootfs-tree/<hash>/        a Debian rootfs' mmdebstrap tree, before its files and mkfs
    tools/<hash>.ext4
    rootfs/<name>-<hash>.ext4
    locks/, tmp/               per-artefact build locks; builds in progress

Templates of built-in images, shared by the servers of the machine, are beside it in
``<cache_dir>/templates`` (:mod:`sietch.images.templates`); :meth:`ImageStore.prune`
removes those whose image files it removed.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sietch.images import codeserver as _codeserver
from sietch.images import initramfs as _initramfs
from sietch.images import kernel as _kernel
from sietch.images import novnc as _novnc
from sietch.images import rootfs as _rootfs
from sietch.images import runtime as _runtime
from sietch.images import tools as _tools
from sietch.images import webui as _webui
from sietch.images._cache import Cache
from sietch.images.progress import Progress, no_progress
from sietch.images.templates import TemplateCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageInfo:
    """A built root filesystem image."""

    name: str
    hash: str
    path: Path
    size_bytes: int
    """Virtual size: the smallest disk a sandbox of this image can have."""
    created_at: datetime
    disk_bytes: int = 0
    """Space the sparse file really takes on the host."""
    current: bool = True
    """Built from today's recipe; False for an older build still in the cache."""
    description: str = ""


class ImageStore:
    """Builds (on first use) and finds every image a sandbox boots from.

    Safe to use from several threads and processes at once: each artefact is
    built by one of them while the others wait for it.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self._cache = Cache(self.cache_dir / "images")

    # -- the artefacts -------------------------------------------------------

    def kernel(self) -> Path:
        """The guest kernel for ``-kernel``: its ELF vmlinux (PVH entry), else the bzImage."""
        return self._kernel(no_progress).boot_image

    def initramfs(self) -> Path:
        """The initramfs (uncompressed cpio)."""
        return self._initramfs(no_progress)

    def tools(self) -> Path:
        """The read-only tools disk image (agent and its runtime)."""
        return self._tools(no_progress)

    def rootfs(self, name: str = "default") -> Path:
        """The ext4 root image of the built-in image ``name``."""
        return self._rootfs(name, no_progress)

    def build(self, name: str = "default", progress: Progress | None = None) -> ImageInfo:
        """Build whatever is missing for image ``name``: kernel, initramfs, tools disk, rootfs.

        ``progress(stage, fraction)`` hears each stage; ``fraction`` is the
        share of the four artefacts already done. A fully cached build does
        no work and returns at once.
        """
        recipe = _rootfs.recipe(name)  # unknown name: fail before building anything
        report = progress or no_progress
        steps: list[Callable[[Progress], object]] = [
            self._kernel,
            self._initramfs,
            self._tools,
            lambda p: self._rootfs(name, p),
        ]
        if recipe.code_server:  # a desktop image: the server's viewer for it too
            steps.append(self._novnc)
        steps.append(self._webui)  # the web console the server serves
        for done, step in enumerate(steps):
            step(_at_fraction(report, done / len(steps)))
        report(f"image {name}: ready", 1.0)
        return self._info(self._rootfs(name, no_progress), recipe.description)

    def novnc(self) -> Path:
        """Where the noVNC library is (built with the desktop image; may not exist)."""
        return self._cache.path("novnc", _novnc.novnc_key())

    def webui(self) -> Path:
        """Where the web console's packages are (built with any image; may not exist)."""
        return self._cache.path("webui", _webui.webui_key())

    def list(self) -> list[ImageInfo]:
        """Every built root image in the cache, current builds first within each name."""
        found = []
        for path in self._cache.path("rootfs").glob("*.ext4"):
            name = path.stem.rpartition("-")[0]
            r = _rootfs.RECIPES.get(name)
            found.append(self._info(path, r.description if r else ""))
        return sorted(found, key=lambda i: (i.name, not i.current, -i.created_at.timestamp()))

    def names(self) -> builtins.list[str]:
        """The built-in image recipes."""
        return list(_rootfs.RECIPES)

    def prune(self, keep: Iterable[Path] = ()) -> builtins.list[Path]:
        """Delete the artefacts today's recipes no longer produce; returns what went.

        Every agent edit makes a new tools disk, so a development machine
        collects them. A running VM keeps reading a deleted file, but a
        snapshot restored later needs its files: the manager passes every
        path its sandboxes and snapshots refer to as ``keep``. Shared templates
        (``<cache_dir>/templates``) that run on a removed file go with it.
        """
        wanted = {Path(p).resolve() for p in keep} | self._current()
        removed = []
        kinds = (
            *("kernel", "initramfs", "runtime", "codeserver", "novnc", "webui", "tools"),
            *("rootfs-tree", "rootfs"),
        )
        for kind in kinds:
            for path in sorted(self._cache.path(kind).glob("*")):
                real = path.resolve()
                if any(w == real or w.is_relative_to(real) for w in wanted):
                    continue
                self._cache.remove(path)
                removed.append(path)
        return removed + TemplateCache(self.cache_dir / "templates").prune()

    # -- how each is made ----------------------------------------------------

    def _kernel(self, progress: Progress) -> _kernel.Kernel:
        final = self._cache.path("kernel", _kernel.kernel_key())
        self._cache.ensure(final, lambda work: _kernel.build_kernel(work, progress))
        return _kernel.Kernel.load(final)

    def _initramfs(self, progress: Progress) -> Path:
        kernel = self._kernel(progress)
        final = self._cache.path("initramfs", f"{_initramfs.initramfs_key(kernel)}.cpio")
        return self._cache.ensure(
            final, lambda work: _initramfs.build_initramfs(kernel, work, progress)
        )

    def _runtime(self, progress: Progress) -> Path:
        final = self._cache.path("runtime", _runtime.runtime_key())
        return self._cache.ensure(final, lambda work: _runtime.build_runtime(work, progress))

    def _tools(self, progress: Progress) -> Path:
        sources = _tools.agent_sources()
        key = _tools.tools_key(_runtime.runtime_key(), sources)
        final = self._cache.path("tools", f"{key}.ext4")
        if final.exists():  # the runtime tree is needed only to build
            return final
        runtime = self._runtime(progress)
        return self._cache.ensure(
            final, lambda work: _tools.build_tools(runtime, sources, work, progress)
        )

    def _codeserver(self, progress: Progress) -> Path:
        final = self._cache.path("codeserver", _codeserver.codeserver_key())
        return self._cache.ensure(final, lambda work: _codeserver.build_codeserver(work, progress))

    def _novnc(self, progress: Progress) -> Path:
        return self._cache.ensure(self.novnc(), lambda work: _novnc.build_novnc(work, progress))

    def _webui(self, progress: Progress) -> Path:
        return self._cache.ensure(self.webui(), lambda work: _webui.build_webui(work, progress))

    def _rootfs(self, name: str, progress: Progress) -> Path:
        recipe = _rootfs.recipe(name)
        final = self._cache.path("rootfs", f"{name}-{_rootfs.rootfs_key(recipe)}.ext4")
        if final.exists():  # its tree and code-server are needed only to build
            return final
        base = None
        if recipe.base == "debian":
            tree = self._cache.path("rootfs-tree", _rootfs.tree_key(recipe))
            base = self._cache.ensure(tree, lambda work: _rootfs.build_tree(recipe, work, progress))
        code_server = self._codeserver(progress) if recipe.code_server else None
        return self._cache.ensure(
            final, lambda work: _rootfs.build_rootfs(recipe, work, progress, base, code_server)
        )

    def _current(self) -> set[Path]:
        """Where today's recipes put their artefacts (built or not)."""
        kernel_dir = self._cache.path("kernel", _kernel.kernel_key())
        runtime_key = _runtime.runtime_key()
        tools_key = _tools.tools_key(runtime_key, _tools.agent_sources())
        paths = {
            kernel_dir,
            self._cache.path("runtime", runtime_key),
            self._cache.path("codeserver", _codeserver.codeserver_key()),
            self.novnc(),
            self.webui(),
            self._cache.path("tools", f"{tools_key}.ext4"),
        }
        for name, r in _rootfs.RECIPES.items():
            paths.add(self._cache.path("rootfs", f"{name}-{_rootfs.rootfs_key(r)}.ext4"))
            paths.add(self._cache.path("rootfs-tree", _rootfs.tree_key(r)))
        if kernel_dir.exists():
            key = _initramfs.initramfs_key(_kernel.Kernel.load(kernel_dir))
            paths.add(self._cache.path("initramfs", f"{key}.cpio"))
        else:  # cannot tell which initramfs is current: keep them all
            paths |= set(self._cache.path("initramfs").glob("*"))
        return {p.resolve() for p in paths}

    def _info(self, path: Path, description: str) -> ImageInfo:
        st = path.stat()
        name, _, digest = path.stem.rpartition("-")
        r = _rootfs.RECIPES.get(name)
        return ImageInfo(
            name=name,
            hash=digest,
            path=path,
            size_bytes=st.st_size,
            created_at=datetime.fromtimestamp(st.st_mtime, UTC),
            disk_bytes=st.st_blocks * 512,
            current=r is not None and digest == _rootfs.rootfs_key(r),
            description=description,
        )


def _at_fraction(report: Progress, fraction: float) -> Progress:
    """A callback that reports each stage at the overall ``fraction`` done so far."""

    def progress(stage: str, _: float | None) -> None:
        report(stage, fraction)

    return progress
