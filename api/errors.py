"""Domain errors carry their HTTP status; one renderer writes every error as
`{"error": "ExperimentNotFound", "detail": "..."}` (422 adds FastAPI's `errors` field list)."""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ml.spec import SpecInvalid


class DomainError(Exception):
    """An expected failure of a use case; subclasses set the status and name the error."""

    status_code = 400

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def error(self) -> str:
        return type(self).__name__


class ExperimentNotFound(DomainError):
    status_code = 404


class ExperimentFinished(DomainError):
    status_code = 409


class IdempotencyKeyReused(DomainError):
    status_code = 409


class InvalidCursor(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401


class ExperimentNotFinished(DomainError):
    """Predictions, evaluations and the model need a succeeded experiment; `status` says where it is."""

    status_code = 409


class DatasetUnavailable(DomainError):
    """The experiment's dataset (an upload) cannot be loaded again to evaluate on it."""

    status_code = 409


class ModelUnavailable(DomainError):
    """The stored model of a succeeded experiment cannot be read by this API process."""

    status_code = 503


class InvalidInputs(DomainError):
    """Prediction inputs or an evaluation request that do not fit the model; rendered like every
    422: `error` "ValidationError" and FastAPI's `errors` list (`loc`, `msg`, `type`)."""

    status_code = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(validation_detail(errors), errors=errors)

    @property
    def error(self) -> str:
        return "ValidationError"


class SweepNotFound(DomainError):
    status_code = 404


class SweepFinished(DomainError):
    """Every member of the sweep already ended: there is nothing left to cancel."""

    status_code = 409


class BrokerUnavailable(DomainError):
    status_code = 503


class NotReady(DomainError):
    status_code = 503


class DatasetNotFound(DomainError):
    status_code = 404


class DatasetInUse(DomainError):
    """A queued or running experiment trains on the upload: it cannot be deleted yet."""

    status_code = 409


class DatasetNameTaken(DomainError):
    status_code = 409


class DatasetReadOnly(DomainError):
    """Built-in datasets are part of labtrain: they cannot be deleted."""

    status_code = 409


class DatasetInvalid(InvalidInputs):
    """An upload refused: not multipart, a field missing, or a file that is not a usable dataset."""


class UploadTooLarge(DomainError):
    status_code = 413


class TooManyQueued(DomainError):
    """The owner has too many experiments queued; `Retry-After` says when to try again."""

    status_code = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


# An error names what it refuses with at most an excerpt of it: a 10 MB name is not sent back.
EXCERPT_CHARS = 200  # of an echoed value (`input`, an item of `loc`)
MSG_CHARS = 400  # of one message: its own words and an excerpt of the value it quotes
DETAIL_CHARS = 2000  # of `detail`, which joins up to five messages


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text`, or its first `limit` characters and how many there were; always encodable as
    UTF-8 (a lone surrogate becomes `?`)."""
    cut = text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
    return cut.encode("utf-8", "replace").decode("utf-8")


def _input_excerpt(value: Any) -> Any:
    """A JSON-safe value for an error's `input`: the value itself when short and finite, else
    an excerpt of its JSON (or repr) text. Bounded in time and depth whatever the value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else f"an integer of {value.bit_length():,} bits"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return excerpt(value)
    if isinstance(value, bytes):
        return excerpt(value[: EXCERPT_CHARS * 4].decode("utf-8", "replace"))
    try:
        text = json.dumps(value, allow_nan=False, default=str, ensure_ascii=False)
        text.encode("utf-8")  # a lone surrogate cannot be sent
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return excerpt(_REPR.repr(value))
    return value if len(text) <= EXCERPT_CHARS else excerpt(text)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, EXCERPT_CHARS, EXCERPT_CHARS


def bounded_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `errors` list safe to send: `loc` items, `msg` and `input` cut to excerpts."""
    out = []
    for e in errors[:100]:
        item: dict[str, Any] = {
            "loc": [p if isinstance(p, int) and not isinstance(p, bool) else excerpt(str(p)) for p in e.get("loc", ())],
            "msg": excerpt(str(e.get("msg", "")).removeprefix("Value error, "), MSG_CHARS),
            "type": str(e.get("type", "value_error")),
        }
        if "input" in e:
            item["input"] = _input_excerpt(e["input"])
        out.append(item)
    return out


def error_response(status: int, error: str, detail: str, /, **extra: Any) -> JSONResponse:
    """The one error envelope (positional parameters: an extra field may be called `status`).
    Every part that may quote the request is cut to an excerpt."""
    if isinstance(extra.get("errors"), list):
        extra["errors"] = bounded_errors(extra["errors"])
    body = {"error": error, "detail": excerpt(detail, DETAIL_CHARS), **jsonable_encoder(extra)}
    return JSONResponse(body, status_code=status)


def validation_detail(errors: list[dict[str, Any]]) -> str:
    """One line: the first five problems as `loc: msg`, each cut to an excerpt."""
    parts = [f"{excerpt('.'.join(str(p) for p in e['loc']))}: {excerpt(str(e['msg']), MSG_CHARS)}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else getattr(exc, "headers", None)
    response = error_response(exc.status_code, exc.error, exc.detail, **exc.extra)
    if headers:
        response.headers.update(headers)
    return response


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = bounded_errors(list(exc.errors()))
    return error_response(422, "ValidationError", validation_detail(errors), errors=errors)


async def _spec_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecInvalid)
    errors = bounded_errors([{**e, "loc": ["body", *e["loc"]]} for e in exc.errors])
    return error_response(422, "ValidationError", validation_detail(errors), errors=errors)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    names = {404: "NotFound", 405: "MethodNotAllowed", 401: "Unauthorized", 400: "BadRequest"}
    response = error_response(exc.status_code, names.get(exc.status_code, "HTTPError"), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(SpecInvalid, _spec_invalid)
    app.add_exception_handler(StarletteHTTPException, _http)


# -- plots and live progress -------------------------------------------------------------------


class PlotNotApplicable(DomainError):
    """The plot does not apply to this experiment (a decision boundary of images, σ of a
    classifier); rendered as a 422 whose `errors` locates the plot's kind in the path."""

    status_code = 422

    def __init__(self, detail: str, *, kind: str) -> None:
        super().__init__(detail, errors=[{"loc": ["path", "kind"], "msg": detail, "type": "plot_not_applicable"}])
        self.kind = kind


class PlotNotReady(DomainError):
    """Nothing to draw yet (no epoch finished, no sweep row measured); `status` says where it is."""

    status_code = 409


class InvalidLastEventId(DomainError):
    status_code = 400
