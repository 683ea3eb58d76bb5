"""What the MCP tools return: small, flat records an agent reads easily.

Both backends (the manager in-process, the SDK over HTTP) produce these, so the
tools and their output schemas are written once.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, Field

OUTPUT_LIMIT = 64 * 1024
"""Bytes of stdout (and of stderr) a command result carries: a model's context is finite."""
READ_LIMIT = 1024 * 1024
"""Largest file ``read_file`` returns; bigger files are refused with a hint."""


class SandboxOut(BaseModel):
    sandbox_id: str
    state: str
    image: str
    restored_from: str | None = Field(
        default=None, description="The snapshot this sandbox was restored from, if any."
    )
    expires_at: str | None = Field(
        default=None, description="When its timeout acts (set_timeout changes it), if ever."
    )


class CommandResult(BaseModel):
    exit_code: int | None = Field(description="None when a signal or the timeout ended it.")
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = Field(
        default=False, description=f"Output beyond {OUTPUT_LIMIT} bytes per stream was dropped."
    )


class CodeRun(BaseModel):
    """What run_code did; its figures travel beside it as images."""

    stdout: str = ""
    stderr: str = ""
    result: str | None = Field(default=None, description="The value of the last line, as text.")
    error: str | None = Field(default=None, description="The exception it raised: its traceback.")
    execution_count: int | None = None
    images: list[bytes] = Field(default=[], exclude=True)
    """PNGs the code showed (matplotlib figures)."""
    truncated: bool = Field(
        default=False, description=f"Output beyond {OUTPUT_LIMIT} bytes per stream was dropped."
    )

    def capped(self) -> CodeRun:
        """This run with stdout and stderr cut as run_command's are."""
        out, cut_out = capped(self.stdout.encode())
        err, cut_err = capped(self.stderr.encode())
        return self.model_copy(
            update={"stdout": out, "stderr": err, "truncated": cut_out or cut_err}
        )

    def add(self, line: dict[str, Any]) -> None:
        """Take one line of the kernel gateway's stream (sietch.core.interpreter)."""
        kind = line.get("type")
        if kind in ("stdout", "stderr"):
            setattr(self, kind, getattr(self, kind) + line["text"])
        elif kind == "result":
            if line.get("is_main_result"):
                self.result = line.get("text")
            if isinstance(line.get("png"), str):
                self.images.append(base64.b64decode(line["png"]))
        elif kind == "error":
            self.error = line.get("traceback") or f"{line['name']}: {line['value']}"
        elif kind == "number_of_executions":
            self.execution_count = line["execution_count"]


class FileWritten(BaseModel):
    path: str
    size: int


class DirEntry(BaseModel):
    name: str
    path: str
    type: str = Field(description="file, dir, symlink or other.")
    size: int


class PortOut(BaseModel):
    sandbox_id: str
    guest_port: int
    host: str = Field(description="Reach the port at host:host_port on the Sietch server's host.")
    host_port: int
    proxy_path: str = Field(
        description="Or over HTTP through the Sietch API (same API key): this path on its URL."
    )


def port_out(sandbox_id: str, guest_port: int, host: str, host_port: int) -> PortOut:
    return PortOut(
        sandbox_id=sandbox_id,
        guest_port=guest_port,
        host=host,
        host_port=host_port,
        proxy_path=f"/api/v1/sandboxes/{sandbox_id}/ports/{guest_port}/proxy/",
    )


class DesktopOut(BaseModel):
    sandbox_id: str
    viewer_url: str = Field(
        description="Open in a browser to see the desktop live (noVNC); give it to the person."
    )
    width: int
    height: int
    view_only: bool
    expires_at: float = Field(description="When the link ends (seconds since the epoch).")


class NetworkOut(BaseModel):
    sandbox_id: str
    internet: bool = Field(description="Public internet addresses are reachable.")
    allow: list[str] = Field(
        description="CIDRs and domain names (with subdomains) reachable either way, normalised."
    )


class SnapshotOut(BaseModel):
    snapshot_id: str
    name: str | None = None
    sandbox_id: str | None = Field(default=None, description="The sandbox it was taken of.")
    parent_id: str | None = None
    created_at: str


def capped(data: bytes, limit: int = OUTPUT_LIMIT) -> tuple[str, bool]:
    """Text for a model: at most ``limit`` bytes, invalid UTF-8 replaced."""
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit
