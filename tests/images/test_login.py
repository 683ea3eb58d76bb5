"""The Debian images' login shell: start-up files that give Debian's PATH and run no program,
and a statically linked bash."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from sietch.config import get_settings
from sietch.images import ImageStore

BUILD_TIMEOUT = 1800
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
NOBODY = 65534
PT_INTERP = 3
"""ELF program header type naming the dynamic loader: a static executable has none."""
READ_AND_SOURCE = "IFS= read -r -d '' text; eval \"$text\""


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/etc/profile and root's ~/.profile as the built default image has them."""
    root = ImageStore(get_settings().cache_dir).rootfs("default")
    out = tmp_path_factory.mktemp("startup")
    out.chmod(0o755)
    files = (("/etc/profile", "profile"), ("/root/.profile", "root.profile"), ("/bin/bash", "bash"))
    for guest, name in files:
        subprocess.run(
            ["debugfs", "-R", f"dump {guest} {out / name}", str(root)],
            check=True,
            capture_output=True,
        )
        (out / name).chmod(0o644)
    return out


def login(
    startup: Path, after: str, *prefix: str, bash: str = "/bin/bash"
) -> subprocess.CompletedProcess[str]:
    """The file ``startup`` sourced by a bash that finds no program, then ``after``: a try
    to run one is told on stderr, even one whose own stderr goes to /dev/null (as
    ``mesg n 2>/dev/null`` does). The file comes on stdin (read by a builtin), so any user
    can read it."""
    trap = 'exec 3>&2; command_not_found_handle() { echo "ran $1" >&3; return 127; }'
    return subprocess.run(
        [*prefix, bash, "-c", f"{trap}; PATH=/nonexistent; {READ_AND_SOURCE}; {after}"],
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


def program_headers(elf: bytes) -> list[int]:
    """The types of an ELF64 executable's program headers."""
    assert elf[:5] == b"\x7fELF\x02", "not an ELF64 file"
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    size, count = struct.unpack_from("<HH", elf, 0x36)
    return [struct.unpack_from("<I", elf, phoff + i * size)[0] for i in range(count)]


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_bash_is_static_and_sources_the_profile(startup: Path) -> None:
    """The image's /bin/bash names no dynamic loader (see sietch.images.login) and is a
    whole bash: the image's /etc/profile gives it Debian's PATH, running no program."""
    bash = startup / "bash"
    headers = program_headers(bash.read_bytes())
    assert headers and PT_INTERP not in headers
    bash.chmod(0o755)
    done = login(
        startup / "profile", 'printf "%s %s" "$PATH" "${BASH_VERSINFO[0]}"', bash=str(bash)
    )
    assert (done.stderr, done.stdout, done.returncode) == ("", f"{ROOT_PATH} 5", 0)
