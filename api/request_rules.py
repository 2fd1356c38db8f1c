"""Rules on the request line that hold for every route, whoever wrote it:

- HEAD works wherever GET does: the GET route answers, with its status and headers, and no body
  is sent (a stream, such as the Server-Sent Events, is stopped after its headers).
- A query parameter that the matched route does not declare is a 422 naming it (`loc`
  `["query", "<name>"]`, type `extra_forbidden`), as an unknown field of a JSON body is: a typo
  (`?stauts=running`) must not silently return the unfiltered list.
- A NUL character in the path or a query parameter is a 422 (PostgreSQL cannot compare text
  holding one: it would be a 500 there and a 404 on SQLite).
Routes are matched as Starlette will match them; a request that matches no route is left to
the router (404 or 405).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import InvalidInputs, error_response, validation_detail


class _HeadDone(Exception):
    """Raised from `send` once a HEAD answer is complete, to stop a streaming GET handler."""


class HeadAsGetMiddleware:
    """Serves HEAD with the GET route: the same status and headers, an empty body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        done = False

        async def header_only(message: Message) -> None:
            nonlocal done
            if done:
                raise _HeadDone
            if message["type"] == "http.response.body":
                done = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _HeadDone  # a stream: its headers are the answer
                return
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, header_only)
        except _HeadDone:
            pass
        except BaseExceptionGroup as group:  # from a streaming response's task group
            rest = group.subgroup(lambda e: not isinstance(e, _HeadDone | BaseExceptionGroup))
            if rest is not None:
                raise
        finally:
            if "route" in as_get:  # the metrics (an outer middleware) label the request by its route
                scope["route"] = as_get["route"]


class NulMiddleware:
    """Refuses a NUL character in the path or in a query parameter, before any route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors: list[dict[str, Any]] = []
        if "\x00" in scope["path"]:
            errors.append({"loc": ["path"], "msg": "the path must not contain NUL characters", "type": "string_nul"})
        for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                msg = "query parameters must not contain NUL characters"
                errors.append({"loc": ["query", name], "msg": msg, "type": "string_nul"})
        if errors:
            response = error_response(422, "ValidationError", validation_detail(errors), errors=errors)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


_DECLARED: dict[int, frozenset[str] | None] = {}


def _declared(route: Any) -> frozenset[str] | None:
    """The query parameter names (aliases) a route reads, its dependencies' included; None for a
    dashboard page (`/`, `/ui/...`), whose query string is the page's own state, read by its
    JavaScript (`/ui/?status=running`)."""
    key = id(route)
    if key not in _DECLARED:
        path = getattr(route, "path", "")
        names: set[str] = set()
        if path == "/" or path == "/ui" or path.startswith("/ui/"):
            _DECLARED[key] = None
            return None
        if isinstance(route, APIRoute):
            dependants = [route.dependant]
            while dependants:
                dependant = dependants.pop()
                names.update(p.alias for p in dependant.query_params)
                dependants.extend(dependant.dependencies)
        _DECLARED[key] = frozenset(names)
    return _DECLARED[key]


async def reject_unknown_query(request: Request) -> None:
    """An app-wide dependency: every query parameter must be one the matched route declares (async:
    it runs on the event loop, not in a threadpool hop)."""
    if not request.query_params:
        return
    declared = _declared(request.scope.get("route"))
    if declared is None:
        return
    errors = []
    for name in dict.fromkeys(request.query_params.keys()):
        if name not in declared:
            takes = ", ".join(sorted(declared)) if declared else "no query parameters"
            msg = f"unknown query parameter; this route takes {takes}"
            errors.append({"loc": ["query", name], "msg": msg, "type": "extra_forbidden"})
    if errors:
        raise InvalidInputs(errors)


def install_request_rules(app: FastAPI) -> None:
    """The middlewares; `reject_unknown_query` is given to FastAPI(dependencies=...)."""
    app.add_middleware(NulMiddleware)
    app.add_middleware(HeadAsGetMiddleware)
