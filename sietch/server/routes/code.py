"""Running code in a sandbox's Jupyter kernel (the code-interpreter image), its output
streamed back one JSON object a line, as the kernel gateway writes them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from sietch.core import interpreter
from sietch.server.deps import ManagerDep, StateDep

router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["code"])

MAX_TIMEOUT_S = 24 * 3600.0


class RunCodeCreate(BaseModel):
    code: str = Field(max_length=1 << 20)
    context_id: str | None = Field(
        None, max_length=200, description="A kernel context of the gateway; default: the main one."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Set for this run only.")
    timeout: float | None = Field(
        interpreter.DEFAULT_TIMEOUT_S,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Seconds; then the cell is interrupted (null: no limit).",
    )


@router.post(
    "/run-code",
    name="run_code",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "One JSON object a line: stdout, stderr (text), result (text, "
            "png, svg, html, json, chart, ...; is_main_result), error (name, value, "
            "traceback), number_of_executions (execution_count), end_of_execution.",
        },
        409: {"description": "The sandbox has no code interpreter."},
    },
)
async def run_code(
    sandbox_id: str, body: RunCodeCreate, manager: ManagerDep, state: StateDep
) -> StreamingResponse:
    """Run Python in the sandbox's kernel, which keeps its state between runs."""
    lines = interpreter.run_code(
        manager,
        state.service_client,
        sandbox_id,
        body.code,
        context_id=body.context_id,
        env=body.env,
        timeout_s=body.timeout,
    )
    first = await anext(lines)  # a refusal is still an error answer, not a cut stream

    async def ndjson() -> AsyncIterator[str]:
        line: dict[str, Any] = first
        yield json.dumps(line) + "\n"
        async for line in lines:
            yield json.dumps(line) + "\n"

    return StreamingResponse(ndjson(), media_type="application/x-ndjson")
