import os
from collections.abc import Iterator

import pytest

from tests.server.harness import ApiServer, api_server, http

__all__ = ["api_server", "e2b_env", "http"]


@pytest.fixture(scope="session")
def e2b_env(api_server: ApiServer) -> Iterator[ApiServer]:
    """The environment an E2B user sets to switch: key, API URL and sandbox URL, all on
    Sietch's main port."""
    values = {
        "E2B_API_KEY": api_server.api_key,
        "E2B_API_URL": api_server.url,
        "E2B_SANDBOX_URL": api_server.url,
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield api_server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
