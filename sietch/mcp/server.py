"""The MCP server: Sietch's sandboxes as tools for an agent.

:class:`Tools` writes every tool once, over a :class:`~sietch.mcp.backend.Backend`;
:func:`build_server` registers them. ``sietch mcp`` serves it over stdio
(:mod:`sietch.mcp.sdk`), ``sietch serve`` at ``/mcp`` (:mod:`sietch.server.mcp`).
A failure the agent can act on (unknown sandbox, bad path, a limit) comes back
as a tool error whose text says what to do, never as a protocol error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Literal

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from sietch import __version__
from sietch.errors import SietchError
from sietch.mcp.backend import Backend, TimeoutAction
from sietch.mcp.models import (
    CodeRun,
    CommandResult,
    DesktopOut,
    DirEntry,
    FileWritten,
    NetworkOut,
    PortOut,
    SandboxOut,
    SnapshotOut,
)

INSTRUCTIONS = """\
Sietch runs Linux sandboxes (Debian microVMs) for you. Typical flow: create_sandbox,
write_file / run_command as often as needed, snapshot before a risky step, restore
(or fork) from a snapshot to go back or to try several things in parallel,
destroy_sandbox when done. Snapshots outlive their sandbox. Sandboxes reach the
public internet unless created with internet=false; set_network changes that and
allow-lists domains or CIDRs at any time."""

SandboxId = Annotated[str, Field(description="A sandbox id from create_sandbox (sb-...).")]
GuestPath = Annotated[str, Field(description="Absolute path inside the sandbox.", min_length=1)]
# A tuple, not a list: an immutable default, and the same JSON schema (an array of strings).
Allow = Annotated[
    tuple[str, ...],
    Field(
        max_length=256,
        description="Domain names (with their subdomains, e.g. pypi.org) and IPv4 CIDRs "
        "(203.0.113.0/24, or one address) reachable even with the internet off.",
    ),
]

ComputerAction = Literal[
    "move", "click", "mouse_down", "mouse_up", "drag", "scroll", "key", "hold_key", "type",
    "wait", "cursor_position", "screen_size", "open_url", "launch", "windows",
    "clipboard_get", "clipboard_set",
]  # fmt: skip

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
# run_command can do anything and write_file overwrites: both may destroy.
_DESTROYS = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """Turn Sietch's errors into tool errors the model reads (``message [code]``)."""
    try:
        yield
    except SietchError as exc:
        raise ToolError(f"{exc.message} [{exc.code}]") from exc


def decode_content(content: str, encoding: str) -> bytes:
    """``write_file``'s content as bytes; bad base64 is a tool error."""
    if encoding != "base64":
        return content.encode()
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ToolError("content is not valid base64") from exc


