"""Every test of the ``code-interpreter`` image shares one server: its template is a cold
boot that imports numpy, pandas and matplotlib (minutes under TCG), paid once per server."""

from tests.cli.conftest import sietch_cli
from tests.client.conftest import sdk_env
from tests.e2b.conftest import e2b_env
from tests.server.harness import api_server

__all__ = ["api_server", "e2b_env", "sdk_env", "sietch_cli"]
