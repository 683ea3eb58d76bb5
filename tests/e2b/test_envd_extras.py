"""envd's client-streaming stdin and signed file URLs, through the e2b SDK unchanged."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from e2b import Sandbox

from tests.server.harness import ApiServer


@pytest.fixture(scope="module")
def sbx(e2b_env: ApiServer) -> Iterator[Sandbox]:
    """One default sandbox for the module."""
    sandbox = Sandbox.create(timeout=1800)
    yield sandbox
    sandbox.kill()


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_stream_input_in_order(sbx: Sandbox) -> None:
    """commands.stream_input sends every chunk, in order, over one client stream."""
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.stream_input(handle.pid, ["one\n", b"two\n", "three\n"])
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "one\ntwo\nthree\n"


def test_stream_input_refuses_bad_streams(sbx: Sandbox, e2b_env: ApiServer) -> None:
    """A stream that names no process, or ends inside an envelope, is a Connect error in
    the end-of-stream envelope; the server keeps serving."""
    url = f"{e2b_env.url}/process.Process/StreamInput"
    headers = {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "X-Access-Token": sbx._envd_access_token or "",
        "Content-Type": "application/connect+json",
    }
    no_start = b'{"data":{}}'
    for body in (struct.pack(">BI", 0, len(no_start)) + no_start, b"\x00\x00\x00\x00\x09{}"):
        answer = httpx.post(url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 200
        assert b'"invalid_argument"' in answer.content
    assert sbx.commands.run("echo still").stdout == "still\n"


def test_signed_download_and_upload_urls(sbx: Sandbox) -> None:
    """download_url and upload_url work without any header; a changed path, a wrong
    signature or an expired one is refused."""
    sbx.files.write("/tmp/signed.txt", "secret")
    url = sbx.download_url("/tmp/signed.txt")
    assert "signature=" in url
    assert httpx.get(url, timeout=60).text == "secret"
    for bad in (
        _with_query(url, path="/etc/shadow"),
        _with_query(url, signature="v1_" + "A" * 43),
        sbx.download_url("/tmp/signed.txt", use_signature_expiration=-60),
    ):
        assert httpx.get(bad, timeout=60).status_code == 401
    upload = sbx.upload_url("/tmp/uploaded.txt")
    sent = httpx.post(upload, files={"file": ("uploaded.txt", b"via url")}, timeout=60)
    assert sent.status_code == 200, sent.text
    assert sbx.files.read("/tmp/uploaded.txt") == "via url"
    # A read signature does not write.
    assert httpx.post(url, files={"file": ("x", b"x")}, timeout=60).status_code == 401
