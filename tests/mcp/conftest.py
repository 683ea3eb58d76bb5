from tests.server.harness import api_server, http

__all__ = ["api_server", "http"]
