"""The web dashboard: the static files of `ui/` (plain ES modules, no build step) at `/ui/`.

The files carry no data, so they are public like `/healthz`; every number the pages show comes
from the JSON API under the same key as any client (the page sends it as `X-API-Key`). Deep
links (`/ui/experiments/{id}`, `/ui/sweeps/{id}`, `/ui/datasets`...) answer the single page's
`index.html`, whose router draws the page, so a reload or a shared link works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

# ui/ sits beside api/ in the checkout and in site-packages alike (pyproject.toml ships it).
UI_DIR = Path(__file__).resolve().parents[2] / "ui"
INDEX = UI_DIR / "index.html"
# The page loads only its own files and talks only to its own origin; inline styles are uPlot's.
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}

router = APIRouter(include_in_schema=False)


def _index() -> Response:
    return FileResponse(INDEX, media_type="text/html", headers={**HEADERS, "Content-Security-Policy": CSP})


@router.get("/")
def read_root(accept: Annotated[str | None, Header()] = None) -> Response:
    """A browser asking for `/` gets the dashboard; any other client the usual JSON 404."""
    if accept and "text/html" in accept:
        return RedirectResponse("/ui/", status_code=307)
    raise StarletteHTTPException(404, "Not Found")


@router.get("/ui")
def redirect_ui() -> Response:
    """`/ui` without its slash: the page's relative links need the slash."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{path:path}")
def read_ui(path: str) -> Response:
    """A file of the dashboard, or its `index.html` for any page path (no file extension)."""
    last = path.rsplit("/", 1)[-1]
    if "." not in last:
        return _index()  # a page: the router in app.js draws it
    target = (UI_DIR / path).resolve()
    if not target.is_relative_to(UI_DIR.resolve()) or not target.is_file():
        raise StarletteHTTPException(404, f"no dashboard file {path!r}")
    media_type = MEDIA_TYPES.get(target.suffix)
    headers = {**HEADERS, "Content-Security-Policy": CSP} if target.suffix == ".html" else HEADERS
    return FileResponse(target, media_type=media_type, headers=headers)
