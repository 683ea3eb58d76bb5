"""``sietch serve --gateway``: the public API of a cluster, forwarded to its nodes.

Stateless: what it knows it reads from the catalog on every request (where a sandbox
is, who a key belongs to, which nodes are up), so any number of gateways serve behind
one address and a restart loses nothing. Each request goes, with the cluster secret and
the caller it resolved, to the node that holds its sandbox (:mod:`.routing`): HTTP
streamed both ways with httpx, WebSockets relayed message by message. A node that
cannot be reached is a 503 naming it, at once if the catalog already says so, else as
soon as the connection fails (a connect timeout of a few seconds at most): never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import httpx
import websockets
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection

from sietch import __version__
from sietch.cluster import placement
from sietch.cluster.catalog import Catalog, NodeRecord
from sietch.cluster.grants import GrantTable
from sietch.cluster.tenants import ClusterTenants
from sietch.cluster.wire import CALLER_HEADER, SCHEME_HEADER, SECRET_HEADER, encode_caller
from sietch.config import Settings
from sietch.core.quotas import QuotaGate, Usage
from sietch.core.tenants import ANONYMOUS, Caller, digest
from sietch.errors import (
    AuthenticationError,
    BadGateway,
    InvalidArgument,
    PayloadTooLarge,
    SandboxNotFound,
    SietchError,
    SnapshotNotFound,
    Unavailable,
)
from sietch.server.arrakis.registry import VM_LABEL
from sietch.server.console.logins import SharedLogins
from sietch.server.console.render import console_error, validated
from sietch.server.console.session import caller_of_login, login_gate
from sietch.server.exec_ws import refuse
from sietch.server.gateway.bodiless import SMALL_ANSWER, BodilessForwarder, bodiless
from sietch.server.gateway.copies import Copier
from sietch.server.gateway.forwarding import (
    NOT_FORWARDED,
    RESPONSE_NOT_FORWARDED,
    WS_NOT_FORWARDED,
    api_key,
    buffered,
    copy_response,
    deny,
    lower_headers,
    merge,
    same_origin,
    unreachable,
)
from sietch.server.gateway.mcp import GatewayMcp
from sietch.server.gateway.routing import CONSOLE, RECORD, Target, classify, image_of
from sietch.server.handlers import error_response
from sietch.server.mcp import own_url
from sietch.server.routes.proxy.ws_relay import relay
from sietch.server.routes.sandboxes import parse_labels
from sietch.server.schemas import ForkCreate

log = logging.getLogger(__name__)

T = TypeVar("T")
FORM = "application/x-www-form-urlencoded"
CONNECT_TIMEOUT_S = 3.0
_CALLERS = 10_000
_PLACEMENTS = 100_000
_PLACED = frozenset({"create", "restore", "delete_many"})
"""The console's requests whose login the gateway checks itself: it places them (under
the tenant's quota) or splits them over nodes."""


