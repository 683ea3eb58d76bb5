"""The web console's browser packages, installed once on the host with its npm.

htmx (the console's pages), xterm.js and its fit addon (the terminal) and
axe-core (the console's accessibility check) come from npm, pinned, into the
artefact cache, and the server serves them from there: nothing is fetched
from a CDN at run time, and the console works with no internet at all.

Layout of the artefact: npm's ``node_modules`` (``<package>/...``).
"""

from __future__ import annotations

from pathlib import Path

from sietch.errors import ImageBuildError
from sietch.images._cache import digest
from sietch.images._run import run
from sietch.images.codeserver import NPM_FLAGS, host_npm
from sietch.images.progress import Progress

PACKAGES = ("htmx.org@2.0.8", "@xterm/xterm@6.0.0", "@xterm/addon-fit@0.11.0", "axe-core@4.11.1")
FILES = {
    "htmx.js": "htmx.org/dist/htmx.min.js",
    "xterm.js": "@xterm/xterm/lib/xterm.js",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.js": "@xterm/addon-fit/lib/addon-fit.js",
    "axe.js": "axe-core/axe.min.js",
}
"""The files the console serves (``/ui/vendor/<name>``), relative to the artefact."""
_FORMAT = 1


def webui_key() -> str:
    return digest("webui", _FORMAT, *PACKAGES, *sorted(FILES.items()))


def build_webui(work: Path, progress: Progress) -> Path:
    """``npm install`` the pinned packages into ``work``; returns its ``node_modules``."""
    progress(f"web console: npm install {' '.join(PACKAGES)}", None)
    run(
        [host_npm(), "install", "--prefix", work, *NPM_FLAGS, *PACKAGES],
        what="install the web console's packages with npm",
        timeout=600,
    )
    modules = work / "node_modules"
    for name, path in FILES.items():
        if not (modules / path).is_file():
            raise ImageBuildError(f"the web console's {name} ({path}) was not installed")
    return modules
