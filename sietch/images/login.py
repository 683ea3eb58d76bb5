"""The login shell of the Debian images: start-up files without a subprocess, and a
statically linked bash.

The e2b SDK runs every command as ``/bin/bash -l -c CMD``, so each one reads
``/etc/profile`` and the user's ``~/.profile`` first. Debian's run ``id -u`` (twice for a
prompt) and root's ``mesg n``: two more programs per command, which TCG translates afresh
each time (dynamically linked, at new addresses), about doubling a short command's time.
These do the same with shell builtins: bash's ``$EUID`` (``id -u`` only where a shell lacks
it, as dash does, and in backquotes: bash parses a ``$(...)`` when it reads the command,
even in a branch it never takes, about 1-2 ms of TCG CPU per login), no ``mesg n`` (it only
stops other users' ``write`` to a terminal, and a sandbox has no other users logging in).
PATH and PS1 come out as Debian's; the user's ``~/.profile`` (Debian's skeleton) starts
nothing and stays as it is.

``/usr/bin/bash`` is Debian's ``bash-static`` (the same bash 5.2, linked statically), so a
bash no longer loads and relocates libtinfo and libc in every process. Guest time per
``bash -l -c true`` (in-guest loops of 40, medians of five rounds, one default sandbox,
QEMU 10.0.2, TCG, 2 vCPUs Intel Xeon, quiet): 16.1 ms dynamic, 12.0 ms static (``sh -c
true``: 7.1 ms); the e2b SDK's ``commands.run("true")`` went from 1.51x Sietch's
``exec("true")`` to 1.37x. What it lacks is ``enable -f`` (loadable builtins); ``apt
install --reinstall bash`` in a sandbox puts Debian's back.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGES = ("bash-static",)
STATIC_BASH = ("usr/bin/bash-static", "usr/bin/bash")
"""(the static build, the name it takes) in the tree: part of the image's key."""

PROFILE = """\
# /etc/profile: system-wide .profile for Bourne-compatible shells (sh, bash, ...).
# Debian's, with $EUID instead of a subprocess (Sietch's sietch/images/login.py).

if [ "${EUID:-`id -u`}" -eq 0 ]; then
  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
else
  PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
fi
export PATH

if [ "${PS1-}" ]; then
  if [ "${BASH-}" ] && [ "$BASH" != "/bin/sh" ]; then
    # The file bash.bashrc already sets the default PS1.
    if [ -f /etc/bash.bashrc ]; then
      . /etc/bash.bashrc
    fi
  else
    if [ "${EUID:-`id -u`}" -eq 0 ]; then
      PS1='# '
    else
      PS1='$ '
    fi
  fi
fi

if [ -d /etc/profile.d ]; then
  for i in /etc/profile.d/*.sh; do
    if [ -r $i ]; then
      . $i
    fi
  done
  unset i
fi
"""

ROOT_PROFILE = """\
# ~/.profile: executed by Bourne-compatible login shells.
# Debian's, without `mesg n` (Sietch's sietch/images/login.py).

if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi
"""


def files() -> tuple[tuple[str, int, bytes], ...]:
    """(path in the tree, mode, content) of the start-up files, over Debian's."""
    return (
        ("etc/profile", 0o644, PROFILE.encode()),
        ("root/.profile", 0o644, ROOT_PROFILE.encode()),
    )


def link_static_bash(tree: Path) -> None:
    """Make the tree's ``bash`` the static build (a hard link: the cached tree is shared, so
    the name is unlinked first, never written through)."""
    static, bash = (tree / rel for rel in STATIC_BASH)
    bash.unlink()
    os.link(static, bash)