class Gateway:
    """The forwarding logic; one per app, its HTTP client opened in the lifespan."""

    def __init__(self, settings: Settings, tenants: ClusterTenants) -> None:
        assert settings.cluster_secret is not None
        self.settings = settings
        self.tenants = tenants
        self.catalog: Catalog = tenants.catalog
        self.secret = settings.cluster_secret.get_secret_value()
        self.quotas = QuotaGate(tenants.quota, self.catalog.usage)
        self.logins = login_gate(SharedLogins(table=GrantTable(self.catalog)))
        self._http: httpx.AsyncClient | None = None
        self._copier: Copier | None = None
        self._bodiless: BodilessForwarder | None = None
        self._placements: OrderedDict[str, tuple[str, str]] = OrderedDict()
        """Sandbox id -> (node, tenant): one catalog read less per request. A sandbox keeps
        its node (a deleted one's node answers 404 itself) unless a hibernated one moves
        (:meth:`resume`): this gateway forgets it then, the others when their watcher sees
        the move in the catalog (:meth:`Catalog.moved_since`)."""
        self._moves_seen = datetime.now(UTC)
        """The catalog's time of the last move this gateway has seen (its clock, set at
        start)."""
        self._nodes: dict[str, NodeRecord] = {}
        """The nodes as of the last look (every ``heartbeat_s``): who is reachable."""
        self._lost: dict[str, asyncio.Future[None]] = {}
        """Per node: done while it is unreachable (what :meth:`unless_lost` waits for)."""
        self._callers: OrderedDict[str, Caller] = OrderedDict()
        """Key digest -> the caller it last resolved to: what a record read is sent on
        with while the key is checked again (:meth:`read_ahead`)."""

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise Unavailable("the gateway is starting or stopping")
        return self._http

    @property
    def bodiless(self) -> BodilessForwarder:
        if self._bodiless is None:
            raise Unavailable("the gateway is starting or stopping")
        return self._bodiless

    @property
    def copier(self) -> Copier:
        if self._copier is None:
            raise Unavailable("the gateway is starting or stopping")
        return self._copier

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None, write=None, pool=None),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,
        )
        self._copier = Copier(self._http, self.secret)
        self._bodiless = BodilessForwarder(CONNECT_TIMEOUT_S)
        self._moves_seen = await asyncio.to_thread(self.catalog.now)
        await self.refresh()
        watcher = asyncio.create_task(self._watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self._http.aclose()
            await self.bodiless.close()
            self._http = self._copier = self._bodiless = None
            self.catalog.close()

    async def refresh(self) -> list[NodeRecord]:
        nodes = await asyncio.to_thread(self.catalog.nodes)
        self._nodes = {n.name: n for n in nodes}
        for node in nodes:
            lost = self._lost_signal(node.name)
            if node.reachable and lost.done():
                self._lost[node.name] = asyncio.get_running_loop().create_future()
            elif not node.reachable and not lost.done():
                lost.set_result(None)
        return nodes

    def _lost_signal(self, node: str) -> asyncio.Future[None]:
        """Done while ``node`` is unreachable: one per node, shared by every request."""
        if (lost := self._lost.get(node)) is None:
            lost = self._lost[node] = asyncio.get_running_loop().create_future()
        return lost

    async def unless_lost(self, node: str, work: Awaitable[T]) -> T:
        """``work``, cut short by a 503 naming ``node`` if the node is found unreachable
        meanwhile: a request on a node that froze (its process stopped, its machine cut
        off) ends once its heartbeats stop, however long the call would have run."""
        task = asyncio.ensure_future(work)
        either: set[asyncio.Future[Any]] = {task, self._lost_signal(node)}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise unreachable(node, "it", "it missed its heartbeats while answering")
        return task.result()

    async def _watch(self) -> None:
        """Mark the nodes whose heartbeats stopped unreachable (their sandboxes are then
        ``lost``), logging each once, and keep the view of the nodes fresh."""
        while True:
            with contextlib.suppress(SietchError):
                for name in await asyncio.to_thread(self.catalog.mark_unreachable):
                    log.warning("node %s missed its heartbeats: unreachable", name)
                await self.refresh()
                moved, self._moves_seen = await asyncio.to_thread(
                    self.catalog.moved_since, self._moves_seen
                )
                for sandbox_id in moved:
                    self._placements.pop(sandbox_id, None)
            await asyncio.sleep(self.settings.heartbeat_s)

    # -- who and where ----------------------------------------------------------------

    async def caller(self, conn: HTTPConnection) -> Caller | None:
        """The caller of the request's key; None without one (the node decides: browser
        links, envd tokens and public routes carry none); 401 for an unknown key."""
        if not self.settings.auth:
            return ANONYMOUS
        key = api_key(conn)
        if key is None:
            return None
        found = await asyncio.to_thread(self.tenants.lookup, key)
        known = digest(key)
        if found is None:
            self._callers.pop(known, None)
            raise AuthenticationError("invalid API key")
        self._callers[known] = found
        self._callers.move_to_end(known)
        while len(self._callers) > _CALLERS:
            self._callers.popitem(last=False)
        return found

    async def login_caller(self, conn: HTTPConnection) -> Caller | None:
        """The caller of a console login (its cookie), for what the gateway itself decides
        (placement and quotas of a create); None without a live one (the node answers
        with its sign-in page)."""
        if not self.settings.auth:
            return ANONYMOUS
        try:
            return await asyncio.to_thread(caller_of_login, self.logins, self.tenants, conn)
        except AuthenticationError:
            return None

    async def read_ahead(self, request: Request, target: Target, guess: Caller) -> Response:
        """A sandbox's record read on behalf of the caller its key resolved to last time,
        while the key is looked up again: the answer goes out only once the key still
        resolves to that caller (a revoked key gets its 401, and the record is dropped).
        The catalog's round trip overlaps the node's instead of preceding it; only a read
        that changes nothing (not even a sandbox's idle time) is sent ahead."""
        check = asyncio.ensure_future(self.caller(request))
        answer = asyncio.ensure_future(self._read(request, target, guess))
        try:
            caller = await check
        except BaseException:
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer
            raise
        if caller != guess:  # never in practice: a key keeps its tenant
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer
            return await self._read(request, target, caller)
        return await answer

    async def _read(self, request: Request, target: Target, caller: Caller | None) -> Response:
        node = await self.sandbox_node(target, caller)
        return await self.forward(request, node.name, node.url, caller)

    def known_caller(self, request: Request, target: Target) -> Caller | None:
        """The caller to send a record read ahead with (:meth:`read_ahead`), if this is
        one and its key resolved before."""
        if request.method != "GET" or target.kind != "sandbox" or target.by_header:
            return None
        if not self.settings.auth or not RECORD.fullmatch(request.url.path.rstrip("/")):
            return None
        key = api_key(request)
        return None if key is None else self._callers.get(digest(key))

    async def nodes(self) -> list[NodeRecord]:
        """The nodes as the catalog has them now (placement needs what they hold now)."""
        return await self.refresh()

    async def _placement(self, target: Target, scope: str | None) -> tuple[str, str] | None:
        assert target.key is not None
        if target.kind == "vm":
            found = await asyncio.to_thread(self.catalog.find_labelled, VM_LABEL, target.key, scope)
            return None if found is None else (found.node, found.tenant)
        if (cached := self._placements.get(target.key)) is not None:
            return cached
        found = await asyncio.to_thread(self.catalog.locate, target.key)
        if found is None:
            return None
        self._placements[target.key] = (found.node, found.tenant)
        while len(self._placements) > _PLACEMENTS:
            self._placements.popitem(last=False)
        return found.node, found.tenant

    async def sandbox_node(self, target: Target, caller: Caller | None) -> NodeRecord:
        """The node of the sandbox the request names: 404 (as the node would say) when
        unknown or another tenant's, 503 naming the node when that is unreachable."""
        scope = caller.scope if caller is not None else None
        found = await self._placement(target, scope)
        if found is None or (scope is not None and found[1] != scope):
            if target.by_header:
                raise BadGateway(f"The sandbox {target.key} was not found")
            raise SandboxNotFound(f"no sandbox with id {target.key!r}")
        node = self._nodes.get(found[0])
        if node is None:  # a node that joined since the last look
            node = {n.name: n for n in await self.nodes()}.get(found[0])
        if node is None or not node.reachable:
            raise unreachable(found[0], f"sandbox {target.key}")
        return node

    async def any_node(self, exclude: Sequence[str] = ()) -> NodeRecord:
        up = [n for n in await self.nodes() if n.reachable and n.name not in exclude]
        if not up:
            raise Unavailable("no node of the cluster is reachable")
        return random.choice(up)

    # -- HTTP -------------------------------------------------------------------------

    def _headers(
        self, conn: HTTPConnection, caller: Caller | None, drop: frozenset[bytes]
    ) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in conn.headers.raw if k.lower() not in drop]
        headers.append((SECRET_HEADER.encode(), self.secret.encode()))
        headers.append((SCHEME_HEADER.encode(), conn.url.scheme.encode()))
        if caller is not None:
            headers.append((CALLER_HEADER.encode(), encode_caller(caller).encode()))
        return headers

    async def send(
        self,
        request: Request,
        node: str,
        url: str,
        caller: Caller | None,
        body: bytes | None = None,
    ) -> httpx.Response:
        """The request, sent on to ``url`` (a node's), its response not yet read."""
        target = _target(request, url)
        streamed = "content-length" in request.headers or "transfer-encoding" in request.headers
        content: Any = body if body is not None else request.stream() if streamed else None
        # A body of the gateway's own (a part of the client's) has its own length.
        drop = NOT_FORWARDED if body is None else NOT_FORWARDED | {b"content-length"}
        outgoing = self.http.build_request(
            request.method, target, headers=self._headers(request, caller, drop), content=content
        )
        try:
            return await self.unless_lost(node, self.http.send(outgoing, stream=True))
        except httpx.TransportError as exc:
            raise unreachable(node, "it", exc) from None

    async def forward(
        self,
        request: Request,
        node: str,
        url: str,
        caller: Caller | None,
        body: bytes | None = None,
    ) -> Response:
        if body is None and bodiless(request):
            sent = self._headers(request, caller, NOT_FORWARDED)
            target = _target(request, url)
            return await self.bodiless.forward(request, node, target, sent, self.unless_lost)
        upstream = await self.send(request, node, url, caller, body)
        kept = upstream.headers.multi_items()
        headers = {k: v for k, v in kept if k.lower() not in RESPONSE_NOT_FORWARDED}
        length = upstream.headers.get("content-length", "")
        if length.isdigit() and int(length) <= SMALL_ANSWER:
            # A record or an error: answered whole, as the bodiless path does.
            try:
                content = b"".join([chunk async for chunk in upstream.aiter_raw()])
            finally:
                await upstream.aclose()
            return Response(content, status_code=upstream.status_code, headers=headers)
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(upstream.aclose),
        )

    async def body(self, request: Request) -> tuple[bytes, dict[str, Any]]:
        """A create's or restore's JSON body (bounded), and its fields."""
        limit = self.settings.max_request_bytes
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
        if request.headers.get("content-type", "").startswith(FORM):  # the console's
            return raw, dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
        try:
            fields = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise InvalidArgument("the request body is not valid JSON") from None
        return raw, fields if isinstance(fields, dict) else {}

    def need(self, fields: dict[str, Any]) -> Usage:
        s = self.settings
        return Usage(
            1,
            _number(fields.get("vcpus"), s.default_vcpus),
            _number(fields.get("memory_mib"), s.default_memory_mib),
        )

    async def create(self, request: Request, caller: Caller | None) -> Response:
        """Place a new sandbox (quota first, cluster-wide), then forward the create; a node
        that turns out dead is skipped for the next best."""
        raw, fields = await self.body(request)
        need = self.need(fields)
        prefer = fields.get("prefer_node")
        tried: list[str] = []
        tenant = caller.tenant if caller is not None else None
        image = image_of(request.url.path, fields)
        holders = await self.image_holders(image, caller) if image is not None else []
        with self.quotas.admit(tenant, need) if tenant else contextlib.nullcontext():
            while True:
                nodes = [n for n in await self.nodes() if n.name not in tried]
                # A user image held by some nodes only: one of them, unless none has room.
                held = [n for n in nodes if n.name in holders and placement.fits(n, need)]
                node = placement.choose(
                    nodes if isinstance(prefer, str) else held or nodes,
                    need,
                    candidates=self.settings.placement_candidates,
                    prefer=prefer if isinstance(prefer, str) and prefer not in tried else None,
                )
                async with self.reserved(node, need):  # the catalog's own 503 is no node's
                    try:
                        if holders and node.name not in holders:
                            await self.copy_image(image or "", holders, node)
                        upstream = await self.send(request, node.name, node.url, caller, raw)
                        return await buffered(upstream)
                    except Unavailable:
                        log.warning("node %s did not answer a create: trying another", node.name)
                        tried.append(node.name)

    async def restore_need(
        self, request: Request, snapshot_id: str, fields: dict[str, Any]
    ) -> Usage:
        """What a restore will hold: the snapshot's size as its node reported it (the create
        defaults for a row that has no record yet); N times that for the console's fork of
        N (its count refused here as the node's console would refuse it)."""
        record = await asyncio.to_thread(self.catalog.snapshot_record, snapshot_id) or {}
        count = 1
        if request.url.path.endswith("/fork"):
            count = validated(ForkCreate, {"count": fields.get("count", "1")}).count
        vcpus = _number(record.get("vcpus"), self.settings.default_vcpus)
        memory = _number(record.get("memory_mib"), self.settings.default_memory_mib)
        return Usage(count, count * vcpus, count * memory)

    async def restore(self, request: Request, caller: Caller | None, snapshot_id: str) -> Response:
        """Restore on a node holding the snapshot; or copy it first to ``prefer_node``, or
        to the node placement picks when no holder has room. The console's restore and
        fork too, under the cluster-wide quota as the API's."""
        raw, fields = await self.body(request)
        holders = await self.snapshot_holders(snapshot_id, caller)
        nodes = {n.name: n for n in await self.nodes()}
        prefer = fields.get("prefer_node")
        need = await self.restore_need(request, snapshot_id, fields)
        if isinstance(prefer, str) and prefer in holders:
            target = nodes[prefer]
        elif isinstance(prefer, str) or not any(
            placement.fits(nodes[h], need) for h in holders if h in nodes
        ):
            target = placement.choose(
                list(nodes.values()),
                need,
                candidates=self.settings.placement_candidates,
                prefer=prefer if isinstance(prefer, str) else None,
            )
        else:
            fitting = [nodes[h] for h in holders if h in nodes and placement.fits(nodes[h], need)]
            target = max(fitting, key=placement.score)
        tenant = caller.tenant if caller is not None else None
        with self.quotas.admit(tenant, need) if tenant else contextlib.nullcontext():
            async with self.reserved(target, need):
                if target.name not in holders:
                    source = next(
                        (nodes[h] for h in holders if h in nodes and nodes[h].reachable), None
                    )
                    if source is None:
                        raise unreachable(holders[0], f"snapshot {snapshot_id}")
                    await self.copier.snapshot(snapshot_id, source, target)
                upstream = await self.send(request, target.name, target.url, caller, raw)
                return await buffered(upstream)

    async def fork(self, request: Request, caller: Caller | None, target: Target) -> Response:
        """A fork of N counts N sandboxes of its source's size against the tenant's
        cluster-wide quotas (its node only sees its own share of them)."""
        node = await self.sandbox_node(target, caller)
        raw, fields = await self.body(request)
        count = fields.get("count", 1)
        found = await asyncio.to_thread(self.catalog.locate, target.key or "")
        tenant = caller.tenant if caller is not None else None
        if found is None or not tenant or not isinstance(count, int) or count < 1:
            return await buffered(await self.send(request, node.name, node.url, caller, raw))
        record = found.record
        need = Usage(count, count * record["vcpus"], count * record["memory_mib"])
        with self.quotas.admit(tenant, need):
            return await buffered(await self.send(request, node.name, node.url, caller, raw))

    async def resume(self, request: Request, caller: Caller | None, target: Target) -> Response:
        """A hibernated sandbox whose node has no room for it wakes on another node: that
        node copies its hibernation snapshot and takes it over (the same id), then the
        resume goes there. Its own node must answer: only it has the files."""
        home = await self.sandbox_node(target, caller)
        found = await asyncio.to_thread(self.catalog.locate, target.key or "")
        record = found.record if found is not None else {}
        need = Usage(1, record.get("vcpus", 1), record.get("memory_mib", 0))
        nodes = await self.nodes()
        fresh = next((n for n in nodes if n.name == home.name), home)
        if record.get("state") != "hibernated" or placement.fits(fresh, need):
            return await self.forward(request, home.name, home.url, caller)
        tenant = caller.tenant if caller is not None else None
        with self.quotas.admit(tenant, need) if tenant else contextlib.nullcontext():
            others = [n for n in nodes if n.name != home.name]
            dest = placement.choose(others, need, candidates=self.settings.placement_candidates)
            assert target.key is not None
            async with self.reserved(dest, need):
                await self.copier.move(target.key, home, dest)
                self._placements.pop(target.key, None)
                return await buffered(await self.send(request, dest.name, dest.url, caller))

    @asynccontextmanager
    async def reserved(self, node: NodeRecord, need: Usage) -> AsyncIterator[None]:
        """``need`` counted on ``node`` by every gateway's placement until the node reports
        the new sandbox (:meth:`Catalog.reserve`), or, failing that, it has answered."""
        reservation = await asyncio.to_thread(self.catalog.reserve, node.name, need)
        try:
            yield
        finally:
            try:
                await asyncio.to_thread(self.catalog.release, reservation)
            except SietchError as exc:  # it expires by itself
                log.warning("could not release a placement on %s: %s", node.name, exc)

    async def snapshot_holders(self, snapshot_id: str, caller: Caller | None) -> list[str]:
        held = await asyncio.to_thread(self.catalog.snapshot_copies, snapshot_id)
        scope = caller.scope if caller is not None else None
        # A template's node decides who may use it (a built-in's: everyone).
        if not held or (scope is not None and held[0][1] != scope and not held[0][2]):
            raise SnapshotNotFound(f"no snapshot with id {snapshot_id!r}")
        return [node for node, _tenant, _template in held]

    async def image_holders(self, image: str, caller: Caller | None) -> list[str]:
        """The nodes holding user image ``image`` that the caller may use; none for a
        built-in (every node has those) or an image it may not see (its node says so)."""
        copies = await asyncio.to_thread(self.catalog.image_copies, image)
        scope = caller.scope if caller is not None else None
        if any(tenant is None for _, tenant in copies):
            return []
        return [node for node, tenant in copies if scope is None or tenant == scope]

    async def copy_image(self, image: str, holders: list[str], target: NodeRecord) -> None:
        up = [self._nodes[h] for h in holders if h in self._nodes and self._nodes[h].reachable]
        source = up[0] if up else None
        if source is None:
            raise unreachable(holders[0], f"image {image}")
        await self.copier.image(image, source, target)

    async def fan_out(
        self, request: Request, caller: Caller | None
    ) -> tuple[list[httpx.Response], list[str]]:
        """The request sent to every reachable node at once; their answers, and the nodes
        that are unreachable (in the catalog, or found so now)."""
        nodes = await self.nodes()
        up = [n for n in nodes if n.reachable]
        raw = await request.body()

        async def ask(node: NodeRecord) -> httpx.Response | None:
            try:
                answer = await self.send(request, node.name, node.url, caller, raw)
            except Unavailable:
                return None
            await answer.aread()
            return answer

        answers = await asyncio.gather(*(ask(n) for n in up))
        lost = [n.name for n in nodes if not n.reachable]
        lost += [n.name for n, a in zip(up, answers, strict=True) if a is None]
        return [a for a in answers if a is not None], lost

    async def merged(self, request: Request, caller: Caller | None) -> Response:
        """Every node's answer in one: lists concatenated (and counts summed); the first
        error as it is. Sietch's own listing adds the sandboxes of unreachable nodes, as
        ``lost``."""
        answers, lost = await self.fan_out(request, caller)
        for answer in answers:
            if answer.status_code >= 400:
                return copy_response(answer)
        merged = merge([a.json() for a in answers])
        if (
            request.url.path.rstrip("/") == "/api/v1/sandboxes"
            and lost
            and isinstance(merged, dict)
        ):
            scope = caller.scope if caller is not None else None
            wanted = parse_labels(request.query_params.getlist("label"))
            records = await asyncio.to_thread(self.catalog.sandboxes_on, lost, scope, wanted)
            merged["data"] += [{**record, "state": "lost"} for record in records]
            merged["count"] = len(merged["data"])
        return JSONResponse(merged)

    async def http_endpoint(self, request: Request) -> Response:
        try:
            return await self.dispatch(request)
        except SietchError as exc:
            if exc.status >= 500:
                log.warning("%s %s failed: %s", request.method, request.url.path, exc)
            if request.url.path.startswith(CONSOLE):
                return console_error(request, exc)
            return error_response(exc)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(SietchError("internal error in the gateway (see its log)"))

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        if path == "/api/v1/health":
            return JSONResponse({"status": "ok", "version": __version__})
        target = classify(request.method, path, lower_headers(request), self.settings.proxy_domain)
        if (guess := self.known_caller(request, target)) is not None:
            return await self.read_ahead(request, target, guess)
        caller = await self.caller(request)
        if caller is None and path.startswith(CONSOLE) and target.kind in _PLACED:
            caller = await self.login_caller(request)
            if caller is None:  # not signed in: a node answers with its sign-in page
                target = Target("any")
        return await self.route(request, target, caller)

    async def route(self, request: Request, target: Target, caller: Caller | None) -> Response:
        match target.kind:
            case "delete_many":
                return await self.delete_many(request, caller)
            case "fork":
                return await self.fork(request, caller, target)
            case "resume":
                return await self.resume(request, caller, target)
            case "sandbox" | "vm":
                node = await self.sandbox_node(target, caller)
                return await self.forward(request, node.name, node.url, caller)
            case "restore":
                assert target.key is not None
                return await self.restore(request, caller, target.key)
            case "snapshot":
                assert target.key is not None
                return await self.snapshot_request(request, caller, target.key)
            case "image":
                assert target.key is not None
                return await self.image_request(request, caller, target.key)
            case "create":
                return await self.create(request, caller)
            case "list" | "every":
                return await self.merged(request, caller)
            case _:
                node = await self.any_node()
                return await self.forward(request, node.name, node.url, caller)

    async def snapshot_request(
        self, request: Request, caller: Caller | None, snapshot_id: str
    ) -> Response:
        """To a reachable node holding the snapshot; a delete (the console's too) to every
        one."""
        holders = await self.snapshot_holders(snapshot_id, caller)
        console_delete = request.url.path == f"{CONSOLE}snapshots/{snapshot_id}/delete"
        if request.method == "DELETE" or console_delete:  # every copy goes
            return await self.merged_delete(request, caller, holders)
        return await self.to_holder(request, caller, holders, f"snapshot {snapshot_id}")

    async def image_request(self, request: Request, caller: Caller | None, name: str) -> Response:
        """A user image's record from a node holding it; a delete on every one. A built-in
        or unknown one: any node answers."""
        holders = await self.image_holders(name, caller)
        if not holders:
            node = await self.any_node()
            return await self.forward(request, node.name, node.url, caller)
        if request.method == "DELETE":
            return await self.merged_delete(request, caller, holders)
        return await self.to_holder(request, caller, holders, f"image {name}")

    async def to_holder(
        self, request: Request, caller: Caller | None, holders: list[str], what: str
    ) -> Response:
        """To the first reachable node of ``holders``; 503 naming the first when none is."""
        nodes = {n.name: n for n in await self.nodes() if n.reachable}
        holder = next((nodes[h] for h in holders if h in nodes), None)
        if holder is None:
            raise unreachable(holders[0], what)
        return await self.forward(request, holder.name, holder.url, caller)

    async def delete_many(self, request: Request, caller: Caller | None) -> Response:
        """The console's "Delete selected": each node gets the form with its own sandboxes'
        ids (one it does not know, or another tenant's, goes to any node, which refuses
        it as on one machine); the first refusal is the answer, else the list's notice."""
        raw, _ = await self.body(request)
        ids = [v for k, v in parse_qsl(raw.decode("latin-1")) if k == "ids"]
        scope = caller.scope if caller is not None else None
        groups: dict[str, list[str]] = {}
        for sandbox_id in ids:
            found = await self._placement(Target("sandbox", sandbox_id), scope)
            if found is None or (scope is not None and found[1] != scope):
                found = ((await self.any_node()).name, "")
            groups.setdefault(found[0], []).append(sandbox_id)
        if not groups:  # nothing selected: the node says so
            groups[(await self.any_node()).name] = []
        nodes = {n.name: n for n in await self.nodes()}
        for name, chosen in groups.items():
            node = nodes.get(name)
            if node is None or not node.reachable:
                raise unreachable(name, f"sandbox {chosen[0]}")
            body = urlencode([("ids", i) for i in chosen]).encode()
            answer = await buffered(await self.send(request, name, node.url, caller, body))
            if answer.status_code != 303 or "error=" in answer.headers.get("location", ""):
                return answer
        return RedirectResponse(f"{CONSOLE}?notice=deleted+{len(ids)}", status_code=303)

    async def merged_delete(
        self, request: Request, caller: Caller | None, holders: list[str]
    ) -> Response:
        nodes = {n.name: n for n in await self.nodes()}
        first: Response | None = None
        for name in holders:
            node = nodes.get(name)
            if node is None or not node.reachable:
                continue
            answer = await buffered(await self.send(request, name, node.url, caller, b""))
            first = first or answer
        if first is None:
            raise unreachable(holders[0], "it")
        return first

    # -- WebSocket --------------------------------------------------------------------

    async def ws_endpoint(self, websocket: WebSocket) -> None:
        try:
            caller = await self.caller(websocket)
            target = classify(
                "GET", websocket.url.path, lower_headers(websocket), self.settings.proxy_domain
            )
            if target.kind in ("sandbox", "vm"):
                node = await self.sandbox_node(target, caller)
                name, url = node.name, node.url
            else:
                node = await self.any_node()
                name, url = node.name, node.url
            upstream = await self.ws_connect(websocket, name, url, caller)
        except SietchError as exc:
            await refuse(websocket, exc)
            return
        except websockets.exceptions.InvalidStatus as exc:
            # The node refused the handshake (401, 404, 409...): pass its answer on.
            await deny(websocket, exc.response.status_code, bytes(exc.response.body or b""))
            return
        try:
            await websocket.accept(subprotocol=upstream.subprotocol)
            await self.unless_lost(name, relay(websocket, upstream))
        except Unavailable as exc:
            await websocket.close(4000 + exc.status, exc.message[:120])
        finally:
            await upstream.close()

    async def ws_connect(
        self, websocket: WebSocket, node: str, url: str, caller: Caller | None
    ) -> ClientConnection:
        path = websocket.scope.get("raw_path") or websocket.url.path.encode()
        query = websocket.scope.get("query_string", b"")
        ws_url = url.replace("http", "ws", 1) + path.decode("latin-1")
        if query:
            ws_url += "?" + query.decode("latin-1")
        headers = self._headers(websocket, caller, WS_NOT_FORWARDED | same_origin(websocket))
        try:
            return await websockets.connect(
                ws_url,
                additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                subprotocols=websocket.scope.get("subprotocols") or None,
                max_size=None,
                open_timeout=CONNECT_TIMEOUT_S * 3,
                ping_interval=None,
                compression=None,
                proxy=None,
            )
        except websockets.exceptions.InvalidStatus:
            raise
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise unreachable(node, "it", exc) from None


def _number(value: object, default: int) -> int:
    """A create's size field: a JSON number, or a form's digits (the console's)."""
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else default


def _target(request: Request, url: str) -> str:
    """The node's URL for the request: its raw path and query, as the client sent them."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    return url + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def create_gateway_app(settings: Settings, tenants: ClusterTenants) -> Starlette:
    """The gateway's ASGI app: every path, every method, HTTP and WebSocket."""
    gateway = Gateway(settings, tenants)
    # httpx logs every request it sends at INFO: a line per forwarded request.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    mcp = GatewayMcp(own_url(settings), settings.host, gateway.caller)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gateway.running(), mcp.run():
            yield

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(
        routes=[
            mcp.route(),
            Route("/{path:path}", gateway.http_endpoint, methods=methods),
            WebSocketRoute("/{path:path}", gateway.ws_endpoint),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
