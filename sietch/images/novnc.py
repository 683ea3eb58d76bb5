"""noVNC, the browser VNC client the server's desktop viewer serves, built once on the host.

npm's ``@novnc/novnc`` ships the library only (``core/rfb.js`` and the
modules it imports, plain ES modules): the viewer page is Sietch's own
(``sietch/server/viewer/``). It is installed with the host's npm, pinned,
into the artefact cache next to code-server, and served from there as static
files: nothing comes from a CDN at run time.

Layout of the artefact: the package's own tree (``core/``, ``vendor/``, ...).
"""

from __future__ import annotations

from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._cache import digest
from sietch.images._run import run
from sietch.images.codeserver import NPM_FLAGS, host_npm
from sietch.images.progress import Progress

NOVNC = "@novnc/novnc@1.7.0"
ENTRY = "core/rfb.js"
"""The module the viewer imports, relative to the artefact."""
_FORMAT = 1


def novnc_key() -> str:
    return digest("novnc", _FORMAT, NOVNC)


def build_novnc(work: Path, progress: Progress) -> Path:
    """``npm install`` the pinned noVNC into ``work``; returns the package's directory."""
    progress(f"noVNC: npm install {NOVNC}", None)
    run(
        [host_npm(), "install", "--prefix", work, *NPM_FLAGS, NOVNC],
        what=f"install {NOVNC} with npm",
        timeout=600,
    )
    package = work / "node_modules" / NOVNC.rpartition("@")[0]
    if not (package / ENTRY).is_file():
        raise ImageBuildError(f"{NOVNC} installed without its {ENTRY}")
    return package
