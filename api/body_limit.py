"""The request body limit (LABTRAIN_MAX_BODY_BYTES): 413 in the error envelope, naming the limit.

Enforced while the body streams in: a Content-Length above the limit is refused before a byte
is read, and a chunked body is counted as it arrives and refused at the first chunk past it.
`POST /datasets` (multipart uploads) is left to its route, which streams the form against its own,
larger limit (LABTRAIN_MAX_UPLOAD_BYTES plus the form's overhead) and answers `UploadTooLarge`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from core.settings import Settings

SETTING = "LABTRAIN_MAX_BODY_BYTES"
# Routes that enforce a limit of their own while streaming their body.
OWN_LIMIT = frozenset({("POST", "/datasets")})


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes the limit. An HTTPException, not a DomainError,
    because FastAPI re-raises only HTTPException from its body parsing (it turns anything else
    into a 400); its own handler renders the envelope."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        what = f"the request body ({size:,} bytes)" if size is not None else "the request body"
        super().__init__(413, f"{what} is larger than the limit of {limit:,} bytes ({SETTING})")
        self.limit = limit


def too_large_response(exc: BodyTooLarge) -> JSONResponse:
    response = error_response(413, "RequestTooLarge", str(exc.detail), limit=exc.limit)
    response.headers["Connection"] = "close"  # the rest of the body is not read
    return response


async def _handle_too_large(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    return too_large_response(exc)


class BodyLimitMiddleware:
    """Counts each request body against `limit` bytes, except on the routes of `OWN_LIMIT`."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/")) in OWN_LIMIT:
            await self.app(scope, receive, send)
            return
        limit = self.limit
        header = Headers(scope=scope).get("content-length")
        declared = int(header) if header is not None and header.isdigit() else None
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:  # refused before a byte is read
                raise BodyTooLarge(limit, declared)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # read outside a route (a middleware, a streaming handler)
            if started:
                raise
            await too_large_response(exc)(scope, receive, send)


def install_body_limit(app: FastAPI, settings: Settings) -> None:
    """LABTRAIN_MAX_BODY_BYTES on every route but the upload."""
    app.add_exception_handler(BodyTooLarge, _handle_too_large)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
