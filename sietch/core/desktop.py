"""Desktop sandboxes: their own VNC password and screen size, screenshots and input.

A sandbox has a desktop when its image ships ``sietch-desktop`` (the ``desktop``
image, see :mod:`sietch.images.desktop`). Its record's ``desktop``
(:class:`~sietch.core.models.DesktopInfo`) holds the screen and the VNC
password. The password is set by :func:`personalize` after every cold boot
and every restore (so also for each fork and each pooled sandbox), through
the agent, before anyone can reach the sandbox: copies of one snapshot never
share a password, and the template's one is known to nobody.

Screenshots come from the host's RFB connection to the guest's VNC server
(:mod:`sietch.core.vnc`), one per sandbox, made on first use and closed with
the sandbox; the host encodes them (Pillow). The pointer goes over the same
connection, keys and the rest through xdotool and friends in the guest (see
:mod:`sietch.core.computer`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import string
from collections.abc import Sequence
from typing import Any, Literal

from PIL import Image

from sietch.core import computer, computer_use
from sietch.core.live import LiveSandbox
from sietch.core.models import CommandResult, DesktopInfo, SandboxInfo, Screen
from sietch.core.vnc import VncClient
from sietch.errors import (
    CommandTimeout,
    FileNotFound,
    InvalidArgument,
    NoDesktop,
    SietchError,
    Unavailable,
)
from sietch.images import desktop as image
from sietch.images.rootfs import UID, USER

PASSWORD_LENGTH = 8
"""VNC authentication uses 8 bytes of a password, no more."""
ImageFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
HANDSHAKE_S = 120.0
"""How long a screenshot or an action waits for a new VNC connection's login: a sandbox
just restored (a fork) runs its VNC server's code afresh, and under emulation on a loaded
host that took more than 30 s."""
COMMAND_S = 60.0
"""How long one of an action's commands in the guest may run before the agent kills it and
the action fails, well within the SDK's wait for an action (120 s): an action answers or
fails, it never outlasts its caller."""
WARM_UP_ATTEMPT_S = 120.0
"""One try of :meth:`Desktops.warm_up`: a handshake or a frame slower than this is given up
and tried again on a new connection."""
STUCK_S = 10.0
"""A screenshot on a connection that has given frames before: an update takes milliseconds
on a quiet host, seconds on a loaded one. With none within this, the connection is taken to
be stuck, closed, and the frame asked of a new one. The suite saw one stuck a few times
(no update for 30 s after earlier frames, cause not found; later ones on new connections
came at once), and every screenshot after it would have waited on it in vain. Pointer moves
on such a connection are sent again on a new one (once seen in the suite: a move with no
update for 30 s); clicks, drags and wheel turns are not (they would happen twice)."""
DEFAULT_SCREEN = Screen(
    width=int(image.GEOMETRY.split("x")[0]), height=int(image.GEOMETRY.split("x")[1]), dpi=image.DPI
)


def new_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))


def require(info: SandboxInfo) -> DesktopInfo:
    """The sandbox's desktop, or :class:`NoDesktop`."""
    if info.desktop is None:
        raise NoDesktop(
            f"sandbox {info.id} has no desktop: create it from the 'desktop' image",
            image=info.image,
        )
    return info.desktop


async def _run(
    sandbox: LiveSandbox,
    argv: Sequence[str],
    stdin: bytes | None = None,
    what: str = "",
    *,
    timeout: float | None = COMMAND_S,
    check: bool = True,
) -> CommandResult:
    """``argv`` on the desktop's display, killed after ``timeout`` seconds (an action's
    commands; a create's own, unbounded here, are bounded by the create's). With ``check``
    a failure names the command and says what it said."""
    result = await sandbox.exec(list(argv), stdin=stdin, env=computer.DISPLAY_ENV, timeout=timeout)
    if result.timed_out:
        raise CommandTimeout(
            f"{what or argv[0]} did not finish in the desktop within {timeout:g}s "
            "(the guest is busy: try again later)",
            timeout_s=timeout,
        )
    if check and result.exit_code != 0:
        err = result.stderr.decode(errors="replace").strip()
        raise SietchError(
            f"{what or argv[0]} failed in the desktop: {err}", exit_code=result.exit_code
        )
    return result


