"""Images through the real server: sietch build, the SDK, OCI import, ls/inspect/rm/prune."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sietch.client import Client, Sandbox, Template
from sietch.errors import Conflict, ImageBuildError, ImageNotFound, InvalidArgument
from sietch.images.busybox import busybox
from tests.builder.helpers import docker_save, layer_tar
from tests.cli.conftest import Run, sietch_cli
from tests.server.harness import ApiServer, api_server

__all__ = ["api_server", "sietch_cli"]

HTTPD = """\
FROM minimal
COPY site/ /www/
WORKDIR /www
ENV GREETING=hello
EXPOSE 8000
CMD ["httpd", "-f", "-p", "8000", "-h", "/www"]
"""


@pytest.fixture
def client(api_server: ApiServer) -> Iterator[Client]:
    with Client(api_server.url, api_server.api_key) as made:
        yield made
        for image in made.images.list():
            if image.source != "builtin":
                for user in image.users:
                    if user.startswith("sb-"):
                        Sandbox.connect(user, client=made).kill()
                made.images.delete(image.name)


def _site(root: Path) -> Path:
    (root / "site").mkdir(parents=True)
    (root / "site" / "index.html").write_text("<p>built by sietch</p>\n")
    (root / "Dockerfile").write_text(HTTPD)
    return root


def test_cli_build_then_create_and_rm_refused_while_used(
    sietch_cli: Run, client: Client, tmp_path: Path, api_server: ApiServer
) -> None:
    """sietch build prints each step; the image serves through its exposed port on the
    first request; image ls lists it with its user; Arrakis' rootfs can name it; rm is
    refused (409) naming the sandbox while it runs and works once it is gone."""
    ctx = _site(tmp_path / "ctx")
    done = sietch_cli("build", "-t", "site", str(ctx), timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    stderr = done.stderr.decode()
    assert "[1/5] COPY site/ /www/" in stderr and "[5/5] CMD httpd" in stderr
    with Sandbox.create("site", client=client) as sb:
        [port] = sb.info.ports
        assert httpx.get(f"http://127.0.0.1:{port.host_port}/", timeout=120).text == (
            "<p>built by sietch</p>\n"
        )
        assert sb.exec("pwd; echo $GREETING").stdout == "/www\nhello\n"
        listed = json.loads(sietch_cli("image", "ls", "--json").stdout)
        [entry] = [i for i in listed if i["name"] == "site"]
        assert entry["users"] == [sb.id] and entry["base"] == "minimal"
        assert any(i["name"] == "default" and i["source"] == "builtin" for i in listed)
        refused = sietch_cli("image", "rm", "site")
        assert refused.returncode == 1 and sb.id in refused.stderr.decode()
        with pytest.raises(Conflict):
            client.images.delete("site")
    arrakis = httpx.Client(base_url=api_server.url, headers=api_server.headers, timeout=300)
    with arrakis:
        started = arrakis.post("/v1/vms", json={"vmName": "from-site", "rootfs": "site"})
        assert started.status_code == 200, started.text
        ran = arrakis.post("/v1/vms/from-site/cmd", json={"cmd": "cat /www/index.html"})
        assert ran.json()["output"] == "<p>built by sietch</p>\n", ran.text
        assert arrakis.delete("/v1/vms/from-site").status_code == 200
    assert sietch_cli("image", "rm", "site").returncode == 0
    assert "site" not in [i.name for i in client.images.list()]
    assert sietch_cli("image", "prune").returncode == 0


def test_failed_step_shows_output_and_exit_code(
    sietch_cli: Run, client: Client, tmp_path: Path
) -> None:
    """A failing RUN: the CLI prints the step's output and exit code and exits 1; the SDK
    raises with both in details; no image is listed."""
    (tmp_path / "Dockerfile").write_text("FROM minimal\nRUN echo broken-step; exit 7\n")
    done = sietch_cli("build", "-t", "broken", str(tmp_path), timeout=600)
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert "broken-step" in stderr and "exit code 7" in stderr
    events: list[dict[str, Any]] = []
    with pytest.raises(ImageBuildError) as caught:
        client.images.build("broken", tmp_path, on_event=events.append)
    assert caught.value.details["exit_code"] == 7
    assert any(e["type"] == "output" and "broken-step" in e["data"] for e in events)
    assert "broken" not in [i.name for i in client.images.list()]


@pytest.mark.parametrize(
    ("dockerfile", "error", "says"),
    [
        ("FROM minimal\nFROBNICATE\n", InvalidArgument, "line 2"),
        ("FROM no-such-image\n", ImageNotFound, "no-such-image"),
        ("FROM minimal\nCOPY ../etc/passwd /x\n", InvalidArgument, "outside the build context"),
    ],
)
def test_bad_input_is_refused_before_any_sandbox(
    client: Client, tmp_path: Path, dockerfile: str, error: type[Exception], says: str
) -> None:
    """An unknown instruction, a missing base, COPY out of the context: a 4xx error."""
    with pytest.raises(error, match=says):
        client.images.build("bad", tmp_path, dockerfile_text=dockerfile)


def _oci(tmp_path: Path, evil: bool = False) -> Path:
    bb = busybox().read_bytes()
    d, f, s = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE
    lower = layer_tar([
        ("bin", None, {"type": d, "mode": 0o755}),
        ("bin/busybox", bb, {"type": f, "mode": 0o755}),
        ("bin/sh", None, {"type": s, "linkname": "busybox"}),
        ("etc", None, {"type": d, "mode": 0o755}),
        ("etc/keep.txt", b"kept\n", {"mode": 0o644}),
        ("etc/gone.txt", b"whited out\n", {"mode": 0o644}),
        ("data", None, {"type": d, "mode": 0o755}),
        ("data/old.txt", b"old\n", {"mode": 0o644}),
        ("srv", None, {"type": d, "mode": 0o755}),
    ])  # fmt: skip
    upper = layer_tar([
        ("etc/.wh.gone.txt", b"", {"mode": 0o644}),
        ("data/.wh..wh..opq", b"", {"mode": 0o644}),
        ("data/new.txt", b"new\n", {"mode": 0o644}),
        ("srv/index.html", b"imported\n", {"mode": 0o644}),
        *([("../../outside-the-cache", b"x", {"mode": 0o644})] if evil else []),
    ])  # fmt: skip
    config = {
        "architecture": "amd64",
        "config": {
            "Env": ["PATH=/bin", "GREETING=from-oci"],
            "Cmd": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/srv"],
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/data",
        },
        "rootfs": {"type": "layers"},
    }
    return docker_save(tmp_path / "image.tar", [lower, upper], config)


def test_oci_import_applies_layers_and_whiteouts_and_runs(client: Client, tmp_path: Path) -> None:
    """A docker save archive with two layers, a whiteout and an opaque directory imports;
    the config's Env/Cmd/WorkingDir/ExposedPorts hold in its sandboxes."""
    image = client.images.import_image("imported", _oci(tmp_path))
    assert image.source == "oci" and image.config["expose"] == [8080]
    with Sandbox.create("imported", client=client) as sb:
        r = sb.exec("cat /etc/keep.txt; ls /data; pwd; echo $GREETING; ls /etc/gone.txt")
        assert r.stdout.split() == ["kept", "new.txt", "/data", "from-oci"], r
        assert r.exit_code != 0 and b"gone.txt" in r.stderr_bytes
        [port] = sb.info.ports
        assert httpx.get(f"http://127.0.0.1:{port.host_port}/", timeout=120).text == "imported\n"


