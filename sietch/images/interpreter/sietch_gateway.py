#!/usr/bin/python3
"""Sietch's kernel gateway: Jupyter kernels behind the HTTP API ``e2b-code-interpreter``
reads, in the code-interpreter image (see ``sietch/images/interpreter.py``).

Runs on the guest's Debian python3 with only Debian's packages: ``jupyter_client`` drives
the kernels, ``tornado`` (which it needs anyway) serves HTTP.

- ``POST /execute`` ``{"code", "context_id"?, "language"?, "env_vars"?}`` streams one JSON
  object a line: ``stdout``/``stderr`` (``text``, ``timestamp`` in ns), ``result`` (the
  SDK's fields: ``text``, ``png``, ``chart``, ...; ``is_main_result`` for the cell's
  value), ``error`` (``name``, ``value``, ``traceback``), ``number_of_executions``
  (``execution_count``), then ``end_of_execution``. A client that goes away interrupts
  the cell. With ``"warm": true`` (Sietch's warm pool, on a sandbox just restored from the
  template): the cell runs as any does, so the first user cell finds the kernel's code
  paths translated, then the kernel goes back to a fresh namespace and execution count;
  409 once a user's cell has run in the context.
- ``POST /env`` ``{"env": {...}}``: variables the sandbox was created with, set in every
  kernel's ``os.environ`` and in the kernels started later (Sietch sends them).
- ``POST /contexts`` ``{"language"?, "cwd"?}``, ``GET /contexts``,
  ``POST /contexts/{id}/restart`` (a fresh kernel: state gone), ``DELETE /contexts/{id}``.
- ``GET /health``: 200 once the default kernel is idle (the image's ready check).

One cell runs at a time per context; the next waits for the kernel to be idle again.

After a restore from a snapshot the kernel client's sockets, made before, may no longer hear
the kernel (a new client does): a context whose clock offset (wall minus monotonic) moved
since it connected, as it does when the agent sets a restored guest's clock, connects anew
before its next cell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

import jupyter_client.session
import tornado.iostream
import tornado.web
from jupyter_client.manager import AsyncKernelManager

log = logging.getLogger("sietch-gateway")

START_TIMEOUT = 600.0
"""Seconds a kernel gets to answer its first request: minutes under emulation, loaded."""
IMPORTS = "__import__('numpy'); __import__('pandas'); __import__('matplotlib.pyplot')"
"""Run silently in the default kernel before it is reported ready: the template snapshot
then holds these imports, and no name is bound and no execution counted."""
FORMATS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "application/x-sietch-data+json": "data",
    "application/x-sietch-chart+json": "chart",
}
"""Jupyter's MIME types to the SDK's ``Result`` fields (others go to ``extra``);
the last two are ``sietch_kernel``'s."""
LANGUAGES = ("python", "python3")
ALIVE_CHECK_S = 5.0
"""How often a cell with no output looks whether its kernel still lives."""
RESTORE_JUMP_S = 2.0
"""A step of the wall clock against the monotonic one this big means a restore."""
SAVE_FRESH = "__import__('sietch_kernel').save_fresh()"
BACK_TO_FRESH = "__import__('sietch_kernel').back_to_fresh()"

Emit = Callable[[dict[str, Any]], None]


def _as_is(obj: Any) -> Any:
    return obj


# Dates stay strings: the gateway reads none, and parsing two a message with dateutil was a
# third of the gateway's work per cell under emulation.
jupyter_client.session.extract_dates = _as_is


class GatewayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def result(data: dict[str, Any], *, main: bool) -> dict[str, Any]:
    """A ``display_data``/``execute_result`` bundle as the SDK's ``Result``."""
    out: dict[str, Any] = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        field = FORMATS.get(mime)
        if field is None:
            extra[mime] = value
        else:
            out[field] = value
    text = out.get("text")
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == "'":
        out["text"] = text[1:-1]  # a str value reads as the string itself, as on E2B
    if extra:
        out["extra"] = extra
    return out


def translate(msg: dict[str, Any]) -> dict[str, Any] | None:
    """One iopub message as the line the SDK reads, or None for those it has no use for."""
    kind, content = msg["msg_type"], msg["content"]
    if kind == "stream":
        return {"type": content["name"], "text": content["text"], "timestamp": time.time_ns()}
    if kind in ("display_data", "execute_result"):
        return result(content["data"], main=kind == "execute_result")
    if kind == "error":
        return {
            "type": "error",
            "name": content["ename"],
            "value": content["evalue"],
            "traceback": "\n".join(content["traceback"]),
        }
    if kind == "execute_input":
        return {"type": "number_of_executions", "execution_count": content["execution_count"]}
    return None


