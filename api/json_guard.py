"""One JSON decoding rule for every route that takes a JSON body, checked before the route sees it.

Python's `json` module accepts what JSON does not (`NaN`, `Infinity`, `-Infinity`) and turns
numbers out of the float range (`1e400`) into infinities; such values then reach validation,
whose 422 cannot even be written (JSON has no NaN). PostgreSQL refuses NUL characters in text and
in jsonb, and a document nested thousands of levels deep costs recursion everywhere it goes. So a
JSON body is decoded here when its route reads it, and answered 422 in the error envelope,
with `loc` naming each place (`["body", "optimizer", "lr"]`), when it holds:
- a non-finite number (`NaN`, `Infinity`, `-Infinity`) or one outside the 64-bit float range
  (`1e400`, an integer of more than 308 digits): type `finite_number`;
- a NUL character (`\\u0000`) in a string or a key: type `string_nul`; a lone surrogate
  (`\\ud800`, which no UTF-8 text can hold): type `string_unicode`;
- more than MAX_DEPTH levels of arrays and objects: type `json_too_deep`.
The whole body is read first, so the keep-alive connection stays usable after the 422. A body
that is not JSON at all is left to FastAPI (a 422 `json_invalid`, or a 400 for bytes that are not
text); a route that reads no body (a cancel) ignores it, as before. The body limit
(api/body_limit.py) is the outer middleware: it counts these bytes too.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response, validation_detail

MAX_DEPTH = 32  # the deepest legitimate body (a sweep of multi-head specs, image rows) is under 10
MAX_ERRORS = 20  # reported; the walk stops there
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FLOAT_MAX_DIGITS = 308  # an integer with more digits is outside the float range (±1.8e308)


_SURROGATE = re.compile("[\ud800-\udfff]")


class _Constant:
    """What `json` would have turned into a non-finite float: NaN, Infinity, -Infinity."""

    def __init__(self, text: str) -> None:
        self.text = text


class _Huge:
    """An integer literal too long for Python's int() (over 4,300 digits)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _int(text: str) -> int | _Huge:
    return int(text) if len(text) <= FLOAT_MAX_DIGITS + 1 else _Huge(text)


def _is_json(headers: Headers) -> bool:
    content_type = headers.get("content-type")
    if content_type is None:
        return True  # FastAPI reads a body without a content type as JSON
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def decode(body: bytes) -> tuple[Any, list[dict[str, Any]]] | None:
    """The body's value and its problems by this module's rule; None when it is not JSON at all."""
    try:
        try:
            value = json.loads(body, parse_constant=_Constant)
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                return None
            value = json.loads(body, parse_constant=_Constant, parse_int=_int)  # an int past int()'s limit
    except RecursionError:
        msg = f"the JSON is nested deeper than {MAX_DEPTH} levels of arrays and objects"
        return None, [{"loc": ["body"], "msg": msg, "type": "json_too_deep"}]
    except (ValueError, UnicodeDecodeError):
        return None
    return value, problems(value)


def problems(value: Any) -> list[dict[str, Any]]:
    """Every non-finite or out-of-range number, NUL character and too deep nesting, by path."""
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ("body",))]
    while stack and len(found) < MAX_ERRORS:
        node, path = stack.pop()
        if isinstance(node, dict | list):
            if len(path) > MAX_DEPTH:
                msg = f"the JSON is nested deeper than {MAX_DEPTH} levels of arrays and objects"
                found.append({"loc": list(path), "msg": msg, "type": "json_too_deep"})
                continue
            if isinstance(node, dict):
                for key, item in node.items():
                    if "\x00" in key or _SURROGATE.search(key):
                        found.append(_bad_text([*path, key], key))
                    stack.append((item, (*path, key)))
            else:
                stack.extend((item, (*path, i)) for i, item in enumerate(node))
        elif isinstance(node, str):
            if "\x00" in node or _SURROGATE.search(node):
                found.append(_bad_text(list(path), node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                found.append(_out_of_range(list(path), "a number"))
        elif isinstance(node, _Constant):
            msg = f"{node.text} is not a finite number (JSON has no {node.text}): send a number"
            found.append({"loc": list(path), "msg": msg, "type": "finite_number", "input": node.text})
        elif isinstance(node, _Huge) or (type(node) is int and node.bit_length() > 1024):  # ≥ 2**1024
            found.append(_out_of_range(list(path), "an integer"))
    found.sort(key=lambda e: [str(p) for p in e["loc"]])
    return found


def _out_of_range(loc: list[Any], what: str) -> dict[str, Any]:
    msg = f"{what} outside the 64-bit float range (about ±1.8e308) is not a finite number"
    return {"loc": loc, "msg": msg, "type": "finite_number"}


def _bad_text(loc: list[Any], text: str) -> dict[str, Any]:
    if "\x00" in text:
        return {"loc": loc, "msg": "text must not contain NUL (\\u0000) characters", "type": "string_nul"}
    msg = "text must be valid Unicode: a lone surrogate (\\ud800-\\udfff) is not a character"
    return {"loc": loc, "msg": msg, "type": "string_unicode"}


class InvalidJson(HTTPException):
    """Raised from `receive` when the body breaks the rule. An HTTPException, as BodyTooLarge
    (api/body_limit.py) is, because FastAPI re-raises only HTTPException from its body parsing;
    its handler renders the 422 envelope."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(422, validation_detail(errors))
        self.errors = errors


async def _handle_invalid_json(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidJson)
    return error_response(422, "ValidationError", str(exc.detail), errors=exc.errors)


class JsonGuardMiddleware:
    """Checks a JSON body when the route reads it (after routing, so the request is logged and
    measured under its route): the whole body is read at the first `receive`, then given to
    the route at once, or refused with InvalidJson."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not _is_json(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        checked = False

        async def checked_receive() -> Message:
            nonlocal checked
            if checked:
                return await receive()
            checked = True
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client left
                    return message
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            decoded = decode(body) if body.strip() else None
            if decoded is not None and decoded[1]:
                raise InvalidJson(decoded[1])
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, checked_receive, send)


def install_json_guard(app: FastAPI) -> None:
    """Before install_body_limit: the body limit must be the outer middleware."""
    app.add_exception_handler(InvalidJson, _handle_invalid_json)
    app.add_middleware(JsonGuardMiddleware)
