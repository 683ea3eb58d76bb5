"""The desktop image in real microVMs: X server, Xfce and code-server up at boot, VNC behind
a password that changes at run time, and RandR resizing of the running server."""

from __future__ import annotations

import json
import re

import pytest

from sietch.core.live import LiveSandbox
from sietch.images import desktop
from tests.conftest import SandboxFactory
from tests.desktop.conftest import GUEST_PROBE, SPEC, until_ready, with_probe

pytestmark = pytest.mark.timeout(1800)  # the module's first desktop boot: minutes under load

IDE = f"http://127.0.0.1:{desktop.IDE_PORT}"


async def sh(sandbox: LiveSandbox, cmd: str, stdin: bytes | None = None) -> str:
    """Run ``cmd`` as root; its stdout, after checking that it succeeded."""
    result = await sandbox.exec(cmd, stdin=stdin)
    assert result.exit_code == 0, (cmd, result.stdout, result.stderr)
    return result.stdout.decode()


async def screen(sandbox: LiveSandbox) -> tuple[str, str]:
    """(dimensions, resolution) as xdpyinfo reports them for the display."""
    info = await sh(sandbox, f"xdpyinfo -display {desktop.DISPLAY}")
    size = re.search(r"dimensions:\s+(\d+x\d+) pixels", info)
    dpi = re.search(r"resolution:\s+(\d+x\d+) dots per inch", info)
    assert size and dpi, info
    return size.group(1), dpi.group(1)


async def rfb(sandbox: LiveSandbox, password: str | None = None) -> dict[str, object]:
    args = f" {password}" if password is not None else ""
    out = await sh(sandbox, f"python3 {GUEST_PROBE} 127.0.0.1 {desktop.VNC_PORT}{args}")
    report: dict[str, object] = json.loads(out)
    return report


async def test_desktop_is_running_at_boot(desktop_sandbox: LiveSandbox) -> None:
    """Xvnc, xfwm4, xfdesktop and code-server run, and the screen is 1280x800 at 96 dpi."""
    for name in ("Xvnc", "xfwm4", "xfdesktop", "xfce4-session"):
        await sh(desktop_sandbox, f"pgrep -x {name}")
    await sh(desktop_sandbox, "pgrep -f 'code-server.*--auth none'")
    assert await screen(desktop_sandbox) == ("1280x800", "96x96")


async def test_services_run_as_the_user(desktop_sandbox: LiveSandbox) -> None:
    """The desktop's programs run as the unprivileged user, not as root."""
    users = await sh(desktop_sandbox, "ps -o user= -C Xvnc,xfwm4,node | sort -u")
    assert users.split() == ["user"]


async def test_code_server_answers_inside_the_guest(desktop_sandbox: LiveSandbox) -> None:
    """code-server serves its workbench without a password of its own, for /home/user."""
    status = await sh(desktop_sandbox, f"curl -s -o /dev/null -w '%{{http_code}}' {IDE}/")
    assert status in ("200", "302")
    landed = await sh(desktop_sandbox, f"curl -sL -o /dev/null -w '%{{url_effective}}' {IDE}/")
    assert "login" not in landed
    page = await sh(desktop_sandbox, f"curl -sL '{IDE}/?folder=/home/user'")
    assert "workbench" in page


async def test_vnc_requires_a_password(desktop_sandbox: LiveSandbox) -> None:
    """The VNC port speaks RFB 3.8 and offers VNC authentication only (no 'None' type)."""
    assert await rfb(desktop_sandbox) == {"banner": "RFB 003.008", "types": [2]}


async def test_neither_listens_outside_the_guest_network(desktop_sandbox: LiveSandbox) -> None:
    """VNC and code-server listen in the guest only: no host port is forwarded to them."""
    listening = await sh(desktop_sandbox, "ss -Hltn")
    for port in (desktop.VNC_PORT, desktop.IDE_PORT):
        assert f":{port} " in listening
    assert desktop_sandbox.info.ports == []


async def test_vnc_password_changes_at_run_time(desktop_sandbox: LiveSandbox) -> None:
    """After ``sietch-desktop password`` only the new password logs in, without a restart."""
    pid = await sh(desktop_sandbox, "pgrep -x Xvnc")
    await sh(desktop_sandbox, f"{desktop.COMMAND} password", stdin=b"first-pw\n")
    assert (await rfb(desktop_sandbox, "first-pw"))["auth"] == "ok"
    await sh(desktop_sandbox, f"{desktop.COMMAND} password", stdin=b"second-pw\n")
    assert (await rfb(desktop_sandbox, "first-pw"))["auth"] == "failed"
    assert (await rfb(desktop_sandbox, "second-pw"))["auth"] == "ok"
    assert await sh(desktop_sandbox, "pgrep -x Xvnc") == pid
    mode = await sh(desktop_sandbox, f"stat -c '%a %U' {desktop.VNC_PASSWORD_FILE}")
    assert mode.split() == ["600", "user"]


async def test_restored_desktop_is_already_running(
    desktop_sandbox: LiveSandbox, sandboxes: SandboxFactory
) -> None:
    """A second desktop sandbox is a restore of the template, with its desktop up at once."""
    clone = await sandboxes(**SPEC)
    assert (await until_ready(clone))["services"] == "up"
    # The same kernel boot as the template's: restored, not booted again.
    assert clone.agent.hello["boot_id"] == desktop_sandbox.agent.hello["boot_id"]
    await sh(clone, f"{desktop.COMMAND} ready")


async def test_resize_and_dpi(desktop_sandbox: LiveSandbox, sandboxes: SandboxFactory) -> None:
    """``sietch-desktop resize`` changes the running server's size and DPI, any size too."""
    clone = await with_probe(await sandboxes(**SPEC))
    await until_ready(clone)
    pid = await sh(clone, "pgrep -x Xvnc")
    await sh(clone, f"{desktop.COMMAND} resize 1024x768 120")
    assert await screen(clone) == ("1024x768", "120x120")
    await sh(clone, f"{desktop.COMMAND} resize 1100x700")
    assert (await screen(clone))[0] == "1100x700"
    assert await sh(clone, "pgrep -x Xvnc") == pid
    assert (await rfb(clone))["types"] == [2]


async def test_resize_refuses_nonsense(desktop_sandbox: LiveSandbox) -> None:
    """A malformed size is refused with a message, and the screen stays as it was."""
    before = await screen(desktop_sandbox)
    result = await desktop_sandbox.exec([desktop.COMMAND, "resize", "big"])
    assert result.exit_code == 2
    assert b"WIDTHxHEIGHT" in result.stderr
    assert await screen(desktop_sandbox) == before


async def test_image_without_services_reports_none(sandboxes: SandboxFactory) -> None:
    """An image with no /etc/sietch/start is ready at once and says it has no services."""
    sandbox = await sandboxes()
    assert (await until_ready(sandbox))["services"] == "none"
