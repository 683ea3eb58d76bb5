"""Sandbox lifecycle: state in SQLite, limits, and the operations the server exposes."""
