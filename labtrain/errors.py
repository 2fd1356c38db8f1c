"""What the client raises. Every refusal of the service is an `APIError` carrying what the
service said: `error` (its code, e.g. "ExperimentNotFound"), `status` (HTTP), `detail`, and for a
422 the `errors` list with each field path in `fields` ("model.neurons": the path as the spec
file spells it, without FastAPI's leading "body"). The subclass follows the HTTP status, so a
script can `except labtrain.NotFound:` or `except labtrain.ValidationError as exc: exc.fields`.
"""

from __future__ import annotations

from typing import Any

import httpx


class LabtrainError(Exception):
    """Anything the client raises on purpose."""


class ServiceUnreachable(LabtrainError):
    """No answer from the service: nothing listens at the URL, or the connection broke."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class SpecFileError(LabtrainError, ValueError):
    """A local file (a spec, a sweep, an upload) that cannot be read or parsed; nothing was sent."""


class StreamLost(LabtrainError):
    """An event stream that could not be followed to its end (`Experiment.wait` then polls)."""


class WaitTimeout(LabtrainError, TimeoutError):
    """`wait(timeout=...)` ran out before the run (or sweep) ended; it goes on in the service."""


class APIError(LabtrainError):
    """The service answered with an error status."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.errors = errors or []
        self.body = body
        self.retry_after = retry_after
        super().__init__(self.describe())

    @property
    def fields(self) -> list[str]:
        """The dotted path of each refused field, relative to what the caller sent."""
        return [_path(e) for e in self.errors if isinstance(e, dict)]

    def describe(self) -> str:
        """`Code: detail`, or for a 422 `Code: path: reason; path: reason`."""
        if self.errors:
            parts = [f"{_path(e) or '(body)'}: {e.get('msg', '')}" if isinstance(e, dict) else str(e)
                     for e in self.errors]  # fmt: skip
            return f"{self.error}: " + "; ".join(parts)
        return f"{self.error}: {self.detail}"


def _path(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", [])]
    if loc and loc[0] in ("body", "query", "path", "header"):  # the caller's own words: no location prefix
        loc = loc[1:]
    return ".".join(loc)


class BadRequest(APIError):
    """400: a request the service cannot use (a stale cursor, a bad Last-Event-ID)."""


class Unauthorized(APIError):
    """401: no API key, or one the service does not know (LABTRAIN_API_KEY)."""


class NotFound(APIError):
    """404: no such experiment, sweep or dataset (or another owner's)."""


class Conflict(APIError):
    """409: the resource is not in a state that allows it (not finished, already ended, in use)."""


class TooLarge(APIError):
    """413: a body or upload above the service's limit."""


class ValidationError(APIError):
    """422: the spec, the inputs or the form were refused; `fields` names each path."""


class RateLimited(APIError):
    """429: a queue limit; `retry_after` says when to try again."""


class Unavailable(APIError):
    """503: the broker or a stored model is unavailable for now."""


class ServerError(APIError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
}


def error_from(response: httpx.Response, retry_after: float | None = None) -> APIError:
    """The typed error of a refused response, read from the service's envelope
    (`{"error", "detail", "errors"}`); a body that is not one keeps an excerpt of its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    kind = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else APIError)
    if isinstance(body, dict) and "error" in body:
        errors = body.get("errors")
        detail = body.get("detail", "")
        return kind(response.status_code, str(body["error"]), detail if isinstance(detail, str) else str(detail),
                    errors if isinstance(errors, list) else None, body, retry_after)  # fmt: skip
    text = " ".join(response.text.split())[:300] or response.reason_phrase
    return kind(response.status_code, f"HTTP {response.status_code}", text, None, body, retry_after)
