"""Dockerfile builds in real sandboxes: the image works, the cache holds, failures leave nothing."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.builder import BUILD_LABEL, Builder, BuildRequest
from sietch.core.manager import Manager
from sietch.errors import ImageBuildError
from sietch.network.policy import NetworkPolicy
from sietch.vmm import process
from tests.builder.helpers import (
    TLS_SERVER,
    apt_repo,
    make_ca,
    web_context,
    web_dockerfile,
    wheel,
)
from tests.network.outside import Outside


class Recorder:
    """Collects a build's events and counts the sandboxes the manager starts meanwhile."""

    def __init__(self, manager: Manager, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[dict[str, Any]] = []
        self.boots = 0
        real = manager.boot_disk

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.boots += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(manager, "boot_disk", counting)

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def steps(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "step"]


def leftover_build_sandboxes(manager: Manager, name: str) -> list[str]:
    return [i.id for i in manager.store.all() if i.labels.get(BUILD_LABEL) == name]


@pytest.fixture(scope="module")
def served(outside: Outside) -> str:
    """The test wheel's URL on the stand-in internet."""
    (outside.root / "wheels").mkdir(exist_ok=True)
    made = wheel(outside.root / "wheels")
    return f"http://{outside.web}/wheels/{made.name}"


def request(name: str, ctx: Path, dockerfile: str) -> BuildRequest:
    return BuildRequest(
        name=name, dockerfile=dockerfile, context=ctx, network=NetworkPolicy(internet=True)
    )


async def test_web_image_answers_first_request_as_its_user_dir_and_env(
    manager: Manager, builder: Builder, served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FROM default + COPY + RUN pip install (local wheel) + ENV/USER/WORKDIR/EXPOSE/CMD: a
    sandbox of the image answers on its exposed port at once, as that user, dir and env;
    an unchanged rebuild boots no build sandbox; a changed COPY re-runs from there only."""
    ctx = web_context(tmp_path / "ctx")
    dockerfile = web_dockerfile(served)
    first = Recorder(manager, monkeypatch)
    image = await builder.build(request("webapp", ctx, dockerfile), first)
    assert first.boots == 1
    assert image.ready and image.config.expose == [8000]
    assert image.config.user == "user" and image.config.workdir == "/srv/app"

    info = await manager.create(image="webapp")
    try:
        [port] = [p for p in info.ports if p.guest_port == 8000]
        async with httpx.AsyncClient() as http:
            answer = (await http.get(f"http://127.0.0.1:{port.host_port}/", timeout=120)).json()
        assert answer == {
            "user": "user", "uid": 1000, "cwd": "/srv/app", "mode": "test",
            "greeting": "hi from a wheel", "version": "1",
        }  # fmt: skip
        sb = manager.sandbox(info.id)
        r = await sb.exec("id -un; pwd; echo $APP_MODE; ls -l version.txt; ls /srv/app")
        out = r.stdout.decode().split("\n")
        assert out[:3] == ["user", "/srv/app", "test"], r
        assert " user user " in out[3], out[3]
        assert "notes.tmp" not in r.stdout.decode()
    finally:
        await manager.delete(info.id)

    again = Recorder(manager, monkeypatch)
    same = await builder.build(request("webapp", ctx, dockerfile), again)
    assert again.boots == 0
    assert same.key == image.key
    assert all(s["cached"] for s in again.steps())

    (ctx / "version.txt").write_text("2\n")
    changed = Recorder(manager, monkeypatch)
    await builder.build(request("webapp", ctx, dockerfile), changed)
    cached = [(s["instruction"].split()[0], s["cached"]) for s in changed.steps()]
    copy_at = next(i for i, s in enumerate(changed.steps()) if "version.txt" in s["instruction"])
    assert all(c for _, c in cached[:copy_at]), cached
    assert not cached[copy_at][1], cached
    assert changed.boots == 1
    info = await manager.create(image="webapp")
    try:
        r = await manager.sandbox(info.id).exec("cat version.txt")
        assert r.stdout == b"2\n"
    finally:
        await manager.delete(info.id)


async def test_failing_run_reports_output_and_code_and_leaves_nothing(
    manager: Manager, builder: Builder, tmp_path: Path
) -> None:
    """A RUN that fails: its output and exit code in the error; no image, no build sandbox."""
    dockerfile = "FROM minimal\nRUN echo about to fail; echo on-stderr >&2; exit 3\n"
    events: list[dict[str, Any]] = []
    with pytest.raises(ImageBuildError) as caught:
        await builder.build(request("broken", tmp_path, dockerfile), events.append)
    error = caught.value
    assert error.details["exit_code"] == 3
    assert "about to fail" in error.details["output"] and "on-stderr" in error.details["output"]
    assert "line 2" in error.message
    assert manager.store.get_image("broken") is None
    assert leftover_build_sandboxes(manager, "broken") == []
    [started] = [e["sandbox"] for e in events if e.get("sandbox")]
    assert manager.store.get(started) is None
    assert not [p for p in process.find_by_marker(str(manager.sandboxes_dir / started))]


async def test_build_that_fills_its_disk_fails_clearly(
    manager: Manager, builder: Builder, tmp_path: Path
) -> None:
    """A RUN that fills the image's disk fails as its step, saying so; nothing is left."""
    dockerfile = "FROM minimal\nRUN dd if=/dev/zero of=/fill bs=1M count=400\n"
    with pytest.raises(ImageBuildError) as caught:
        await builder.build(request("full", tmp_path, dockerfile), lambda event: None)
    assert "No space left on device" in caught.value.details["output"]
    assert caught.value.details["exit_code"] != 0
    assert manager.store.get_image("full") is None
    assert leftover_build_sandboxes(manager, "full") == []


def test_helpers_clean(tmp_path: Path) -> None:
    """The wheel helper makes a zip pip can read (a RECORD naming every file)."""
    made = wheel(tmp_path)
    assert made.name == "tinyweb-1.0-py3-none-any.whl"
    shutil.unpack_archive(made, tmp_path / "x", "zip")
    assert (tmp_path / "x" / "tinyweb" / "__init__.py").exists()


@pytest.fixture(scope="module")
def tls_site(
    outside: Outside, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """An HTTPS server on the stand-in internet, signed by a CA of the test's own: the CA's
    file and the server's URL."""
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca(directory, outside.web)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", outside.name, sys.executable, "-c", TLS_SERVER, str(cert),
         str(key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for attempt in Retrying(stop=stop_after_delay(20), wait=wait_fixed(0.1), reraise=True):
            with attempt:
                trust = ssl.create_default_context(cafile=str(ca))
                httpx.get(f"https://{outside.web}:8443/", verify=trust, timeout=1)
        yield ca, f"https://{outside.web}:8443/"
    finally:
        proc.kill()
        proc.wait()


async def test_ca_setting_lets_run_steps_trust_a_reissuing_proxy(
    manager: Manager,
    builder: Builder,
    tls_site: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A RUN fetching from an HTTPS server signed by a test CA fails without
    SIETCH_BUILD_CA_BUNDLE and succeeds with it; the bundle is not left in the image."""
    ca, url = tls_site
    dockerfile = f"FROM default\nRUN curl -sS {url} -o /fetched.txt\n"
    with pytest.raises(ImageBuildError) as caught:
        await builder.build(request("tls-fetch", tmp_path, dockerfile), lambda e: None)
    assert "certificate" in caught.value.details["output"]
    assert manager.store.get_image("tls-fetch") is None
    monkeypatch.setattr(
        manager, "settings", manager.settings.model_copy(update={"build_ca_bundle": ca})
    )
    await builder.build(request("tls-fetch", tmp_path, dockerfile), lambda e: None)
    info = await manager.create(image="tls-fetch")
    try:
        sb = manager.sandbox(info.id)
        assert (await sb.exec("cat /fetched.txt")).stdout == b"hello over tls\n"
        assert (await sb.exec("ls /dev/shm")).stdout == b""
    finally:
        await manager.delete(info.id)


@pytest.mark.slow  # mmdebstrap: minutes on a loaded machine, once per state dir
async def test_debian_slim_base_installs_from_a_local_apt_repository(
    manager: Manager, builder: Builder, outside: Outside, tmp_path: Path
) -> None:
    """FROM debian:bookworm-slim (mmdebstrap) with RUN apt-get install of a package that a
    local repository on the stand-in internet serves: the package runs in the image."""
    apt_repo(outside.root)
    dockerfile = (
        "FROM debian:bookworm-slim\n"
        "RUN rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && \\\n"
        f'    echo "deb [trusted=yes] http://{outside.web}/repo ./" > /etc/apt/sources.list && \\\n'
        "    apt-get update && apt-get install -y sietch-hello\n"
    )
    image = await builder.build(request("debian-hello", tmp_path, dockerfile), lambda e: None)
    assert image.base == "debian:bookworm-slim"
    info = await manager.create(image="debian-hello")
    try:
        r = await manager.sandbox(info.id).exec("sietch-hello; ls /usr/share/man")
        assert r.stdout == b"hello from a local apt repository\n", r  # slim: no manual pages
    finally:
        await manager.delete(info.id)


async def test_sandbox_ca_setting_lets_every_new_sandbox_trust_it(
    manager: Manager, tls_site: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SIETCH_SANDBOX_CA_BUNDLE a new sandbox's curl trusts the test CA (without it,
    a certificate error), and a command's own environment still wins."""
    ca, url = tls_site
    fetch = f"curl -sS {url}"
    plain = await manager.create()
    try:
        refused = await manager.sandbox(plain.id).exec(fetch)
        assert refused.exit_code != 0
        assert b"certificate" in refused.stderr
    finally:
        await manager.delete(plain.id)
    monkeypatch.setattr(
        manager, "settings", manager.settings.model_copy(update={"sandbox_ca_bundle": ca})
    )
    info = await manager.create(env={"PIP_CERT": "/mine.pem"})
    try:
        sb = manager.sandbox(info.id)
        assert (await sb.exec(fetch)).stdout == b"hello over tls\n"
        assert info.env["SSL_CERT_FILE"] == "/etc/sietch/ca-bundle.pem"
        assert info.env["PIP_CERT"] == "/mine.pem"
    finally:
        await manager.delete(info.id)
