"""The console's files: its own (``/ui/static/``) and the npm packages (``/ui/vendor/``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from sietch.errors import NotFound, Unavailable
from sietch.images import ImageStore
from sietch.images.webui import FILES
from sietch.server.deps import SettingsDep

router = APIRouter()
_STATIC = resources.files("sietch.server.console").joinpath("static")
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _file(path: Path) -> FileResponse:
    return FileResponse(
        path,
        media_type=_TYPES.get(path.suffix),
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/static/{name}", name="console-static")
async def static_file(name: str) -> FileResponse:
    with resources.as_file(_STATIC) as root:
        found = Path(root) / name
        if "/" in name or not found.is_file():
            raise NotFound(f"no console file {name!r}")
        return _file(found)


@router.get("/vendor/{name}", name="console-vendor")
async def vendor_file(name: str, settings: SettingsDep) -> FileResponse:
    """htmx, xterm.js, axe-core: the pinned npm packages the set-up command installed."""
    if name not in FILES:
        raise NotFound(f"no console package file {name!r}")
    found = ImageStore(settings.cache_dir).webui() / FILES[name]
    if not found.is_file():
        raise Unavailable("the web console's packages are not installed: run `sietch image build`")
    return _file(found)