class Context:
    """One kernel, its client, and the lock that runs its cells one at a time."""

    def __init__(self, language: str, cwd: str) -> None:
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = asyncio.Lock()
        self.manager = AsyncKernelManager(kernel_name="python3")
        self.client: Any = None
        self.offset = 0.0
        """The clock offset when the client connected (see the module's docstring)."""
        self.fresh = True
        """No cell of a user's has run in this kernel: it may be warmed up."""

    def public(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def start(self) -> None:
        await self.manager.start_kernel(cwd=self.cwd, env=dict(os.environ))
        await self._connect()

    async def _connect(self) -> None:
        self.client = self.manager.client()
        self.client.start_channels()
        await self.client.wait_for_ready(timeout=START_TIMEOUT)
        self.offset = _clock_offset()

    async def _new_kernel(self) -> None:
        """A new kernel process (with the gateway's environment as it is now)."""
        self.client.stop_channels()
        await self.manager.restart_kernel(now=True, env=dict(os.environ))
        await self._connect()
        self.fresh = True

    async def restart(self) -> None:
        """A new kernel process: every name, import and the execution count are gone."""
        async with self.lock:
            await self._new_kernel()

    async def _revive(self, emit: Emit) -> None:
        """The kernel died mid-cell (killed for memory, say): say so, start a new one."""
        log.warning("context %s: the kernel died; restarting it", self.id)
        emit(
            _failure(
                "KernelDied",
                "the kernel process died (killed, or out of memory) and was restarted: "
                "its variables and imports are gone",
            )
        )
        await self._new_kernel()

    async def stop(self) -> None:
        async with self.lock:
            self.client.stop_channels()
            await self.manager.shutdown_kernel(now=True)

    async def interrupt(self) -> None:
        try:
            await self.manager.interrupt_kernel()
        except Exception:
            log.exception("interrupting context %s", self.id)

    async def _reconnect_if_restored(self) -> None:
        if abs(_clock_offset() - self.offset) > RESTORE_JUMP_S:
            log.info("context %s: the clock stepped (a restore); reconnecting", self.id)
            self.client.stop_channels()
            await self._connect()

    async def set_env(self, env: dict[str, str]) -> None:
        async with self.lock:
            await self._reconnect_if_restored()
            await self._cell(f"__import__('os').environ.update({env!r})", _drop, True)

    async def run(
        self,
        code: str,
        emit: Emit,
        *,
        env: dict[str, str] | None = None,
        silent: bool = False,
        warm: bool = False,
    ) -> None:
        """Run one cell, emitting its output lines; returns once the kernel is idle. A
        ``warm`` cell leaves the kernel as fresh as it found it (see the module)."""
        async with self.lock:
            await self._reconnect_if_restored()
            if warm:
                if not self.fresh:
                    emit(_failure("GatewayError", "a cell already ran here: not warming it"))
                    return
                await self._cell(SAVE_FRESH, _drop, True)
                try:
                    await self._cell(code, emit, False)
                finally:
                    await self._cell(BACK_TO_FRESH, _drop, True)
                return
            if not silent:
                self.fresh = False
            if env:
                await self._cell(f"__import__('sietch_kernel').push_env({env!r})", _drop, True)
            try:
                await self._cell(code, emit, silent)
            finally:
                if env:
                    await self._cell("__import__('sietch_kernel').pop_env()", _drop, True)

    async def _cell(self, code: str, emit: Emit, silent: bool) -> None:
        msg_id = self.client.execute(
            code, silent=silent, store_history=not silent, allow_stdin=False
        )
        while True:
            try:
                msg = await self.client.get_iopub_msg(timeout=ALIVE_CHECK_S)
            except queue.Empty:
                if await self.manager.is_alive():
                    continue
                await self._revive(emit)
                return
            if msg["parent_header"].get("msg_id") != msg_id:
                continue  # left over from a cell whose client went away
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            line = translate(msg)
            if line is not None:
                emit(line)
        # The shell channel's reply, so that replies do not pile up; iopub said it all.
        while True:
            try:
                reply = await self.client.get_shell_msg(timeout=30)
            except queue.Empty:
                return
            if reply["parent_header"].get("msg_id") == msg_id:
                return


def _clock_offset() -> float:
    return time.time() - time.monotonic()


def _drop(line: dict[str, Any]) -> None:
    if line["type"] == "error":
        log.warning("a gateway cell failed: %s: %s", line["name"], line["value"])


class Gateway:
    """The contexts; the default one is the Python kernel started first."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        self.contexts: dict[str, Context] = {}
        self.default: Context | None = None

    async def start(self) -> None:
        context = await self.create("python", self.cwd)
        await context.run(IMPORTS, _drop, silent=True)
        self.default = context
        log.info("default context %s ready", context.id)

    async def create(self, language: str | None, cwd: str | None) -> Context:
        context = Context(_language(language), cwd or self.cwd)
        await context.start()
        self.contexts[context.id] = context
        return context

    def find(self, context_id: str | None, language: str | None) -> Context:
        if context_id:
            if language:
                raise GatewayError(400, "give context_id or language, not both")
            try:
                return self.contexts[context_id]
            except KeyError:
                raise GatewayError(404, f"context {context_id} not found") from None
        _language(language)
        if self.default is None:
            raise GatewayError(503, "the default context is still starting")
        return self.default

    def context(self, context_id: str) -> Context:
        return self.find(context_id, None)

    async def set_env(self, env: dict[str, str]) -> None:
        """The sandbox's variables, for every kernel: those running, and (through the
        gateway's own environment, which kernels start with) those started later."""
        os.environ.update(env)
        for context in list(self.contexts.values()):
            await context.set_env(env)

    async def remove(self, context_id: str) -> None:
        context = self.context(context_id)
        del self.contexts[context_id]
        if context is self.default:
            self.default = None
        await context.stop()


def _language(language: str | None) -> str:
    name = (language or "python").strip().lower()
    if name not in LANGUAGES:
        raise GatewayError(400, f"language {language!r} is not supported here: only python")
    return "python"


class Handler(tornado.web.RequestHandler):
    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise GatewayError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise GatewayError(400, "the body must be a JSON object")
        return data

    async def _guard(self, work: Callable[[], Any]) -> None:
        try:
            await work()
        except GatewayError as exc:
            self.set_status(exc.status)
            self.set_header("Content-Type", "text/plain")
            self.finish(str(exc))

    def reply(self, data: object) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class Health(Handler):
    def get(self) -> None:
        if self.gateway.default is None:
            self.set_status(503)
            self.finish("starting")
        else:
            self.finish("OK")


class Execute(Handler):
    def initialize(self, gateway: Gateway) -> None:
        super().initialize(gateway)
        self.gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self.gone.set()

    async def post(self) -> None:
        await self._guard(self._run_cell)

    async def _run_cell(self) -> None:
        body = self.body()
        code = body.get("code")
        if not isinstance(code, str):
            raise GatewayError(400, "code must be a string")
        env = _env(body.get("env_vars") or None, "env_vars")
        warm = body.get("warm") is True
        context = self.gateway.find(body.get("context_id"), body.get("language"))
        if warm and not context.fresh:
            raise GatewayError(409, "a cell already ran in this context: not warming it")
        lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        task = asyncio.create_task(context.run(code, lines.put_nowait, env=env, warm=warm))
        task.add_done_callback(lambda _: lines.put_nowait(None))
        self.set_header("Content-Type", "application/x-ndjson")
        gone = asyncio.create_task(self.gone.wait())
        try:
            while True:
                got = asyncio.create_task(lines.get())
                await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    got.cancel()
                    break
                line = got.result()
                if line is None:
                    break
                self.write(json.dumps(line) + "\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            gone.cancel()
        if not task.done():  # the client left mid-cell: stop it; the task drains the rest
            log.info("client left; interrupting context %s", context.id)
            await context.interrupt()
            return
        if task.exception() is not None:
            log.error("context %s failed: %r", context.id, task.exception())
            self.write(json.dumps(_failure("GatewayError", repr(task.exception()))) + "\n")
        self.finish(json.dumps({"type": "end_of_execution"}) + "\n")


def _env(env: Any, what: str) -> dict[str, str] | None:
    if env is not None and not (
        isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
    ):
        raise GatewayError(400, f"{what} must map names to strings")
    return env


class Env(Handler):
    async def post(self) -> None:
        async def set_env() -> None:
            env = _env(self.body().get("env"), "env")
            await self.gateway.set_env(env or {})
            self.set_status(204)
            self.finish()

        await self._guard(set_env)


def _failure(name: str, value: str) -> dict[str, Any]:
    return {"type": "error", "name": name, "value": value, "traceback": ""}


class Contexts(Handler):
    async def get(self) -> None:
        self.reply([c.public() for c in self.gateway.contexts.values()])

    async def post(self) -> None:
        async def create() -> None:
            body = self.body()
            context = await self.gateway.create(body.get("language"), body.get("cwd"))
            self.reply(context.public())

        await self._guard(create)


class OneContext(Handler):
    async def delete(self, context_id: str) -> None:
        async def remove() -> None:
            await self.gateway.remove(context_id)
            self.set_status(204)
            self.finish()

        await self._guard(remove)


class Restart(Handler):
    async def post(self, context_id: str) -> None:
        async def restart() -> None:
            await self.gateway.context(context_id).restart()
            self.set_status(204)
            self.finish()

        await self._guard(restart)


async def serve(args: argparse.Namespace) -> None:
    gateway = Gateway(args.cwd)
    routes: list[Any] = [
        (r"/health", Health, {"gateway": gateway}),
        (r"/execute", Execute, {"gateway": gateway}),
        (r"/env", Env, {"gateway": gateway}),
        (r"/contexts", Contexts, {"gateway": gateway}),
        (r"/contexts/([^/]+)", OneContext, {"gateway": gateway}),
        (r"/contexts/([^/]+)/restart", Restart, {"gateway": gateway}),
    ]
    tornado.web.Application(routes).listen(args.port, address="0.0.0.0")
    log.info("listening on port %d", args.port)
    await gateway.start()
    await asyncio.Event().wait()  # serve for as long as the VM runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=49999)
    parser.add_argument("--cwd", default=os.path.expanduser("~"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