async def detect(sandbox: LiveSandbox) -> Screen | None:
    """The screen of a cold-booted sandbox's desktop; None if its image has none.

    Any operation but ``hello`` waits for the image's services, so the desktop is up.
    """
    try:
        await sandbox.stat(image.COMMAND)
    except FileNotFound:
        return None
    return DEFAULT_SCREEN


async def personalize(sandbox: LiveSandbox, screen: Screen, *, booted: bool = False) -> None:
    """Give a new (booted or restored) desktop sandbox a VNC password of its own.

    A booted one also loses the X server's key autorepeat, which its snapshots keep: under
    emulation a key's release can come later than the repeat delay, and xdotool's "abc"
    arrived as "abbbbbbbbbbbcccc". VNC viewers repeat keys themselves.
    """
    if booted:
        await _run(sandbox, ["xset", "r", "off"], what="xset", timeout=None)
    password = new_password()
    await _run(
        sandbox,
        [image.COMMAND, "password"],
        f"{password}\n".encode(),
        "setting the password",
        timeout=None,
    )
    sandbox.info.desktop = DesktopInfo(**screen.model_dump(), vnc_password=password)


async def resize(
    sandbox: LiveSandbox, width: int | None, height: int | None, dpi: int | None
) -> None:
    """Resize the running X server (RandR); the record follows."""
    current = require(sandbox.info)
    screen = Screen(
        width=width or current.width, height=height or current.height, dpi=dpi or current.dpi
    )
    if (screen.width, screen.height, screen.dpi) == (current.width, current.height, current.dpi):
        return
    size = f"{screen.width}x{screen.height}"
    await _run(
        sandbox, [image.COMMAND, "resize", size, str(screen.dpi)], what="resize", timeout=None
    )
    sandbox.info.desktop = current.model_copy(update=screen.model_dump())


def encode(
    screen: Image.Image,
    *,
    fmt: ImageFormat = "png",
    region: tuple[int, int, int, int] | None = None,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    quality: int = 80,
) -> bytes:
    """The screen (or ``region``: x, y, width, height of it) as an image file, scaled by
    ``scale`` or to ``size``. PNG at zlib level 1: 1.7x faster than the default (6) on a
    1280x800 desktop, for 25 % more bytes."""
    if region is not None:
        x, y, w, h = region
        width, height = screen.size
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise InvalidArgument(
                f"region {x},{y},{w},{h} is not inside the {width}x{height} screen",
                width=width,
                height=height,
            )
        screen = screen.crop((x, y, x + w, y + h))
    if scale is not None:
        if not 0.01 <= scale <= 4:
            raise InvalidArgument(f"scale must be between 0.01 and 4, not {scale}")
        size = (max(1, round(screen.width * scale)), max(1, round(screen.height * scale)))
    if size is not None and size != screen.size:
        screen = screen.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    if fmt == "png":
        screen.save(out, "PNG", compress_level=1)
    elif fmt in ("jpeg", "webp"):
        screen.save(out, fmt.upper(), quality=quality)
    else:
        raise InvalidArgument(f"format must be png, jpeg or webp, not {fmt!r}")
    return out.getvalue()


