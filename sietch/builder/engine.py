"""The build engine: runs a build's steps in a Sietch sandbox, caches each, ends in a template.

A build walks its steps (:mod:`sietch.builder.steps`) in order. While their
layers are cached it only moves the top layer up; at the first miss it
cold-boots one build sandbox over the top cached layer and runs every step
left in it: ``RUN`` through the agent's exec (the build's network policy,
``USER``, ``WORKDIR``, ``ENV`` and ``ARG`` s), ``COPY``/``ADD``/``WORKDIR``
through a tar the tools' python unpacks. After each disk step the guest syncs,
the VM stops for as long as a copy of its disk overlay takes (a reflink on
XFS), and the copy becomes that step's layer. Metadata steps only change the
image config.

The image is then recorded (not listed yet) and a sandbox is created from
it: the manager's one cold boot of an image starts its command, waits for it
to be ready, exposes its ports and saves the template that every later
create restores. Only then is the image listed. A failure anywhere stops the
build sandbox and leaves the previous image of that name (or none) listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sietch.builder import debian, guest
from sietch.builder.context import Context
from sietch.builder.dockerfile import parse
from sietch.builder.layers import LayerCache
from sietch.builder.steps import State, Step, chain_key, plan
from sietch.config import MiB
from sietch.core import images as user_images
from sietch.core import trust
from sietch.core.images import TOOLS_BUSYBOX
from sietch.core.manager import Manager
from sietch.core.models import DEFAULT_TENANT, ImageConfig, ImageRecord
from sietch.core.quotas import check_image_disk
from sietch.errors import Conflict, ImageBuildError, ImageNotFound, InvalidArgument, SietchError
from sietch.network.policy import NetworkPolicy
from sietch.storage import cow

log = logging.getLogger(__name__)

BUILD_LABEL = "sietch.build"
"""Label of the sandboxes a build runs (its steps, its template); value: the image name."""
_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]{0,99}")
_OUTPUT_KEPT = 8000

_CA_PATH = "/dev/shm/sietch-build-ca.pem"
"""In RAM (the agent mounts a tmpfs there): never in a layer."""

Emit = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass(frozen=True)
class Base:
    """What a build starts from: a built-in image's ext4 or a user image's top layer."""

    name: str
    key: str
    path: Path
    format: str
    size_mib: int
    config: ImageConfig = field(default_factory=ImageConfig)


@dataclass
class BuildRequest:
    name: str
    dockerfile: str
    context: Path
    """The unpacked build context."""
    build_args: dict[str, str] = field(default_factory=dict)
    disk_mib: int | None = None
    network: NetworkPolicy | None = None
    """The RUN steps' egress policy; None: the server's default."""
    source: str = "dockerfile"
    tenant: str = DEFAULT_TENANT
    """Whose image it becomes: its ``FROM`` must be that tenant's or a built-in one."""


@dataclass(frozen=True)
class Job:
    """A build checked and planned, ready to run."""

    request: BuildRequest
    base: Base
    steps: list[Step]
    context: Context
    disk_mib: int


def check_name(name: str, builtins: list[str]) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid image name {name!r}: lower-case letters, digits and . _ : - (at most 100)"
        )
    if name in builtins:
        raise InvalidArgument(f"{name!r} is a built-in image; choose another name")


