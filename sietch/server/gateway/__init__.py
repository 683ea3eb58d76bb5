"""The cluster gateway (``sietch serve --gateway``): see :mod:`.app` and :mod:`.routing`."""

from sietch.server.gateway.app import Gateway, create_gateway_app

__all__ = ["Gateway", "create_gateway_app"]
