"""Code in a sandbox's Jupyter kernel: the request of ``run_code`` and how its streamed
lines add up to an :class:`~sietch.client._models.Execution` (no I/O here; both SDKs use it)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from sietch.client._core import WAIT_MARGIN_S, Call
from sietch.client._models import CodeError, CodeResult, Execution
from sietch.errors import BadGateway

DEFAULT_TIMEOUT_S = 300.0
IMAGES = ("png", "jpeg")
"""Result fields that are base64 on the wire and bytes in a :class:`CodeResult`."""


class ExecutionBuilder:
    """Adds up the gateway's lines (:mod:`sietch.core.interpreter`) into an Execution."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.results: list[CodeResult] = []
        self.error: CodeError | None = None
        self.count: int | None = None
        self.ended = False

    def feed(self, raw: str) -> tuple[str, str] | None:
        """Take one line; returns ``("stdout" | "stderr", text)`` for output to hand on."""
        if not raw.strip():
            return None
        line = json.loads(raw)
        kind = line.pop("type", None)
        if kind in ("stdout", "stderr"):
            (self.stdout if kind == "stdout" else self.stderr).append(line["text"])
            return kind, line["text"]
        if kind == "result":
            for field in IMAGES:
                if isinstance(line.get(field), str):
                    line[field] = base64.b64decode(line[field])
            self.results.append(CodeResult.model_validate(line))
        elif kind == "error":
            self.error = CodeError.model_validate(line)
        elif kind == "number_of_executions":
            self.count = line["execution_count"]
        elif kind == "end_of_execution":
            self.ended = True
        return None

    def result(self) -> Execution:
        if not self.ended:
            raise BadGateway("the run_code stream ended before the code did")
        return Execution(
            stdout="".join(self.stdout),
            stderr="".join(self.stderr),
            results=self.results,
            error=self.error,
            execution_count=self.count,
        )


def run_code_call(
    sandbox_id: str,
    code: str,
    *,
    context: str | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
) -> Call[None]:
    body = {"code": code, "context_id": context, "env": dict(env or {}), "timeout": timeout}
    return Call(
        "POST",
        f"/sandboxes/{sandbox_id}/run-code",
        lambda _: None,
        json=body,
        # Between two lines the server may wait for the cell up to its own timeout.
        timeout=None if timeout is None else timeout + WAIT_MARGIN_S,
    )
