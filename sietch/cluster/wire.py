"""What gateways and nodes say to each other beyond the public API: two headers.

A gateway sends every request to a node's internal port with the cluster secret in
:data:`SECRET_HEADER`, and, when the client's API key resolved to a caller, that caller
in :data:`CALLER_HEADER` (the key itself is never forwarded), and the client's scheme
in :data:`SCHEME_HEADER`. A node refuses any request
without the secret, so only gateways (and nodes copying snapshots) can vouch for a caller.
"""

from __future__ import annotations

import hmac
import json

from sietch.core.tenants import Caller

SECRET_HEADER = "x-sietch-cluster-secret"
CALLER_HEADER = "x-sietch-caller"
SCHEME_HEADER = "x-sietch-scheme"
"""The scheme the client spoke to the gateway (``https`` behind its TLS): the links a
node makes (desktop, IDE) and its cookies' ``Secure`` follow it, not the node's own."""


def encode_caller(caller: Caller) -> str:
    return json.dumps({"tenant": caller.tenant, "key": caller.key, "admin": caller.admin})


def decode_caller(value: str) -> Caller | None:
    """The caller a gateway vouched for; None for a malformed header."""
    try:
        fields = json.loads(value)
        return Caller(str(fields["tenant"]), str(fields["key"]), bool(fields["admin"]))
    except (ValueError, KeyError, TypeError):
        return None


def secret_matches(given: str | None, secret: str) -> bool:
    """In constant time: a timing difference must not leak the secret byte by byte."""
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())
