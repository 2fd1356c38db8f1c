"""The HTTP client of the `labtrain` commands: the service's URL and API key, one readable line
for every refusal, and the experiment's event stream (SSE) followed across dropped connections.

Only HTTP: nothing here imports the service's code. Every failure is a `ServiceError` whose
message is the line the user sees after `error: ` (exit code 1), or a `LocalError` (exit 2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from httpx_sse import SSEError, connect_sse

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "diverged"})
RECONNECT_TRIES = 30  # connection attempts in a row without an event before `watch` gives up
RECONNECT_DELAY = 1.0  # seconds, doubled after each failed attempt up to RECONNECT_DELAY_MAX
RECONNECT_DELAY_MAX = 5.0

UrlOption = Annotated[str, typer.Option("--url", envvar="LABTRAIN_URL", help="The service.")]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="LABTRAIN_API_KEY", help="API key (sent as a Bearer token).")
]


class ServiceError(Exception):
    """The service refused a request, or could not be reached; the message is one line."""

    exit_code = 1


class LocalError(Exception):
    """A usage or local file problem found before anything was sent."""

    exit_code = 2


def describe_error(response: httpx.Response) -> str:
    """`Name: detail` from the error envelope; a 422 lists each field path with its reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        text = " ".join(response.text.split())[:300] or response.reason_phrase
        return f"HTTP {response.status_code}: {text}"
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return f"{body['error']}: " + "; ".join(_field_error(e) for e in errors)
    return f"{body['error']}: {body.get('detail', '')}"


def _field_error(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    loc = [str(part) for part in error.get("loc", [])]
    if loc and loc[0] == "body":  # the user wrote the body: paths are relative to their file
        loc = loc[1:]
    return f"{'.'.join(loc) or '(body)'}: {error.get('msg', '')}"


@dataclass(frozen=True)
class Event:
    """One server-sent event: `epoch` or `status`, with its integer id and JSON data."""

    kind: str
    id: int | None
    data: dict[str, Any]


class Client:
    """A service at `url`, with an optional API key; every method raises ServiceError on refusal."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def unreachable(self, exc: httpx.TransportError) -> ServiceError:
        if isinstance(exc, httpx.ConnectError):
            return ServiceError(f"cannot reach the service at {self.url} (is `labtrain up` running?)")
        return ServiceError(f"the service at {self.url} did not answer: {exc or type(exc).__name__}")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; a 4xx/5xx or a transport failure becomes a ServiceError."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        if response.status_code >= 400:
            raise ServiceError(describe_error(response))
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def text(self, path: str, **kwargs: Any) -> str:
        return self.request("GET", path, **kwargs).text

    def png(self, path: str, **kwargs: Any) -> bytes:
        response = self.request("GET", path, **kwargs)
        if not response.content.startswith(b"\x89PNG"):
            raise ServiceError(f"GET {path} answered {response.headers.get('content-type')!r}, not a PNG")
        return response.content

    # -- the event stream -----------------------------------------------------------------------

    def events(self, experiment_id: str, on_reconnect: Callable[[int, str], None] | None = None) -> Iterator[Event]:
        """Follow `GET /experiments/{id}/events` until a terminal status event.

        A dropped connection (or a stream that ends before a terminal status) is opened again
        with `Last-Event-ID: <last epoch seen>`, so no epoch is shown twice or missed;
        `on_reconnect(attempt, reason)` is told before each new attempt.
        """
        last_epoch: int | None = None
        connected = False  # a service that never answered is reported at once, not retried
        failures = 0
        delay = RECONNECT_DELAY
        while True:
            headers = {"Last-Event-ID": str(last_epoch)} if last_epoch is not None else {}
            reason = "the stream ended before the run did"
            try:
                # No read timeout: an epoch of a large model may take minutes between two events.
                timeout = httpx.Timeout(10.0, read=None)
                with connect_sse(
                    self.http, "GET", f"/experiments/{experiment_id}/events", headers=headers, timeout=timeout
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise ServiceError(describe_error(source.response))
                    connected = True
                    for sse in source.iter_sse():
                        failures, delay = 0, RECONNECT_DELAY
                        event = _parse(sse.event, sse.id, sse.data)
                        if event is None:
                            continue
                        if event.kind == "epoch":
                            last_epoch = int(event.data.get("epoch", event.id or 0))
                        yield event
                        if event.kind == "status" and event.data.get("status") in TERMINAL:
                            return
            except httpx.TransportError as exc:
                if not connected:
                    raise self.unreachable(exc) from exc
                reason = f"connection lost ({type(exc).__name__})"
            except SSEError as exc:
                raise ServiceError(f"GET /experiments/{experiment_id}/events is not an event stream: {exc}") from exc
            failures += 1
            if failures > RECONNECT_TRIES:
                raise ServiceError(f"the event stream of {experiment_id} was lost {failures - 1} times: {reason}")
            if on_reconnect is not None:
                on_reconnect(failures, reason)
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)


def _parse(kind: str, event_id: str | None, data: str) -> Event | None:
    """An `epoch` or `status` event with JSON data; anything else (comments, pings) is skipped."""
    if kind not in ("epoch", "status"):
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    try:
        number = int(event_id) if event_id else None
    except ValueError:
        number = None
    return Event(kind, number, payload)
