"""The API's documentation pages, served offline and behind the same key rule as every route.

`/docs` (Swagger UI), `/redoc` (ReDoc) and `/openapi.json` are ordinary routes here, not
FastAPI's built-in ones, so they take the owner dependency: with LABTRAIN_API_KEYS set they need
a key like every route but /healthz (`Authorization: Bearer <key>` or `X-API-Key: <key>`, e.g.
from a browser extension that adds a header, or `curl` for the schema). The pages load their
JavaScript, CSS and icon from `/docs/assets/`, files shipped in the `fastapi-offline` package
(Swagger UI and ReDoc bundles, MIT/Apache-2.0 licensed): nothing is fetched from a CDN, and the
pages work on a machine with no internet access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import fastapi_offline
from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from api.deps import OwnerDep
from api.errors import error_response

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"


def install_docs(app: FastAPI) -> None:
    """Create the app with `docs_url=None, redoc_url=None, openapi_url=None`, then call this."""

    @app.get(OPENAPI_URL, include_in_schema=False)
    async def read_openapi(_owner: OwnerDep) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def read_swagger_ui(_owner: OwnerDep) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def read_redoc(_owner: OwnerDep) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,  # offline: the system fonts
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False, response_model=None)
    async def read_docs_asset(
        _owner: OwnerDep, name: Annotated[str, PathParam(max_length=64)]
    ) -> FileResponse | JSONResponse:
        if name not in ASSETS:  # a fixed list: no path is ever built from the request
            return error_response(404, "NotFound", f"no documentation asset {name!r}")
        headers: dict[str, Any] = {"Cache-Control": "public, max-age=86400"}
        return FileResponse(ASSETS_DIR / name, media_type=ASSETS[name], headers=headers)
