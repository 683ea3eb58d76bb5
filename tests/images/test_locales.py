"""The Debian images carry C.UTF-8 in their locale archive (see sietch.images.locales)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sietch.config import get_settings
from sietch.images import ImageStore
from sietch.images.locales import ARCHIVE

BUILD_TIMEOUT = 1800


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_default_image_archives_c_utf8(tmp_path: Path) -> None:
    """The built default image's locale archive lists C.utf8, the locale every command gets."""
    root = ImageStore(get_settings().cache_dir).rootfs("default")
    (tmp_path / ARCHIVE).parent.mkdir(parents=True)
    subprocess.run(
        ["debugfs", "-R", f"dump /{ARCHIVE} {tmp_path / ARCHIVE}", str(root)],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        ["localedef", f"--prefix={tmp_path}", "--list-archive"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert listed.stdout.split() == ["C.utf8"]
