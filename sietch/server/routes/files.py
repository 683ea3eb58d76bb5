"""Files: raw-bytes streamed upload and download, list, stat, mkdir, remove, rename."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from sietch.server.deps import GuestPathDep, SandboxDep
from sietch.server.middleware import content_length
from sietch.server.schemas import FilePublic, FilesPublic, FileWritten, MkdirCreate, RenameCreate

router = APIRouter(prefix="/sandboxes/{sandbox_id}/files", tags=["files"])

_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_RAW_BODY = {"requestBody": {"required": True, "content": _BYTES}}
_RAW_RESPONSE: dict[int | str, dict[str, object]] = {200: {"content": _BYTES}}


@router.put("", name="write", response_model=FileWritten, openapi_extra=_RAW_BODY)
async def write_file(
    request: Request,
    path: GuestPathDep,
    sandbox: SandboxDep,
    mode: Annotated[int | None, Query(ge=0, le=0o7777, description="e.g. 493 for 0755")] = None,
) -> FileWritten:
    """Write the request body to ``path`` as it arrives (never held whole); parents are made."""
    size = await sandbox.write_file(
        path, request.stream(), mode=mode, size=content_length(request.scope)
    )
    return FileWritten(path=path, size=size)


@router.get("", name="read", response_class=StreamingResponse, responses=_RAW_RESPONSE)
async def read_file(path: GuestPathDep, sandbox: SandboxDep) -> StreamingResponse:
    """Stream the file's bytes out of the guest."""
    chunks: AsyncGenerator[bytes, None] = sandbox.read_file(path)  # type: ignore[assignment]
    # Pull the first chunk before answering, so a missing file is a 404, not a torn 200.
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return StreamingResponse(body(), media_type="application/octet-stream")


@router.delete("", name="remove", status_code=status.HTTP_204_NO_CONTENT)
async def remove_file(path: GuestPathDep, sandbox: SandboxDep, recursive: bool = False) -> Response:
    """Remove a file, or a directory (non-empty only with ``recursive``)."""
    await sandbox.remove(path, recursive=recursive)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/list", name="list", response_model=FilesPublic)
async def list_files(
    path: GuestPathDep, sandbox: SandboxDep, depth: Annotated[int, Query(ge=1, le=16)] = 1
) -> FilesPublic:
    """The entries of a directory (``depth`` levels down)."""
    entries = [_public(e.model_dump()) for e in await sandbox.list_dir(path, depth)]
    return FilesPublic(data=entries, count=len(entries))


@router.get("/stat", name="stat", response_model=FilePublic)
async def stat_file(path: GuestPathDep, sandbox: SandboxDep) -> FilePublic:
    """Type, size, mode and mtime of one path (symlinks are not followed)."""
    return _public((await sandbox.stat(path)).model_dump())


@router.post("/mkdir", name="mkdir", status_code=status.HTTP_201_CREATED, response_model=FilePublic)
async def make_dir(body: MkdirCreate, sandbox: SandboxDep) -> FilePublic:
    """Create a directory (and its parents unless ``parents`` is false)."""
    await sandbox.mkdir(body.path, parents=body.parents)
    return _public((await sandbox.stat(body.path)).model_dump())


@router.post("/rename", name="rename", response_model=FilePublic)
async def rename_file(body: RenameCreate, sandbox: SandboxDep) -> FilePublic:
    """Move ``src`` to ``dst`` (replacing ``dst`` only with ``overwrite``)."""
    await sandbox.rename(body.src, body.dst, overwrite=body.overwrite)
    return _public((await sandbox.stat(body.dst)).model_dump())


def _public(entry: dict[str, object]) -> FilePublic:
    """Names that are not UTF-8 reach us with surrogate escapes; show them replaced."""
    for key in ("name", "path", "target"):
        value = entry.get(key)
        if isinstance(value, str):
            try:
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = value.encode("utf-8", "replace")
            entry[key] = raw.decode("utf-8", "replace")
    return FilePublic.model_validate(entry)
