"""The sync SDK is generated from the async one, and the committed copy is up to date."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "unasync.py"


def _unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_sync_client_is_what_unasync_writes() -> None:
    """Edit sietch/client/_async.py, then run scripts/unasync.py; never edit _sync.py."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_unasync_rewrites_the_asyncio_idioms() -> None:
    unasync = _unasync()
    snippet = '''"""Doc."""
class AsyncThing:
    """Leave it in an ``async with`` block."""

    async def __aenter__(self) -> AsyncThing:
        async with httpx.AsyncClient() as http:
            response = await http.get("/")
            return (await response.aread()).decode()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.source():
            yield chunk
'''
    text = unasync.generate(snippet, sync_only=[])
    assert "Leave it in a ``with`` block." in text
    assert "def __enter__(self) -> Thing:" in text
    assert "with httpx.Client() as http:" in text
    assert 'response = http.get("/")' in text
    assert "return response.read().decode()" in text
    assert "def chunks(self) -> Iterator[bytes]:\n        yield from self.source()\n" in text
    assert text.startswith(unasync.HEADER)


def test_unasync_refuses_to_drop_a_difference_or_keep_asyncio() -> None:
    unasync = _unasync()
    with pytest.raises(SystemExit, match="Client's docstring"):
        unasync.generate('"""Doc."""\nclass AsyncClient:\n    """Another docstring."""\n')
    with pytest.raises(SystemExit, match="asyncio-only"):
        unasync.generate('"""Doc."""\nimport asyncio\n', sync_only=[])