class Desktops:
    """The host's VNC connections to desktop sandboxes: one each, made on first use,
    closed when the sandbox stops (or its connection broke and a new one is needed)."""

    def __init__(self, stuck_s: float = STUCK_S) -> None:
        self._clients: dict[str, tuple[LiveSandbox, VncClient]] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._stuck_s = stuck_s

    async def vnc(self, sandbox: LiveSandbox, timeout: float = HANDSHAKE_S) -> VncClient:
        """The sandbox's connection, made (handshake within ``timeout``) if it has none."""
        info = require(sandbox.info)
        lock = self._connecting.setdefault(sandbox.id, asyncio.Lock())
        async with lock:
            found = self._clients.get(sandbox.id)
            if found is not None and found[0] is sandbox and found[1].connected:
                return found[1]
            if found is not None:  # broken, or a sandbox of that id that has ended
                del self._clients[sandbox.id]
                await found[1].close()
            reader, writer = await sandbox.connect(image.VNC_PORT)
            client = await VncClient.connect(reader, writer, info.vnc_password, timeout)
            self._clients[sandbox.id] = (sandbox, client)
            if found is None or found[0] is not sandbox:
                sandbox.on_stop.append(lambda: self._drop(sandbox.id))
            return client

    async def _drop(self, sandbox_id: str) -> None:
        self._connecting.pop(sandbox_id, None)
        found = self._clients.pop(sandbox_id, None)
        if found is not None:
            await found[1].close()

    async def close(self) -> None:
        for sandbox_id in list(self._clients):
            await self._drop(sandbox_id)

    async def screenshot(self, sandbox: LiveSandbox) -> Image.Image:
        """The screen as it is now, from the host's copy of the framebuffer; asked again on
        a new connection once if the one it has gives no frame (see :data:`STUCK_S`)."""
        client = await self.vnc(sandbox)
        if not client.has_frame:  # a whole screen to come: slow right after a restore
            return await client.frame()
        try:
            return await client.frame(self._stuck_s)
        except Unavailable as exc:
            sandbox.log.warning("desktop screenshot: %s; asking a new VNC connection", exc)
            await client.close()  # the next vnc() makes a new one
        return await (await self.vnc(sandbox)).frame()

    async def warm_up(self, sandbox: LiveSandbox, deadline_s: float) -> None:
        """A new sandbox's connection and first full frame, tried again (on a new connection)
        until ``deadline_s`` has passed. Right after a restore the guest's VNC server runs
        code that a new QEMU process translates afresh; on a loaded host under emulation
        its handshake took longer than a user's screenshot may wait."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            attempt = max(1.0, min(WARM_UP_ATTEMPT_S, end - loop.time()))
            try:
                await (await self.vnc(sandbox, attempt)).frame(attempt)
                return
            except (Unavailable, TimeoutError, ConnectionError) as exc:
                if loop.time() >= end:
                    raise Unavailable(
                        f"the desktop of {sandbox.id} sent no frame within {deadline_s:g}s"
                    ) from exc
                sandbox.log.info("desktop warm-up: %s; trying again", exc)
                if (found := self._clients.get(sandbox.id)) is not None:
                    await found[1].close()  # the next vnc() makes a new one
                await asyncio.sleep(1)  # a refused connection fails at once: no busy loop

    async def act(self, sandbox: LiveSandbox, action: computer.Action) -> dict[str, Any]:
        """Do one action; its JSON result, with ``screenshot`` (base64 PNG) if asked for."""
        info = require(sandbox.info)
        computer.check(action, info.width, info.height)
        result: dict[str, Any] = {"action": action.action}
        result.update(await self._do(sandbox, action))
        if action.screenshot:
            png = encode(await self.screenshot(sandbox))
            result["screenshot"] = base64.b64encode(png).decode()
        return result

    async def _do(self, sandbox: LiveSandbox, action: computer.Action) -> dict[str, Any]:
        match action:
            case computer.Wait(duration=duration):
                await asyncio.sleep(duration)
                return {}
            case computer.OpenUrl(url=url):
                # "PID STATE": started (the browser, on url), opened (a tab), or queued (the
                # browser is still starting; a tab once its DevTools endpoint answers).
                out = await _run(sandbox, [image.COMMAND, "open", url], what="open_url")
                pid, state = out.stdout.decode().split()[-2:]
                return {"pid": int(pid), "state": state}
            case computer.Launch(command=command):
                return {"pid": await self._launch(sandbox, command)}
            case computer.Windows():
                listing = await _run(sandbox, ["wmctrl", "-lpG"], what="wmctrl")
                active = await _run(sandbox, ["xdotool", "getactivewindow"], check=False)
                return computer.parse_windows(
                    listing.stdout.decode(errors="replace"), active.stdout.decode()
                )
            case computer.ClipboardGet():
                clip = ["xclip", "-selection", "clipboard", "-o"]
                got = await _run(sandbox, clip, check=False)
                return {"text": got.stdout.decode(errors="replace") if got.exit_code == 0 else ""}
            case computer.ClipboardSet(text=text):
                # xclip stays behind to serve the selection: its output must not hold the exec.
                serve = "exec xclip -selection clipboard -i >/dev/null 2>&1"
                await _run(sandbox, ["sh", "-c", serve], text.encode(), "xclip")
                return {}
        return await self._input(sandbox, action)

    async def _input(self, sandbox: LiveSandbox, action: computer.Action) -> dict[str, Any]:
        """Pointer and keyboard: through VNC where it can, else xdotool (see computer)."""
        vnc = await self.vnc(sandbox)
        if (planned := computer.pointer_events(action, vnc.buttons)) is not None:
            batches, buttons = planned
            # Moves with no button down may go twice; a click or a wheel turn must not.
            repeatable = all(mask == 0 for batch in batches for *_, mask in batch)
            wait = {"timeout": self._stuck_s} if repeatable else {}
            try:
                for batch in batches:
                    await vnc.pointer(batch, **wait)
            except Unavailable as exc:
                await vnc.close()  # the next vnc() makes a new connection
                if not repeatable:
                    raise
                # A stuck connection (see STUCK_S): the same moves on a new one.
                sandbox.log.warning("desktop pointer: %s; moving again on a new connection", exc)
                vnc = await self.vnc(sandbox)
                for batch in batches:
                    await vnc.pointer(batch)
            vnc.buttons = buttons
            return {}
        out = ""
        for argv in computer.xdotool(action):
            result = await _run(sandbox, ["xdotool", *argv], what=action.action, check=False)
            stderr = result.stderr.decode(errors="replace")
            if (key := computer.unknown_key(stderr)) is not None:
                raise InvalidArgument(f"{action.action}: unknown key {key!r} (xdotool key names)")
            if result.exit_code != 0:
                raise SietchError(f"{action.action} failed in the desktop: {stderr.strip()}")
            out += result.stdout.decode()
        if isinstance(action, computer.CursorPosition):
            return computer.parse_location(out)
        if isinstance(action, computer.ScreenSize):
            return computer.parse_geometry(out)
        return {}

    async def carry_out(
        self, sandbox: LiveSandbox, plan: computer_use.Plan, scaling: computer_use.Scaling
    ) -> str | bytes:
        """Run an Anthropic- or OpenAI-shaped plan; its answer: a text, or a PNG of the
        screen (or the plan's region of it) at the size the model was told."""
        last: dict[str, Any] = {}
        for action in plan.actions:
            last = await self.act(sandbox, action)
        if plan.text is not None:
            x, y = scaling.to_model(last["x"], last["y"])
            return plan.text.format(x=x, y=y)
        shot = await self.screenshot(sandbox)
        if plan.region is not None:
            size = computer_use.fitted(plan.region[2:], scaling.model_size)
            return encode(shot, region=plan.region, size=size)
        return encode(shot, size=scaling.model_size)

    @staticmethod
    async def _launch(sandbox: LiveSandbox, argv: Sequence[str]) -> int:
        env = {**computer.DISPLAY_ENV, "XDG_RUNTIME_DIR": f"/run/user/{UID}"}
        return await sandbox.start_background(list(argv), user=USER, env=env, tag="desktop")
