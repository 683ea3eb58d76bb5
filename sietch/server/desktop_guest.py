"""What the desktop viewer asks of a desktop sandbox's guest: its VNC password, its screen.

SEAM, until the computer-use work lands (per-sandbox random VNC password made
at create, and its own screen-size action): the first ``GET …/desktop`` of a
sandbox sets a random VNC password through the agent (``sietch-desktop
password``, as root) and this server remembers it in memory; the screen size
is read with ``xdpyinfo``. Swap :meth:`DesktopGuest.describe` for those.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from sietch.core.live import LiveSandbox
from sietch.errors import Conflict
from sietch.images import desktop

_NO_DESKTOP = 3
# Sets the password from stdin when one is given, then prints the screen's size.
_SCRIPT = f"""
command -v {desktop.COMMAND} >/dev/null || exit {_NO_DESKTOP}
if [ -n "${{SET_PASSWORD:-}}" ]; then {desktop.COMMAND} password || exit; fi
xdpyinfo -display {desktop.DISPLAY}
"""
_SIZE = re.compile(r"dimensions:\s+(\d+)x(\d+) pixels")


@dataclass(frozen=True)
class Screen:
    vnc_password: str
    width: int
    height: int


@dataclass
class DesktopGuest:
    _passwords: dict[str, str] = field(default_factory=dict)

    async def describe(self, sandbox: LiveSandbox) -> Screen:
        """The sandbox's VNC password (set now if this server has none for it) and size."""
        password = self._passwords.get(sandbox.id)
        fresh = password is None
        if password is None:
            # VncAuth keys DES with the first 8 bytes: 8 URL-safe characters, 48 bits.
            password = secrets.token_urlsafe(6)
        result = await sandbox.exec(
            _SCRIPT,
            stdin=f"{password}\n".encode() if fresh else None,
            env={"SET_PASSWORD": "1"} if fresh else None,
            user="root",
            timeout=60,
        )
        if result.exit_code == _NO_DESKTOP:
            raise Conflict(
                f"sandbox {sandbox.id} has no desktop: create it with image='desktop'",
                image=sandbox.info.image,
            )
        found = _SIZE.search(result.stdout.decode(errors="replace"))
        if result.exit_code != 0 or found is None:
            err = result.stderr.decode(errors="replace").strip()[-300:]
            raise Conflict(f"the desktop of sandbox {sandbox.id} does not answer: {err}")
        self._passwords[sandbox.id] = password
        return Screen(password, int(found[1]), int(found[2]))
