"""Sandbox networking: ports forwarded from the host's loopback into a guest."""