class Builder:
    """Builds user images with one manager; one build per image name at a time."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.layers = LayerCache(manager.layout.images)
        self._locks: dict[str, asyncio.Lock] = {}
        self.running = 0
        """Builds in progress (prune leaves their work dirs alone while any runs)."""

    # -- entry points -----------------------------------------------------------

    async def build(self, req: BuildRequest, emit: Emit) -> ImageRecord:
        """Build ``req`` (a Dockerfile and its context) into the image ``req.name``."""
        return await self.run(await self.prepare(req), emit)

    async def prepare(self, req: BuildRequest) -> Job:
        """Check everything that can be checked before a sandbox boots: the name, the
        Dockerfile, the base image, the COPY sources (the API answers 4xx for these)."""
        self.claim(req.name, req.tenant)
        dockerfile = parse(req.dockerfile, req.build_args)
        base = await self.base(dockerfile.base, req.tenant)
        disk_mib = req.disk_mib or base.size_mib
        if disk_mib < base.size_mib:
            raise InvalidArgument(f"disk_mib must be at least {base.size_mib} for {base.name!r}")
        context = Context(req.context)
        await asyncio.to_thread(self.layers.prepare)
        steps = await asyncio.to_thread(
            plan, dockerfile, chain_key(base.key, f"disk={disk_mib}"), context
        )
        return Job(req, base, steps, context, disk_mib)

    async def run(self, job: Job, emit: Emit) -> ImageRecord:
        """Run a prepared build: its steps, then the image's template."""
        async with self.lock(job.request.name):
            self.running += 1
            try:
                return await self._build(job, emit)
            finally:
                self.running -= 1

    def claim(self, name: str, tenant: str) -> None:
        """Refuse a build or import of ``name`` for ``tenant``: a bad or built-in name, one
        another tenant's image has (names are one namespace), or a full image quota (429)."""
        check_name(name, self.manager.images.names())
        _check_owner(self.manager.store.get_image(name), tenant)
        quota = self.manager.quotas.quota_of(tenant)
        check_image_disk(tenant, quota, user_images.disk_bytes(self.manager.store, tenant))

    async def base(self, name: str, tenant: str = DEFAULT_TENANT) -> Base:
        """The image a build of ``tenant`` starts ``FROM``: a built-in, Debian or one of the
        tenant's own (another tenant's is unknown); ImageNotFound names the known ones."""
        store = self.manager.images
        if name in store.names():
            path = await asyncio.to_thread(store.rootfs, name)
            return Base(name, f"builtin:{path}", path, "raw", -(-path.stat().st_size // MiB))
        found = user_images.find(self.manager.store, name, tenant)
        if found is not None and found.ready:
            return Base(name, found.key, Path(found.rootfs), found.format, found.disk_mib,
                        found.config)  # fmt: skip
        if name in debian.BASES:
            path = await asyncio.to_thread(debian.base, name, self.layers)
            return Base(name, f"debian:{path.name}", path, "raw", -(-path.stat().st_size // MiB))
        known = [*store.names(), *(i.name for i in user_images.listed(self.manager.store, tenant))]
        raise ImageNotFound(
            f"no image named {name!r} to build from; known: {', '.join(known)}, "
            f"{', '.join(debian.BASES)}",
            image=name,
        )

    # -- the build --------------------------------------------------------------

    def lock(self, name: str) -> asyncio.Lock:
        """Held while an image of that name is built or imported."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def _build(self, job: Job, emit: Emit) -> ImageRecord:
        req, base, steps, context, disk_mib = (
            job.request,
            job.base,
            job.steps,
            job.context,
            job.disk_mib,
        )
        state = State.of(base.config)
        top, top_format, top_mib = base.path, base.format, base.size_mib
        sandbox_id: str | None = None
        secrets: dict[str, str] = {}
        boot_top = top
        started = 0
        try:
            for index, step in enumerate(steps, 1):
                state.apply(step.instruction)
                layer = self.layers.find(step.key) if step.changes_disk and not sandbox_id else None
                cached = layer is not None or not step.changes_disk
                await _emit(emit, type="step", index=index, total=len(steps),
                            line=step.instruction.line, instruction=step.describe(),
                            cached=cached)  # fmt: skip
                if layer is not None:
                    top, top_format, top_mib = layer, "qcow2", disk_mib
                if cached:
                    continue
                if sandbox_id is None:
                    sandbox_id = await self._boot(req, top, top_format, top_mib, disk_mib)
                    secrets = await self._hand_in(sandbox_id)
                    await _emit(emit, type="log", message="build sandbox started",
                                sandbox=sandbox_id)  # fmt: skip
                    boot_top, started = top, started + 1
                await self._execute(
                    sandbox_id, step, state, context=context, index=index, emit=emit, env=secrets
                )
                top = await self._commit(sandbox_id, step.key, boot_top)
                top_format, top_mib = "qcow2", disk_mib
        finally:
            if sandbox_id is not None:
                with contextlib.suppress(SietchError):
                    await self.manager.delete(sandbox_id)
        record = ImageRecord(
            name=req.name,
            source=req.source,  # type: ignore[arg-type]
            base=base.name,
            key=steps[-1].key if steps else chain_key(base.key, f"disk={disk_mib}"),
            rootfs=str(top),
            format=top_format,  # type: ignore[arg-type]
            layers=[str(p) for p in self.layers.chain(top)],
            disk_mib=max(disk_mib, top_mib),
            steps=[s.describe() for s in steps],
            created_at=datetime.now(UTC),
            config=state.config(),
            tenant=req.tenant,
        )
        record.size_bytes = self._own_bytes(record, base)
        return await self.publish(record, emit, build_sandboxes=started)

    async def _boot(
        self, req: BuildRequest, top: Path, fmt: str, top_mib: int, disk_mib: int
    ) -> str:
        manager = self.manager
        info = await manager.boot_disk(
            top,
            base_format=fmt,
            base_mib=top_mib,
            disk_mib=disk_mib,
            network=req.network or manager.default_network(),
            labels={BUILD_LABEL: req.name},
        )
        return info.id

    async def _execute(
        self,
        sandbox_id: str,
        step: Step,
        state: State,
        *,
        context: Context,
        index: int,
        emit: Emit,
        env: dict[str, str],
    ) -> None:
        ins = step.instruction
        async with self.manager.use(sandbox_id) as sb:
            if ins.kind == "RUN":
                await self._run(sb, step, state, index, emit, env)
            elif ins.kind == "WORKDIR":
                uid, gid = await guest.ids(sb, state.user, ins.line)
                await guest.helper(sb, "mkdir", state.workdir or "/", str(uid), str(gid))
            else:
                await self._copy(sb, step, state, context)

    async def _run(  # noqa: PLR0917 (one call site, in order)
        self, sb: Any, step: Step, state: State, index: int, emit: Emit, extra: dict[str, str]
    ) -> None:
        ins = step.instruction
        argv = ["/bin/sh", "-c", ins.args[0]] if ins.shell else list(ins.args)
        kept = bytearray()

        async def show(data: bytes) -> None:
            kept.extend(data)
            del kept[:-_OUTPUT_KEPT]
            await _emit(emit, type="output", data=data.decode(errors="replace"))

        try:
            result = await sb.exec(
                argv,
                env={**state.args, **state.env, **extra},
                user=state.user or "root",
                cwd=state.workdir or "/",
                on_stdout=show,
                on_stderr=show,
            )
        except SietchError as exc:
            raise ImageBuildError(
                f"step {index} (Dockerfile line {ins.line}) {step.describe()}: {exc.message}",
                step=index, line=ins.line, output=kept.decode(errors="replace"),
            ) from exc  # fmt: skip
        if result.exit_code != 0:
            code = result.exit_code if result.exit_code is not None else f"signal {result.signal}"
            raise ImageBuildError(
                f"step {index} (Dockerfile line {ins.line}) {step.describe()} failed with "
                f"exit code {code}",
                step=index, line=ins.line, exit_code=result.exit_code,
                output=kept.decode(errors="replace"),
            )  # fmt: skip

    async def _copy(self, sb: Any, step: Step, state: State, context: Context) -> None:
        ins = step.instruction
        dest = state.resolve(ins.args[-1])
        guest.check_sources(list(step.sources), ins.args[-1], ins.line)
        dest_is_dir = (
            ins.args[-1].endswith("/")
            or len(step.sources) > 1
            or await guest.helper(sb, "isdir", dest) == 0
        )
        chown = ins.flag("chown")
        owner = await guest.ids(sb, chown, ins.line) if chown else None
        chmod = ins.flag("chmod")
        try:
            mode = int(chmod, 8) if chmod else None
        except ValueError:
            raise InvalidArgument(
                f"Dockerfile line {ins.line}: --chmod={chmod} is not octal", line=ins.line
            ) from None
        with tempfile.TemporaryDirectory(dir=self.layers.tmp, prefix="copy-") as tmp:
            tar = Path(tmp) / "copy.tar"
            await asyncio.to_thread(
                guest.copy_tar, context, step.sources, dest, owner=owner, chmod=mode,
                dest_is_dir=dest_is_dir, unpack=ins.kind == "ADD", out=tar,
            )  # fmt: skip
            await guest.upload(sb, tar)

    async def _hand_in(self, sandbox_id: str) -> dict[str, str]:
        """The CA bundle and proxy variables of the settings, for the RUN steps' env (they
        are not part of the cache keys, as Docker's proxy ARGs are not)."""
        settings = self.manager.settings
        async with self.manager.use(sandbox_id) as sb:
            return await trust.hand_in(
                sb, settings.build_ca_bundle, _CA_PATH, settings.build_proxy_env
            )

    async def _commit(self, sandbox_id: str, key: str, parent: Path) -> Path:
        """Sync the guest, stop it, copy its disk overlay in as the layer ``key``."""
        async with self.manager.use(sandbox_id) as sb:
            await sb.exec([TOOLS_BUSYBOX, "sync"], user="root", cwd="/")
            disk = sb.machine.config.root_disk
        await self.manager.pause(sandbox_id)
        try:
            return await asyncio.to_thread(self.layers.put, key, disk, parent)
        finally:
            await self.manager.resume(sandbox_id)

    def _own_bytes(self, record: ImageRecord, base: Base) -> int:
        below = set(self.layers.chain(base.path))
        return sum(cow.disk_usage(Path(p)) for p in record.layers if Path(p) not in below)

    # -- publishing: template, then listed ----------------------------------------

    async def publish(
        self, record: ImageRecord, emit: Emit, *, build_sandboxes: int = 0
    ) -> ImageRecord:
        """Record the image, make its template (start command running and ready), list it."""
        store = self.manager.store
        old = store.get_image(record.name)
        _check_owner(old, record.tenant)  # another tenant's build of the name finished first
        unchanged = (
            old is not None and old.ready and old.key == record.key and old.rootfs == record.rootfs
        )
        if unchanged and old is not None and await self._has_template(old):
            await _emit(emit, type="log", message="unchanged: the image and its template exist")
            await _emit(emit, type="done", image=old.model_dump(mode="json"),
                        build_sandboxes=build_sandboxes)  # fmt: skip
            return old
        store.put_image(record)
        try:
            await _emit(emit, type="log", message="starting the image and saving its template")
            info = await self.manager.create(
                image=record.name, labels={BUILD_LABEL: record.name}, tenant=record.tenant
            )
            await self.manager.delete(info.id)
        except BaseException:
            if old is not None:
                store.put_image(old)
            else:
                store.delete_image(record.name)
            raise
        record.ready = True
        store.put_image(record)
        await _emit(emit, type="done", image=record.model_dump(mode="json"),
                    build_sandboxes=build_sandboxes + 1)  # fmt: skip
        return record

    async def _has_template(self, image: ImageRecord) -> bool:
        snaps = await self.manager.list_snapshots(templates=True)
        return any(s.template and s.image == image.name for s in snaps)


def _check_owner(image: ImageRecord | None, tenant: str) -> None:
    if image is not None and image.tenant != tenant:
        raise Conflict(f"the image name {image.name!r} is taken; choose another", image=image.name)


async def _emit(emit: Emit, **event: Any) -> None:
    result = emit(event)
    if inspect.isawaitable(result):
        await result