def test_unsafe_oci_layer_is_refused_and_writes_nothing_outside(
    client: Client, tmp_path: Path, api_server: ApiServer
) -> None:
    """A layer member climbing out ('../..') fails the import; nothing lands outside."""
    with pytest.raises(InvalidArgument, match=r"'\.\.'"):
        client.images.import_image("evil", _oci(tmp_path, evil=True))
    assert "evil" not in [i.name for i in client.images.list()]
    state = api_server.state_dir
    assert not list(state.rglob("outside-the-cache"))
    assert not list(state.parent.glob("outside-the-cache"))
    assert not list((state / "images" / "tmp").iterdir())


def test_template_builder_builds_through_the_server(client: Client, tmp_path: Path) -> None:
    """Template(base=...).copy().workdir().env().expose().start_cmd().build(name) makes an
    image whose start command serves from the first request."""
    ctx = _site(tmp_path / "ctx")
    image = (
        Template(base="minimal", context=ctx)
        .copy("site/", "/www/")
        .workdir("/www")
        .env(GREETING="from a template")
        .expose(8000)
        .start_cmd("httpd -f -p 8000 -h /www")
        .build("templated", client=client)
    )
    assert image.source == "dockerfile" and image.config["workdir"] == "/www"
    with Sandbox.create("templated", client=client) as sb:
        [port] = sb.info.ports
        assert (
            "built by sietch" in httpx.get(f"http://127.0.0.1:{port.host_port}/", timeout=120).text
        )
        assert sb.exec("echo $GREETING").stdout == "from a template\n"
