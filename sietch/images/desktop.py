"""The desktop image's guest side: what it installs, how its services start, and where they listen.

The desktop runs as image services (see ``sietch/agent/guest/services.py``):
the image's ``/etc/sietch/start`` runs ``sietch-desktop start`` at boot, and
``/etc/sietch/ready`` tells the agent when Xvnc, Xfce and code-server answer,
so the template snapshot has them running and a desktop sandbox costs a
restore, not a desktop boot. Chromium is installed but not started: under
emulation its first page takes many minutes of CPU in every restored sandbox
(each new QEMU translates its code afresh; see bench/README.md, "Chromium
under TCG"), and only some sandboxes want it. The first ``open_url`` starts
it (``sietch-desktop open``), later ones open tabs through its DevTools
endpoint on the guest's loopback (:data:`DEVTOOLS_PORT`).

What the server needs from a running desktop sandbox (all inside the guest;
no host port is opened for them):

- VNC (RFB 3.8, VncAuth only) on :data:`VNC_PORT`, password in
  :data:`VNC_PASSWORD_FILE`; a new one is set at run time with
  ``sietch-desktop password`` (stdin) and holds from the next connection.
- code-server (no auth of its own) on :data:`IDE_PORT`, folder ``/home/user``.
- ``sietch-desktop resize WxH [DPI]`` resizes the running X server (RandR).

Both listen on every guest address: the guest's loopback for programs inside
and its slirp address (10.0.2.15), where QEMU's ``hostfwd`` delivers what
Sietch forwards. Nothing else reaches a guest address.
"""

from __future__ import annotations

import shlex
from importlib import resources

from sietch.images.codeserver import ENTRY, GUEST_DIR

DISPLAY = ":0"
VNC_PORT = 5900
IDE_PORT = 13337
GEOMETRY = "1280x800"
DPI = 96
VNC_PASSWORD_FILE = "/etc/sietch/vnc/passwd"
"""Read by Xvnc (``-rfbauth``) at every login; written by ``sietch-desktop password``."""
COMMAND = "/usr/local/bin/sietch-desktop"
DEVTOOLS_PORT = 9222
"""The browser's DevTools endpoint, on the guest's loopback only (what Chromium binds)."""
BROWSER = (
    "chromium",
    *("--no-first-run", "--no-default-browser-check", "--disable-gpu", "--start-maximized"),
    *("--password-store=basic", "--disable-background-networking", "--disable-component-update"),
    f"--remote-debugging-port={DEVTOOLS_PORT}",
)
"""The desktop's one browser (``sietch-desktop open``): started by the first ``open_url``,
every later URL a new tab through its DevTools endpoint."""


def browser_profile(user: str) -> str:
    """Chromium serves DevTools only for a profile dir other than its default one."""
    return f"/home/{user}/.config/sietch-chromium"


E2B_IMAGE = "desktop-e2b"
"""This image's programs without its services: what E2B's ``desktop`` template maps to."""
NOVNC_E2B = "/opt/noVNC"
"""Where the e2b-desktop SDK runs noVNC from (``utils/novnc_proxy``, ``vnc.html``)."""
LOG = "/var/log/sietch/start.log"
"""The services' output (the agent's ``services.LOG``)."""

PACKAGES = (
    *("tigervnc-standalone-server", "tigervnc-tools", "xauth", "dbus-x11"),
    *("xfce4-session", "xfwm4", "xfdesktop4", "xfce4-panel", "xfce4-settings", "xfce4-terminal"),
    *("chromium", "xdotool", "wmctrl", "x11-utils", "x11-xserver-utils", "xclip", "scrot"),
    *("xdg-utils", "fonts-dejavu-core", "fonts-liberation"),
    # What the e2b-desktop SDK (2.7) runs by name, so E2B's desktop template can be this tree
    # (E2B_IMAGE): Xvfb, startxfce4, x11vnc, /opt/noVNC/utils/novnc_proxy, netstat, gtk-launch.
    *("xvfb", "x11vnc", "novnc", "websockify", "net-tools", "libgtk-3-bin"),
    # code-server's native modules (kerberos) load these; its terminal wants a shell's tools.
    *("libkrb5-3", "libgssapi-krb5-2", "openssl"),
)


def _conf(user: str, uid: int) -> str:
    profile = browser_profile(user)
    return (
        f"# Written by Sietch's image builder; read by {COMMAND}.\n"
        f"DESKTOP_USER={user}\nDESKTOP_UID={uid}\nDISPLAY={DISPLAY}\n"
        f"GEOMETRY={GEOMETRY}\nDPI={DPI}\nVNC_PORT={VNC_PORT}\nVNC_PASSWD={VNC_PASSWORD_FILE}\n"
        f"IDE_ADDRESS=0.0.0.0\nIDE_PORT={IDE_PORT}\nIDE_FOLDER=/home/{user}\n"
        f"BROWSER={shlex.quote(shlex.join((*BROWSER, f'--user-data-dir={profile}')))}\n"
        f"BROWSER_PROFILE={profile}\n"
        f"DEVTOOLS_PORT={DEVTOOLS_PORT}\n"
    )


def files(user: str, uid: int) -> tuple[tuple[str, int, bytes], ...]:
    """(path in the tree, mode, content) of the files the desktop image adds."""
    script = resources.files("sietch.images").joinpath("desktop/sietch-desktop").read_bytes()
    launcher = f'#!/bin/sh\nexec {GUEST_DIR}/bin/node {GUEST_DIR}/{ENTRY} "$@"\n'
    return (
        (COMMAND.lstrip("/"), 0o755, script),
        ("etc/sietch/desktop.conf", 0o644, _conf(user, uid).encode()),
        ("etc/sietch/start", 0o755, f"#!/bin/sh\nexec {COMMAND} start\n".encode()),
        ("etc/sietch/ready", 0o755, f"#!/bin/sh\nexec {COMMAND} ready\n".encode()),
        ("usr/local/bin/code-server", 0o755, launcher.encode()),
    )


def e2b_files() -> tuple[tuple[str, int, bytes], ...]:
    """The files the desktop-e2b image (:data:`E2B_IMAGE`) adds: noVNC's proxy, where
    :data:`NOVNC_E2B` (a link to Debian's noVNC) leads the SDK, started without numpy."""
    proxy = resources.files("sietch.images").joinpath("desktop/novnc_proxy").read_bytes()
    return (("usr/share/novnc/utils/novnc_proxy", 0o755, proxy),)


def hooks(user: str, uid: int) -> tuple[str, ...]:
    """Shell run in the tree (``$1``) after the packages, once the user exists.

    Owners by number: ``install`` runs on the host, whose names differ.
    """
    panel = f'"$1/home/{user}/.config/xfce4/xfconf/xfce-perchannel-xml"'
    return (
        f'install -d -m 0700 -o {uid} -g {uid} "$1{VNC_PASSWORD_FILE.rsplit("/", 1)[0]}"',
        # The panel asks on its first start which layout to use, and waits: give it the default.
        f"install -d {panel}",
        f'cp "$1/etc/xdg/xfce4/panel/default.xml" {panel}/xfce4-panel.xml',
        f'chroot "$1" chown -R {user}:{user} /home/{user}/.config',
        f'ln -s /usr/share/novnc "$1{NOVNC_E2B}"',
    )
