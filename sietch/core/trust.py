"""Hand a sandbox the host's CA bundle and proxy variables, for networks behind a TLS
re-signing proxy: image builds' RUN steps (``SIETCH_BUILD_*``) and, when asked, every new
sandbox (``SIETCH_SANDBOX_*``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sietch.core.images import TOOLS_BUSYBOX
from sietch.core.live import LiveSandbox
from sietch.errors import SietchError

PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE",
           "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS")  # fmt: skip
"""What OpenSSL, requests, pip, curl, git and node read a CA bundle's path from."""


def proxy_env() -> dict[str, str]:
    """This process's proxy variables (either case), as a sandbox's environment."""
    return {k: v for k, v in os.environ.items() if k.lower() in PROXY_VARS}


async def hand_in(
    sandbox: LiveSandbox, bundle: Path | None, guest_path: str, proxy: bool
) -> dict[str, str]:
    """Write ``bundle`` to ``guest_path`` in the guest (as root, mode 0644); the environment
    that makes its programs trust it, and use this process's proxy if ``proxy``."""
    env = proxy_env() if proxy else {}
    if bundle is not None:
        pem = await asyncio.to_thread(bundle.read_bytes)
        # The tools' busybox: the agent's file writes skip /dev, and an image may lack cat.
        script = 'mkdir -p "${1%/*}" && cat > "$1" && chmod 0644 "$1"'
        done = await sandbox.exec(
            [TOOLS_BUSYBOX, "sh", "-c", script, "sh", guest_path], stdin=pem, user="root", cwd="/"
        )
        if done.exit_code != 0:
            err = done.stderr.decode(errors="replace").strip()[-300:]
            raise SietchError(f"could not hand the CA bundle to sandbox {sandbox.id}: {err}")
        env |= dict.fromkeys(CA_VARS, guest_path)
    return env
