"""The Debian images' login shell start-up files: Debian's PATH, and no program run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sietch.config import get_settings
from sietch.images import ImageStore

BUILD_TIMEOUT = 1800
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
NOBODY = 65534
READ_AND_SOURCE = "IFS= read -r -d '' text; eval \"$text\""


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/etc/profile and root's ~/.profile as the built default image has them."""
    root = ImageStore(get_settings().cache_dir).rootfs("default")
    out = tmp_path_factory.mktemp("startup")
    out.chmod(0o755)
    for guest, name in (("/etc/profile", "profile"), ("/root/.profile", "root.profile")):
        subprocess.run(
            ["debugfs", "-R", f"dump {guest} {out / name}", str(root)],
            check=True,
            capture_output=True,
        )
        (out / name).chmod(0o644)
    return out


def login(startup: Path, after: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    """The file ``startup`` sourced by a bash that finds no program, then ``after``: a try
    to run one is told on stderr, even one whose own stderr goes to /dev/null (as
    ``mesg n 2>/dev/null`` does). The file comes on stdin (read by a builtin), so any user
    can read it."""
    trap = 'exec 3>&2; command_not_found_handle() { echo "ran $1" >&3; return 127; }'
    return subprocess.run(
        [*prefix, "/bin/bash", "-c", f"{trap}; PATH=/nonexistent; {READ_AND_SOURCE}; {after}"],
        input=startup.read_text(),
        env={"HOME": str(startup.parent)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_profile_sets_debian_paths_without_a_program(startup: Path) -> None:
    """/etc/profile gives root and other users Debian's PATH using builtins only."""
    profile, path = startup / "profile", 'printf %s "$PATH"'
    as_root = login(profile, path)
    as_user = login(
        profile, path, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"
    )
    assert (as_root.stderr, as_root.stdout) == ("", ROOT_PATH)
    assert (as_user.stderr, as_user.stdout) == ("", USER_PATH)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_root_profile_runs_no_program(startup: Path) -> None:
    """root's ~/.profile (no mesg n) reads ~/.bashrc where there is one and runs nothing."""
    (startup / ".bashrc").write_text("SEEN=yes\n")
    done = login(startup / "root.profile", 'printf %s "$SEEN"')
    assert (done.stderr, done.stdout, done.returncode) == ("", "yes", 0)
