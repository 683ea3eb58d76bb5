from collections.abc import Iterator

import pytest

from tests.server.harness import ApiServer, api_server


@pytest.fixture(scope="package")
def sdk_env(api_server: ApiServer) -> Iterator[None]:
    """Point the SDK at the test server through SIETCH_URL / SIETCH_API_KEY, as users do."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIETCH_URL", api_server.url)
        mp.setenv("SIETCH_API_KEY", api_server.api_key)
        yield


__all__ = ["api_server", "sdk_env"]
