"""User images: build from a Dockerfile, import an OCI archive, list, inspect, remove, prune.

A build's request body is its context as a tar stream; the answer streams the
build's log as NDJSON, one event a line (``step``, ``output``, ``log``, and last
``done`` with the image or ``error`` with the error's JSON), so a client sees
each step as it runs. What can be refused before a sandbox boots (bad name,
Dockerfile, base image, COPY sources, archive) is an ordinary 4xx instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from sietch.builder import Builder, BuildRequest, safetar
from sietch.builder.engine import Emit
from sietch.builder.manage import Images
from sietch.builder.oci import import_image
from sietch.core.manager import Manager
from sietch.errors import InvalidArgument, SietchError
from sietch.network.policy import NetworkPolicy
from sietch.server.deps import CallerDep, ManagerDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/images", tags=["images"])

CLIENT_DOCKERFILE = ".sietch-dockerfile"
"""Where the CLI and SDK put the Dockerfile in the context tar (it may live outside the
context); removed from the context before the build reads it."""
_builders: weakref.WeakKeyDictionary[Manager, Builder] = weakref.WeakKeyDictionary()
_NDJSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/x-ndjson": {}}, "description": "build events"}
}


async def get_builder(manager: ManagerDep) -> Builder:
    """One builder per manager (its per-name build locks and running count)."""
    if manager not in _builders:
        _builders[manager] = Builder(manager)
    return _builders[manager]


BuilderDep = Annotated[Builder, Depends(get_builder)]


async def _receive(request: Request, dest: Path) -> None:
    """The request body into ``dest`` (the middleware caps it: SIETCH_MAX_UPLOAD_BYTES)."""
    f = await asyncio.to_thread(open, dest, "wb")
    try:
        async for chunk in request.stream():
            await asyncio.to_thread(f.write, chunk)
    finally:
        f.close()


def _unpack_context(archive: Path, dest: Path) -> None:
    with open(archive, "rb") as f:
        if archive.stat().st_size:
            safetar.extract(f, dest)
        else:
            dest.mkdir(parents=True, exist_ok=True)


def _events(work: Path, run: Callable[[Emit], Awaitable[Any]]) -> StreamingResponse:
    """Run ``run(emit)`` while streaming what it emits; its error becomes the last event.
    The work dir is gone before the last event is sent; a client that goes away cancels
    the build (its sandbox is stopped)."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def job() -> None:
        last: list[dict[str, Any]] = []

        def emit(event: dict[str, Any]) -> None:
            if event.get("type") == "done":
                last.append(event)  # sent once the work dir is gone
            else:
                queue.put_nowait(event)

        try:
            await run(emit)
        except SietchError as exc:
            last.append({"type": "error", "error": exc.to_dict()})
        except Exception as exc:  # a bug: logged here, a plain 'internal' error to the client
            log.exception("image build failed")
            last.append({"type": "error", "error": SietchError(str(exc)).to_dict()})
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
            for event in last:
                queue.put_nowait(event)
            queue.put_nowait(None)

    async def body() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(job())
        try:
            while (event := await queue.get()) is not None:
                yield (json.dumps(event, default=str) + "\n").encode()
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(shutil.rmtree, work, True)  # if the job never ran

    return StreamingResponse(body(), media_type="application/x-ndjson")


@router.post("", name="build", response_class=StreamingResponse, responses=_NDJSON)
async def build_image(
    request: Request,
    builder: BuilderDep,
    caller: CallerDep,
    *,
    name: Annotated[str, Query(description="The new image's name.")],
    dockerfile: Annotated[str, Query(description="The Dockerfile's path in the context.")] = (
        "Dockerfile"
    ),
    build_arg: Annotated[list[str] | None, Query(description="KEY=value, repeatable.")] = None,
    disk_mib: Annotated[int | None, Query(ge=1, description="The image's disk size.")] = None,
    internet: Annotated[bool | None, Query(description="RUN steps reach the internet.")] = None,
    allow: Annotated[list[str] | None, Query(description="RUN steps may reach these.")] = None,
) -> StreamingResponse:
    """Build an image from a Dockerfile; the body is the build context as a tar stream."""
    args = {}
    for item in build_arg or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"build_arg must be KEY=value, not {item!r}")
        args[key] = value
    work = await asyncio.to_thread(builder.layers.workdir, "build")
    try:
        await _receive(request, work / "context.tar")
        context = work / "context"
        await asyncio.to_thread(_unpack_context, work / "context.tar", context)
        text = await asyncio.to_thread(_dockerfile, context, dockerfile)
        network = None
        if internet is not None or allow:
            default = builder.manager.default_network()
            network = NetworkPolicy(
                internet=default.internet if internet is None else internet, allow=allow or []
            )
        job = await builder.prepare(
            BuildRequest(name=name, dockerfile=text, context=context, build_args=args,
                         disk_mib=disk_mib, network=network, tenant=caller.tenant)
        )  # fmt: skip
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, work, True)
        raise
    return _events(work, lambda emit: builder.run(job, emit))


def _dockerfile(context: Path, path: str) -> str:
    clean = safetar.clean_name(path)
    file = context / clean
    if not file.is_file() or file.is_symlink():
        raise InvalidArgument(f"no Dockerfile at {path!r} in the build context")
    text = file.read_text()
    if clean == CLIENT_DOCKERFILE:
        file.unlink()
    return text


@router.post("/import", name="import", response_class=StreamingResponse, responses=_NDJSON)
async def import_oci(
    request: Request,
    builder: BuilderDep,
    caller: CallerDep,
    name: Annotated[str, Query(description="The new image's name.")],
) -> StreamingResponse:
    """Import a ``docker save`` tarball or an OCI image layout (the body, as a tar)."""
    builder.claim(name, caller.tenant)  # a 4xx (quota: 429) before the upload, not an event
    work = await asyncio.to_thread(builder.layers.workdir, "upload")
    try:
        await _receive(request, work / "image.tar")
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, work, True)
        raise
    return _events(
        work, lambda emit: import_image(builder, name, work / "image.tar", emit, caller.tenant)
    )


@router.get("", name="list")
async def list_images(builder: BuilderDep, caller: CallerDep) -> dict[str, list[dict[str, Any]]]:
    """Built-in and the tenant's user images (an admin: every tenant's), with their size,
    base, steps and users."""
    return {"data": Images(builder, caller.scope).list()}


@router.get("/{name}", name="get")
async def get_image(name: str, builder: BuilderDep, caller: CallerDep) -> dict[str, Any]:
    """One image: its config, layers, steps, and the sandboxes and snapshots using it."""
    return Images(builder, caller.scope).describe(name)


@router.delete("/{name}", name="delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_image(name: str, builder: BuilderDep, caller: CallerDep) -> Response:
    """Remove a user image (409 naming its users while sandboxes or snapshots use it)."""
    await Images(builder, caller.scope).remove(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/prune", name="prune")
async def prune_images(builder: BuilderDep, caller: CallerDep) -> dict[str, list[str]]:
    """Delete cached build layers that no image needs (an admin key: the cache is shared)."""
    return {"removed": await Images(builder, caller.scope).prune()}
