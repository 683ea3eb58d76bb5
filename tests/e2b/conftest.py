import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.server.harness import ApiServer, api_server, http

__all__ = ["api_server", "e2b_env", "http", "pointed_at"]


@contextmanager
def pointed_at(server: ApiServer) -> Iterator[ApiServer]:
    """The environment an E2B user sets to switch: key, API URL and sandbox URL, all on
    Sietch's main port; as it was before, afterwards."""
    values = {
        "E2B_API_KEY": server.api_key,
        "E2B_API_URL": server.url,
        "E2B_SANDBOX_URL": server.url,
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def e2b_env(api_server: ApiServer) -> Iterator[ApiServer]:
    """The E2B environment pointed at the session's server (see :func:`pointed_at`)."""
    with pointed_at(api_server):
        yield api_server
