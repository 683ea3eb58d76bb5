"""The e2b SDK (async), unchanged: runs, files, and pause (Sietch's hibernation) then
connect with a file and a counting process kept; plus what bad input gets."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import AsyncSandbox, FilesystemEvent, FilesystemEventType, SandboxState
from e2b.exceptions import (
    AuthenticationException,
    FileNotFoundException,
    SandboxNotRunningException,
)

from tests.server.harness import ApiServer

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"


async def _count(sbx: AsyncSandbox) -> int:
    return int((await sbx.files.read("/tmp/count")).strip() or 0)


async def _rises(sbx: AsyncSandbox, past: int) -> int:
    """The counter's value once it is above ``past`` (a deadline retry, not a sleep)."""
    for _ in range(600):
        try:
            value = await _count(sbx)
        except FileNotFoundException:  # not written yet
            value = 0
        if value > past:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"the counter stayed at {past}")


async def test_async_run_files_pause_connect(e2b_env: ApiServer) -> None:
    """Async run/stream/files and a streamed directory watch; pause hibernates it and
    connect resumes it with its file and its background process still counting; once
    killed it is not running, as the SDK tells."""
    sbx = await AsyncSandbox.create(metadata={"suite": "e2b-async"})
    try:
        chunks: list[str] = []
        result = await sbx.commands.run("printf 'a\\nb\\n'", on_stdout=chunks.append)
        assert result.stdout == "a\nb\n" and "".join(chunks) == "a\nb\n"
        events: list[FilesystemEvent] = []
        watch = await sbx.files.watch_dir("/tmp", on_event=events.append)
        await sbx.files.write("/tmp/kept.txt", "still here")
        for _ in range(300):  # the watch's stream reports it within a look or two
            if any(e.name == "kept.txt" and e.type is FilesystemEventType.CREATE for e in events):
                break
            await asyncio.sleep(0.1)
        await watch.stop()
        assert any(e.name == "kept.txt" and e.type is FilesystemEventType.CREATE for e in events)
        counter = await sbx.commands.run(COUNTER, background=True)
        before = await _rises(sbx, 0)

        assert await sbx.pause() is True
        info = await AsyncSandbox.get_info(sbx.sandbox_id)
        assert info.state is SandboxState.PAUSED
        assert await sbx.pause() is False  # already paused

        again = await AsyncSandbox.connect(sbx.sandbox_id)
        assert (await again.get_info()).state is SandboxState.RUNNING
        assert await again.files.read("/tmp/kept.txt") == "still here"
        await _rises(again, before)
        assert counter.pid in {p.pid for p in await again.commands.list()}
    finally:
        await sbx.kill()
    assert await AsyncSandbox.kill(sbx.sandbox_id) is False
    assert await sbx.is_running() is False
    with pytest.raises(SandboxNotRunningException):
        await sbx.commands.run("true")


async def test_bad_key_and_template(e2b_env: ApiServer) -> None:
    """A wrong API key is the SDK's AuthenticationException; an unknown template a 400
    naming it."""
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.create(api_key="sk-sietch-wrong")
    async with httpx.AsyncClient(base_url=e2b_env.url, timeout=60) as http:
        missing = await http.get("/v2/sandboxes")
        assert missing.status_code == 401 and missing.json()["code"] == 401
        unknown = await http.post(
            "/v2/sandboxes",
            json={"templateID": "no-such-template"},
            headers={"X-API-KEY": e2b_env.api_key},
        )
        assert unknown.status_code == 400 and "no-such-template" in unknown.json()["message"]


async def test_envd_token_and_envelopes(e2b_env: ApiServer) -> None:
    """envd refuses a wrong access token (401) and malformed Connect envelopes (400), an
    unknown sandbox is E2B's 502 "was not found", and the next request is served as before."""
    sbx = await AsyncSandbox.create()
    try:
        sandbox = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
        token = {"X-Access-Token": sbx._envd_access_token or ""}
        stream = {"Content-Type": "application/connect+json"}
        async with httpx.AsyncClient(base_url=e2b_env.url, timeout=60) as http:
            wrong = await http.post(
                "/process.Process/List",
                json={},
                headers={**sandbox, "X-Access-Token": "wrong"},
            )
            assert wrong.status_code == 401
            for body in (b"\x00\x00\x00\x00\x09{}", b"\x00\x00", b"\x00\x00\x00\x00\x02[]"):
                bad = await http.post(
                    "/process.Process/Start", content=body, headers={**sandbox, **token, **stream}
                )
                assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument"
            gone = await http.post(
                "/process.Process/Start",
                content=b"\x00\x00\x00\x00\x02{}",
                headers={**sandbox, **token, **stream, "E2b-Sandbox-Id": "sb-000000000000"},
            )
            assert gone.status_code == 502 and "was not found" in gone.json()["message"]
            listed = await http.post("/process.Process/List", json={}, headers={**sandbox, **token})
            assert listed.status_code == 200 and "processes" in listed.json()
    finally:
        await sbx.kill()
