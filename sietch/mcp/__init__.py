"""Sietch over the Model Context Protocol: the tools, and ``sietch mcp`` (stdio).

- :mod:`sietch.mcp.server` writes every tool once, over a :class:`~sietch.mcp.backend.Backend`;
- :mod:`sietch.mcp.sdk` is the backend of ``sietch mcp``: a running server, through the SDK;
- the server mounts the same tools at ``/mcp`` with its own backend (:mod:`sietch.server.mcp`).

Nothing is imported here: the MCP SDK's server side loads uvicorn (through
sse-starlette), which a process that only reads :mod:`sietch.mcp.models` need not.
"""
