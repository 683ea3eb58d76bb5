"""ImageStore on the real cache: built once (the first run takes minutes), then instant."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
from pathlib import Path

import pytest

import sietch.images
from sietch.config import get_settings
from sietch.errors import ImageNotFound
from sietch.images import ImageStore, desktop, rootfs
from sietch.images.codeserver import GUEST_DIR
from sietch.images.initramfs import MODULES, init_script, initramfs_key
from sietch.images.kernel import Kernel
from sietch.images.rootfs import RECIPES, rootfs_key, tree_key
from sietch.images.runtime import runtime_key
from sietch.images.tools import LAUNCHER, agent_sources, tools_key
from sietch.images.vmlinux import has_pvh_entry

BUILD_TIMEOUT = 1800  # from scratch: kernel download + two mmdebstrap runs


@pytest.fixture(scope="module")
def store() -> ImageStore:
    """The store on the configured cache dir, so runs share one set of built images."""
    return ImageStore(get_settings().cache_dir)


@pytest.fixture(scope="module")
def minimal(store: ImageStore) -> sietch.images.ImageInfo:
    return store.build("minimal")


def debugfs(image: Path, request: str) -> str:
    """Read from an ext4 image without mounting it."""
    result = subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_public_api() -> None:
    """The package exports exactly the store and its info type."""
    assert sietch.images.__all__ == ["ImageInfo", "ImageStore"]


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_cached_build_is_instant_and_stable(
    store: ImageStore, minimal: sietch.images.ImageInfo
) -> None:
    """A second build of an unchanged recipe does no work and returns the same image."""
    before = minimal.path.stat()
    again = store.build("minimal")
    after = again.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert again == minimal
    assert again.path.exists()


def test_recipe_change_changes_hash() -> None:
    """Any change to what goes into a rootfs gives it a new hash; rewording does not."""
    r = RECIPES["default"]
    base = rootfs_key(r)
    assert rootfs_key(dataclasses.replace(r, packages=(*r.packages, "vim"))) != base
    assert rootfs_key(dataclasses.replace(r, hooks=(*r.hooks, "true"))) != base
    assert rootfs_key(dataclasses.replace(r, size_mib=4096)) != base
    assert rootfs_key(dataclasses.replace(r, description="reworded")) == base
    assert rootfs_key(RECIPES["minimal"]) != base


def test_agent_change_changes_tools_hash() -> None:
    """Editing any agent source file gives the tools disk a new hash (but not the runtime's)."""
    sources = agent_sources()
    assert "sietch/agent/protocol.py" in sources
    assert sources["sietch/__init__.py"] == b""
    edited = {**sources, "sietch/agent/protocol.py": sources["sietch/agent/protocol.py"] + b"#"}
    assert tools_key(runtime_key(), edited) != tools_key(runtime_key(), sources)


def test_kernel_change_changes_initramfs_hash() -> None:
    """The initramfs carries the kernel's modules, so a new kernel version rebuilds it."""
    a = Kernel(Path("/k"), "linux-image-x", "6.1.1-1", "6.1.0-1-cloud-amd64")
    b = dataclasses.replace(a, version="6.1.2-1")
    assert initramfs_key(a) != initramfs_key(b)


def test_unknown_name_is_image_not_found(store: ImageStore) -> None:
    """An unknown image name says which names exist, before building anything."""
    msg = "no image named 'x'; known: default, minimal, desktop, code-interpreter, desktop-e2b"
    with pytest.raises(ImageNotFound, match=msg):
        store.rootfs("x")
    with pytest.raises(ImageNotFound, match=msg):
        store.build("x")
    assert store.names() == ["default", "minimal", "desktop", "code-interpreter", "desktop-e2b"]


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_list_shows_built_images(store: ImageStore, minimal: sietch.images.ImageInfo) -> None:
    """list() reports the built image with its hash, virtual size and creation time."""
    listed = [i for i in store.list() if i.name == "minimal" and i.current]
    assert listed == [minimal]
    assert minimal.size_bytes == RECIPES["minimal"].size_mib << 20
    assert 0 < minimal.disk_bytes < minimal.size_bytes  # sparse
    assert minimal.created_at.tzinfo is not None


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_artefacts_are_readable_by_qemu(
    store: ImageStore, minimal: sietch.images.ImageInfo
) -> None:
    """QEMU runs as an unprivileged user: every artefact and its directories are world-readable."""
    for path in (store.kernel(), store.initramfs(), store.tools(), minimal.path):
        assert path.stat().st_mode & stat.S_IROTH, path
        for parent in path.parents:
            if parent == store.cache_dir.parent:
                break
            assert parent.stat().st_mode & stat.S_IXOTH, parent


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_tools_disk_layout(store: ImageStore) -> None:
    """The tools disk has the real launcher, busybox, the agent package and the runtime."""
    tools = store.tools()
    assert debugfs(tools, "cat /bin/sietch-agent") == LAUNCHER
    assert "sietch.agent.guest" in LAUNCHER
    listing = debugfs(tools, "ls -p /agent/sietch/agent/guest")
    for name in agent_sources():
        if name.startswith("sietch/agent/guest/") and name.count("/") == 3:
            assert f"/{name.rsplit('/', 1)[1]}/" in listing, name
    for path in ("/bin/busybox", "/sbin/resize2fs", "/lib64/ld-linux-x86-64.so.2",
                 "/usr/bin/python3.11", "/usr/bin/python3.11._pth"):  # fmt: skip
        assert "Type: regular" in debugfs(tools, f"stat {path}"), path
    assert debugfs(tools, "cat /agent/sietch/__init__.py") == ""


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_initramfs_carries_init_and_modules(store: ImageStore) -> None:
    """The initramfs has the package's /init and the virtio modules in load order."""
    with store.initramfs().open("rb") as cpio:
        listing = subprocess.run(
            ["cpio", "-it", "--quiet"], stdin=cpio, capture_output=True, text=True, check=True
        ).stdout.split()
    modules = sorted(n for n in listing if n.startswith("lib/modules/"))
    names = [m.split("-", 1)[1].removesuffix(".ko") for m in modules]
    assert names == [m for m in MODULES if m in names]
    assert {"virtio_blk", "virtio_mmio", "virtio_console"} <= set(names)
    assert "init" in listing
    assert init_script().startswith(b"#!/bin/busybox sh\n")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_minimal_has_no_python(minimal: sietch.images.ImageInfo) -> None:
    """The minimal image is busybox and two users, with no python3 anywhere."""
    passwd = debugfs(minimal.path, "cat /etc/passwd")
    assert "user:x:1000:1000:" in passwd
    assert "python" not in debugfs(minimal.path, "ls -p /usr/bin")
    assert "Type: regular" in debugfs(minimal.path, "stat /bin/busybox")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_default_has_python_and_user(store: ImageStore) -> None:
    """The default image has python3 and the unprivileged user (uid 1000, bash)."""
    root = store.rootfs("default")
    assert "user:x:1000:1000::/home/user:/bin/bash" in debugfs(root, "cat /etc/passwd")
    assert "python3" in debugfs(root, "ls -p /usr/bin")
    assert debugfs(root, "cat /etc/hostname") == "sietch\n"


def test_files_change_only_the_image_not_its_tree() -> None:
    """Editing a recipe's files rebuilds its image from the cached Debian tree (mkfs only)."""
    r = RECIPES["desktop"]
    edited = dataclasses.replace(r, files=(*r.files, ("etc/x", 0o644, b"x")))
    assert rootfs_key(edited) != rootfs_key(r)
    assert tree_key(edited) == tree_key(r)
    assert tree_key(dataclasses.replace(r, packages=(*r.packages, "vim"))) != tree_key(r)


def test_code_server_pin_changes_the_desktop_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The desktop image is rebuilt when the code-server build changes; the default is not."""
    desktop_key, default_key = rootfs_key(RECIPES["desktop"]), rootfs_key(RECIPES["default"])
    monkeypatch.setattr(rootfs, "codeserver_key", lambda: "another-build")
    assert rootfs_key(RECIPES["desktop"]) != desktop_key
    assert rootfs_key(RECIPES["default"]) == default_key


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_desktop_layout(store: ImageStore) -> None:
    """The desktop image has its start/ready hooks, code-server with its node, and a private
    VNC password directory of the user's."""
    root = store.rootfs("desktop")
    assert debugfs(root, "cat /etc/sietch/start") == f"#!/bin/sh\nexec {desktop.COMMAND} start\n"
    assert "Mode:  0755" in debugfs(root, "stat /etc/sietch/ready")
    assert "Type: regular" in debugfs(root, f"stat {GUEST_DIR}/bin/node")
    assert "entry.js" in debugfs(root, "cat /usr/local/bin/code-server")
    vnc_dir = debugfs(root, f"stat {desktop.VNC_PASSWORD_FILE.rsplit('/', 1)[0]}")
    assert "User:  1000" in vnc_dir and "Mode:  0700" in vnc_dir
    assert "User:  1000" in debugfs(root, "stat /home/user")
    for program in ("Xvnc", "xfwm4", "xfdesktop", "chromium", "xdotool", "xrandr", "x11vnc"):
        assert f"\n{program}\n" in debugfs(root, "ls -p /usr/bin").replace("/", "\n")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_kernel_is_pvh_elf_with_modules(store: ImageStore) -> None:
    """kernel() gives the uncompressed ELF with a PVH entry (no in-guest decompression)."""
    path = store.kernel()
    assert path.name == "vmlinux"
    assert has_pvh_entry(path.read_bytes())
    kernel = Kernel.load(path.parent)
    assert (kernel.modules / "modules.builtin").exists()
    assert kernel.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"  # the bzImage is kept too


def test_prune_removes_only_stale_unkept_artefacts(tmp_path: Path) -> None:
    """prune() deletes what no current recipe makes, keeping current and kept paths."""
    store = ImageStore(tmp_path)
    root = tmp_path / "images"
    current_tools = root / "tools" / f"{tools_key(runtime_key(), agent_sources())}.ext4"
    stale_tools = root / "tools" / "0000000000000000.ext4"
    stale_rootfs = root / "rootfs" / "default-0000000000000000.ext4"
    kept_kernel = root / "kernel" / "1111111111111111"
    for f in (current_tools, stale_tools, stale_rootfs, kept_kernel / "vmlinux"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    removed = store.prune(keep=[kept_kernel / "vmlinux"])
    assert sorted(removed) == sorted([stale_tools, stale_rootfs])
    assert current_tools.exists() and (kept_kernel / "vmlinux").exists()
    assert not stale_tools.exists() and not stale_rootfs.exists()