class Tools:
    """Every tool, as a method over one backend: name, docstring and parameters are
    what the agent sees. :data:`ANNOTATIONS` says which methods are tools."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def create_sandbox(
        self,
        image: Annotated[
            str | None, Field(description="Image name; omit for the default Debian image.")
        ] = None,
        timeout_s: Annotated[
            float | None,
            Field(gt=0, description="Delete the sandbox this many seconds after creation."),
        ] = None,
        internet: Annotated[
            bool | None,
            Field(description="Reach public internet addresses; omit for the server's default."),
        ] = None,
        allow: Allow = (),
    ) -> SandboxOut:
        """Start a new Linux sandbox (a microVM, ready in about a second). Returns its sandbox_id.

        Call destroy_sandbox when done, or pass timeout_s to have it removed automatically.
        """
        with tool_errors():
            return await self.backend.create(image, timeout_s, internet, list(allow))

    async def list_sandboxes(self) -> list[SandboxOut]:
        """List every sandbox on this Sietch server, with its state (running, paused, dead)."""
        with tool_errors():
            return await self.backend.sandboxes()

    async def run_command(
        self,
        sandbox_id: SandboxId,
        command: Annotated[str, Field(min_length=1, description="A shell command (sh -c).")],
        timeout_s: Annotated[
            float, Field(gt=0, le=3600, description="Kill the command after this many seconds.")
        ] = 60,
        cwd: Annotated[str | None, Field(description="Working directory; default /root.")] = None,
    ) -> CommandResult:
        """Run a shell command in a sandbox and wait for it; returns exit_code, stdout, stderr.

        A command still running after timeout_s is killed (timed_out is true). Each
        stream is cut at 64 KiB (truncated is true): redirect big output
        to a file and read a part of it.
        """
        with tool_errors():
            return await self.backend.run(sandbox_id, command, timeout_s, cwd)

    async def run_code(
        self,
        sandbox_id: SandboxId,
        code: Annotated[str, Field(min_length=1, description="Python, as in a notebook cell.")],
        context_id: Annotated[
            str | None, Field(description="Another kernel of the sandbox; default: the main one.")
        ] = None,
        timeout_s: Annotated[
            float, Field(gt=0, le=3600, description="Interrupt the code after this many seconds.")
        ] = 300,
    ) -> list[str | Image]:
        """Run Python in a code-interpreter sandbox (create_sandbox with image
        "code-interpreter"): a Jupyter kernel that keeps variables and imports between calls,
        with numpy, pandas and matplotlib. Returns JSON (stdout, stderr, result: the last
        line's value, error: the traceback), then every figure shown as an image. Each
        stream is cut at 64 KiB (truncated is true).
        """
        with tool_errors():
            run: CodeRun = await self.backend.run_code(sandbox_id, code, context_id, timeout_s)
        parts: list[str | Image] = [run.capped().model_dump_json()]
        parts += [Image(data=png, format="png") for png in run.images]
        return parts

    async def write_file(
        self,
        sandbox_id: SandboxId,
        path: GuestPath,
        content: Annotated[str, Field(description="The whole new content of the file.")],
        encoding: Annotated[
            Literal["utf-8", "base64"],
            Field(description="How content is given: text (utf-8) or base64 for binary data."),
        ] = "utf-8",
    ) -> FileWritten:
        """Create or replace a file in a sandbox (parent directories are created)."""
        data = decode_content(content, encoding)
        with tool_errors():
            return await self.backend.write_file(sandbox_id, path, data)

    async def read_file(self, sandbox_id: SandboxId, path: GuestPath) -> str:
        """Read a text file from a sandbox (at most 1 MiB).

        For a binary file, run_command "base64 <path>" instead.
        """
        with tool_errors():
            data = await self.backend.read_file(sandbox_id, path)
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise ToolError(
                f"{path} is not UTF-8 text: use run_command with 'base64 {path}'"
            ) from exc

    async def list_directory(
        self,
        sandbox_id: SandboxId,
        path: GuestPath = "/root",
        depth: Annotated[int, Field(ge=1, le=5, description="1 lists only the directory.")] = 1,
    ) -> list[DirEntry]:
        """List a directory in a sandbox: name, path, type (file, dir, symlink) and size."""
        with tool_errors():
            return await self.backend.list_dir(sandbox_id, path, depth)

    async def snapshot(
        self,
        sandbox_id: SandboxId,
        name: Annotated[str | None, Field(description="A name to recognise it by.")] = None,
    ) -> SnapshotOut:
        """Save a sandbox whole (memory, running processes, files); it keeps running.

        Take one before a risky step; restore or fork from it later, even after the
        sandbox is destroyed.
        """
        with tool_errors():
            return await self.backend.snapshot(sandbox_id, name)

    async def restore(
        self,
        snapshot_id: Annotated[str, Field(description="A snapshot_id from snapshot.")],
    ) -> SandboxOut:
        """Start a NEW sandbox from a snapshot, exactly as it was then; returns its sandbox_id.

        The snapshot's original sandbox is left as it is (destroy it if you no longer need it).
        """
        with tool_errors():
            return await self.backend.restore(snapshot_id)

    async def fork(
        self,
        sandbox_id: SandboxId,
        count: Annotated[int, Field(ge=1, le=16, description="How many copies.")] = 1,
    ) -> list[SandboxOut]:
        """Make running copies of a sandbox (memory, processes, files) to try things in parallel."""
        with tool_errors():
            return await self.backend.fork(sandbox_id, count)

    async def list_snapshots(self) -> list[SnapshotOut]:
        """List every snapshot; parent_id links a snapshot of a restored sandbox to its source."""
        with tool_errors():
            return await self.backend.snapshots()

    async def expose_port(
        self,
        sandbox_id: SandboxId,
        port: Annotated[int, Field(ge=1, le=65535, description="TCP port in the sandbox.")],
    ) -> PortOut:
        """Reach a TCP port of a sandbox (say a web server you started in it) from outside.

        Returns host:host_port on the Sietch server's machine (127.0.0.1) and a
        proxy_path on the Sietch API that forwards HTTP to the port with the same
        API key. Exposing a port again returns the same mapping. Start the server
        in the background first (e.g. run_command "nohup python3 -m http.server
        8000 >/dev/null 2>&1 &").
        """
        with tool_errors():
            return await self.backend.expose(sandbox_id, port)

    async def desktop_url(
        self,
        sandbox_id: SandboxId,
        view_only: Annotated[
            bool, Field(description="The person may watch but not use mouse or keyboard.")
        ] = False,
        ttl_s: Annotated[
            float | None,
            Field(ge=10, le=7 * 24 * 3600, description="Seconds the link lasts (default 3600)."),
        ] = None,
    ) -> DesktopOut:
        """A link that shows a desktop sandbox's screen live in a person's browser.

        For sandboxes made with image "desktop". Hand viewer_url to the person who
        should watch or take over; view_only=true lets them watch only.
        """
        with tool_errors():
            return await self.backend.desktop_url(sandbox_id, view_only, ttl_s)

    async def set_network(
        self,
        sandbox_id: SandboxId,
        internet: Annotated[bool, Field(description="Reach public internet addresses.")] = True,
        allow: Allow = (),
    ) -> NetworkOut:
        """Replace what a sandbox may reach over the network; new connections follow at once.

        internet=false with an allow list (say ["pypi.org", "files.pythonhosted.org"])
        lets it reach only those. The Sietch host is never reachable; private networks
        only when a CIDR in allow names them. Returns the policy now in force.
        """
        with tool_errors():
            return await self.backend.set_network(sandbox_id, internet, list(allow))

    async def hibernate_sandbox(self, sandbox_id: SandboxId) -> SandboxOut:
        """Put a sandbox to sleep on disk: memory, processes and files are kept, it uses no
        RAM or CPU. Any later call to it (run_command, read_file, ...) wakes it again."""
        with tool_errors():
            return await self.backend.hibernate(sandbox_id)

    async def set_timeout(
        self,
        sandbox_id: SandboxId,
        timeout_s: Annotated[
            float | None,
            Field(gt=0, description="Seconds from now; omit for no timeout at all."),
        ] = None,
        on_timeout: Annotated[
            TimeoutAction,
            Field(description="kill deletes it; pause or hibernate keep it to wake later."),
        ] = "kill",
    ) -> SandboxOut:
        """Give a sandbox more (or less) time: its timeout then counts from now."""
        with tool_errors():
            return await self.backend.set_timeout(sandbox_id, timeout_s, on_timeout)

    async def screenshot(
        self,
        sandbox_id: SandboxId,
        scale: Annotated[
            float | None, Field(gt=0, le=1, description="Shrink by this factor (0.5: half).")
        ] = None,
    ) -> Image:
        """See the screen of a desktop sandbox (created with image "desktop")."""
        with tool_errors():
            return Image(data=await self.backend.screenshot(sandbox_id, scale), format="png")

    async def computer(
        self,
        sandbox_id: SandboxId,
        action: Annotated[ComputerAction, Field(description="What to do.")],
        *,
        x: Annotated[int | None, Field(ge=0, description="Screen pixel column.")] = None,
        y: Annotated[int | None, Field(ge=0, description="Screen pixel row.")] = None,
        button: Literal["left", "middle", "right"] | None = None,
        count: Annotated[int | None, Field(ge=1, le=3, description="2: double click.")] = None,
        text: Annotated[str | None, Field(description="type, clipboard_set.")] = None,
        keys: Annotated[
            str | None, Field(description="key, hold_key: xdotool names, e.g. ctrl+l, Return.")
        ] = None,
        direction: Literal["up", "down", "left", "right"] | None = None,
        amount: Annotated[int | None, Field(ge=1, le=100, description="Wheel clicks.")] = None,
        path: Annotated[
            list[tuple[int, int]] | None, Field(description="drag: [[x, y], ...] points.")
        ] = None,
        duration: Annotated[float | None, Field(ge=0, description="Seconds.")] = None,
        url: Annotated[str | None, Field(description="open_url.")] = None,
        command: Annotated[list[str] | None, Field(description="launch: argv.")] = None,
        screenshot: Annotated[bool, Field(description="Also return the screen after.")] = False,
    ) -> list[str | Image]:
        """Use the mouse, keyboard, browser and clipboard of a desktop sandbox.

        Coordinates are screen pixels (take a screenshot first). The answer is JSON
        (cursor_position, screen_size, windows, clipboard_get say what they found),
        followed by the screen when screenshot is true.
        """
        given = {
            "action": action, "x": x, "y": y, "button": button, "count": count, "text": text,
            "keys": keys, "direction": direction, "amount": amount, "path": path,
            "duration": duration, "url": url, "command": command,
        }  # fmt: skip
        fields = {k: v for k, v in given.items() if v is not None}
        if screenshot:
            fields["screenshot"] = True
        with tool_errors():
            answer = await self.backend.computer(sandbox_id, fields)
        shot = answer.pop("screenshot", None)
        parts: list[str | Image] = [json.dumps(answer)]
        if shot is not None:
            parts.append(Image(data=base64.b64decode(shot), format="png"))
        return parts

    async def destroy_sandbox(self, sandbox_id: SandboxId) -> str:
        """Delete a sandbox: its VM stops and its disk is removed (its snapshots stay)."""
        with tool_errors():
            await self.backend.destroy(sandbox_id)
        return f"destroyed {sandbox_id}"


ANNOTATIONS: dict[str, ToolAnnotations] = {
    "create_sandbox": _CHANGES,
    "list_sandboxes": _READ_ONLY,
    "run_command": _DESTROYS,
    "run_code": _DESTROYS,
    "write_file": _DESTROYS,
    "read_file": _READ_ONLY,
    "list_directory": _READ_ONLY,
    "snapshot": _CHANGES,
    "restore": _CHANGES,
    "fork": _CHANGES,
    "list_snapshots": _READ_ONLY,
    "expose_port": _CHANGES,
    "desktop_url": _CHANGES,
    "set_network": _CHANGES,
    "hibernate_sandbox": _CHANGES,
    "set_timeout": _CHANGES,
    "screenshot": _READ_ONLY,
    "computer": _DESTROYS,
    "destroy_sandbox": _DESTROYS,
}
"""The tools, in the order an agent sees them, and what each may do."""


def build_server(backend: Backend) -> MCPServer:
    """An MCP server whose tools act through ``backend``."""
    mcp: MCPServer = MCPServer(
        "sietch", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    tools = Tools(backend)
    for name, hints in ANNOTATIONS.items():
        mcp.add_tool(getattr(tools, name), annotations=hints)
    return mcp
