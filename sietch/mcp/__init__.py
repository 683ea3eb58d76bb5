"""Sietch over the Model Context Protocol: ``sietch mcp`` (stdio) and ``/mcp`` (HTTP)."""

from sietch.mcp.backend import Backend, ClientBackend, ManagerBackend
from sietch.mcp.server import build_server

__all__ = ["Backend", "ClientBackend", "ManagerBackend", "build_server"]
