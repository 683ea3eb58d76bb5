"""The machine's template cache on its own files: publication, checks, races, pruning."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sietch.images import ImageStore
from sietch.images.templates import (
    KEEP_PER_IMAGE,
    MANIFEST,
    CorruptEntry,
    TemplateCache,
    content_digest,
)

MiB = 1 << 20


def snapshot_dir(root: Path) -> Path:
    """A snapshot's files as a template has them: a sparse memory file, a disk layer."""
    src = root / "snap"
    (src / "layers").mkdir(parents=True)
    with open(src / "memory", "wb") as f:
        f.truncate(64 * MiB)
        f.seek(3 * MiB + 5)
        f.write(b"guest ram")
    os.chmod(src / "memory", 0o640)
    (src / "layers" / "snap-1.qcow2").write_bytes(b"QFI\xfb layer")
    (src / "state").write_bytes(b"devices")
    (src / "snapshot.json").write_text("{}")
    return src


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.ext4"
    path.write_bytes(b"image")
    return path


def publish(cache: TemplateCache, name: str, src: Path, uses: Path, image: str = "x") -> bool:
    return cache.publish(name, src, image=image, uses=[uses], overrides={"snapshot.json": b"{1}"})


def test_digest_is_the_content_whatever_the_holes(tmp_path: Path) -> None:
    """A sparse file and a copy with its zeros written out digest alike; a changed byte or
    a changed size does not."""
    sparse, dense = tmp_path / "sparse", tmp_path / "dense"
    with open(sparse, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(5 * MiB)
        f.write(b"x")
    dense.write_bytes(sparse.read_bytes())
    assert content_digest(sparse) == content_digest(dense)
    with open(dense, "r+b") as f:
        f.seek(7 * MiB)
        f.write(b"y")
    assert content_digest(sparse) != content_digest(dense)
    os.truncate(dense, 6 * MiB)
    os.truncate(sparse, 6 * MiB - 1)
    assert content_digest(sparse) != content_digest(dense)


def test_published_entry_is_copied_out_as_it_was(tmp_path: Path, image_file: Path) -> None:
    """An entry is published once; fetching it copies every file with its content and
    mode (overrides as written), and a second publication leaves it alone."""
    cache, src = TemplateCache(tmp_path / "cache"), snapshot_dir(tmp_path)
    assert publish(cache, "k1-v", src, image_file)
    assert not publish(cache, "k1-v", src, image_file)
    assert oct((tmp_path / "cache" / "k1-v").stat().st_mode & 0o777) == "0o700"
    dst = tmp_path / "dst"
    dst.mkdir()
    entry = cache.fetch("k1-v", dst)
    assert entry is not None and entry.uses == (image_file,)
    assert (dst / "memory").read_bytes() == (src / "memory").read_bytes()
    assert (dst / "memory").stat().st_mode & 0o777 == 0o640
    assert (dst / "layers" / "snap-1.qcow2").read_bytes() == b"QFI\xfb layer"
    assert (dst / "snapshot.json").read_bytes() == b"{1}"
    assert not (dst / MANIFEST).exists()
    assert cache.fetch("k2-v", dst) is None


def test_truncated_entry_is_ignored_then_replaced(tmp_path: Path, image_file: Path) -> None:
    """An entry with a file shorter than its manifest says is not found, and the next
    publication replaces it."""
    cache, src = TemplateCache(tmp_path / "cache"), snapshot_dir(tmp_path)
    publish(cache, "k1-v", src, image_file)
    os.truncate(tmp_path / "cache" / "k1-v" / "memory", 2 * MiB)
    assert cache.find("k1-v") is None
    dst = tmp_path / "dst"
    dst.mkdir()
    assert cache.fetch("k1-v", dst) is None and not any(dst.iterdir())
    assert publish(cache, "k1-v", src, image_file)
    assert cache.find("k1-v") is not None


def test_damaged_entry_is_never_handed_out(tmp_path: Path, image_file: Path) -> None:
    """A file changed in place (same size) fails the copy's digest: the fetch raises and
    the entry is gone."""
    cache, src = TemplateCache(tmp_path / "cache"), snapshot_dir(tmp_path)
    publish(cache, "k1-v", src, image_file)
    with open(tmp_path / "cache" / "k1-v" / "memory", "r+b") as f:
        f.seek(3 * MiB + 5)
        f.write(b"tampered!")
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(CorruptEntry):
        cache.fetch("k1-v", dst)
    assert not (tmp_path / "cache" / "k1-v").exists()


def test_racing_publications_make_one_entry(tmp_path: Path, image_file: Path) -> None:
    """Two publications of one entry at once (the lock is per open file, as between two
    servers): exactly one publishes, and the entry is complete."""
    cache, src = TemplateCache(tmp_path / "cache"), snapshot_dir(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: publish(cache, "k1-v", src, image_file), range(2)))
    assert sorted(results) == [False, True]
    assert cache.find("k1-v") is not None
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def test_least_recently_used_entries_of_an_image_go(tmp_path: Path, image_file: Path) -> None:
    """Beyond KEEP_PER_IMAGE entries of one image the least recently fetched go, and one
    whose image file went goes at once; other images' entries stay."""
    cache, src = TemplateCache(tmp_path / "cache"), snapshot_dir(tmp_path)
    publish(cache, "other-v", src, image_file, image="other")
    gone = tmp_path / "rebuilt.ext4"
    gone.write_bytes(b"x")
    publish(cache, "gone-v", src, gone)
    gone.unlink()
    names = [f"k{i}-v" for i in range(KEEP_PER_IMAGE + 1)]
    for age, name in enumerate(names[:-1]):
        publish(cache, name, src, image_file)
        os.utime(tmp_path / "cache" / name / MANIFEST, (1000 + age, 1000 + age))
    dst = tmp_path / "dst"
    dst.mkdir()
    cache.fetch(names[0], dst)  # the oldest, used now
    publish(cache, names[-1], src, image_file)
    kept = {e.name for e in cache.entries()}
    assert kept == {"other-v", names[0], *names[2:]}


def test_prune_removes_entries_whose_image_went(tmp_path: Path) -> None:
    """ImageStore.prune removes a stale rootfs and the shared templates that run on it,
    and keeps those whose files are current."""
    store = ImageStore(tmp_path)
    stale_rootfs = tmp_path / "images" / "rootfs" / "default-0000000000000000.ext4"
    stale_rootfs.parent.mkdir(parents=True)
    stale_rootfs.write_bytes(b"x")
    kept = tmp_path / "kept.ext4"
    kept.write_bytes(b"x")
    cache, src = TemplateCache(tmp_path / "templates"), snapshot_dir(tmp_path)
    publish(cache, "stale-v", src, stale_rootfs)
    publish(cache, "kept-v", src, kept)
    (tmp_path / "templates" / "half").mkdir()  # no manifest: never published
    removed = store.prune(keep=[kept])
    assert stale_rootfs in removed
    assert tmp_path / "templates" / "stale-v" in removed
    assert tmp_path / "templates" / "half" in removed
    assert [e.name for e in cache.entries()] == ["kept-v"]
