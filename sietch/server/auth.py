"""API keys: generated on first start, shown once, stored only as SHA-256 hashes.

Keys are long random tokens, so a plain (unsalted) hash is enough: nothing
short enough to brute-force is ever hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_PREFIX = "sk-sietch-"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The set of accepted keys, kept in one 0600 file of hex digests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digests: list[str] = []
        self.reload()

    def reload(self) -> None:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        self._digests = [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]

    def __len__(self) -> int:
        return len(self._digests)

    def add(self) -> str:
        """Create a new key, store its hash and return the key (the only time it is seen)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(_digest(key) + "\n")
        os.chmod(self.path, 0o600)
        self._digests.append(_digest(key))
        return key

    def ensure(self) -> str | None:
        """Make sure at least one key exists; returns the new key if one was made."""
        return None if self._digests else self.add()

    def verify(self, key: str) -> bool:
        digest = _digest(key)
        # Compare against every stored digest so timing says nothing about which matched.
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, digest)
        return found
