"""Arrakis compatibility: its REST API under ``/v1`` (see :mod:`.routes`)."""

from sietch.server.arrakis.routes import public_router, router

__all__ = ["public_router", "router"]
