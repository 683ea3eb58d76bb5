"""The REST + WebSocket API over the manager (``sietch serve``)."""

from sietch.server.app import create_app

__all__ = ["create_app"]
