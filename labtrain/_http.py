"""The one HTTP layer of labtrain's clients (the Python client and the `labtrain` command):
where the service is, the API key, typed errors, bounded retries of 429/503, and Server-Sent
Events read from a streamed response.

The environment is read here and only here on the client side: a lab's notebook does not have
the service's settings module (and must not import it), so `LABTRAIN_URL`, `LABTRAIN_HOST`,
`LABTRAIN_PORT` and `LABTRAIN_API_KEY` are read the way `labtrain up` reads the first ones.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from labtrain.errors import APIError, LabtrainError, ServiceUnreachable, StreamLost, error_from

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRIES = 3  # attempts after the first for a 429 or 503
MAX_RETRY_WAIT = 30.0  # seconds: a longer Retry-After is not waited for, the error is raised with it


def default_url(environ: Mapping[str, str] | None = None) -> str:
    """`LABTRAIN_URL`, else `http://LABTRAIN_HOST:LABTRAIN_PORT` (127.0.0.1:8000 by default):
    where `labtrain up` listens. A wildcard listening address is reached on loopback."""
    env = os.environ if environ is None else environ
    url = env.get("LABTRAIN_URL", "").strip()
    if url:
        return normalize_url(url)
    host = env.get("LABTRAIN_HOST", "").strip() or DEFAULT_HOST
    port = env.get("LABTRAIN_PORT", "").strip() or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise LabtrainError(f"LABTRAIN_PORT={port!r} is not a port number (1-65535)")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{port}"


def normalize_url(url: str) -> str:
    """`host:port` gets `http://`; no trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def default_api_key(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("LABTRAIN_API_KEY", "").strip() or None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


@dataclass(frozen=True)
class Event:
    """One server-sent event: its kind (`epoch`, `status`; a sweep's `experiment`...), its
    integer id, and its JSON data."""

    kind: str
    id: int | None
    data: dict[str, Any]


class Transport:
    """An httpx client bound to the service, raising typed errors."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout: float,
        max_retries: int = MAX_RETRIES,
        max_retry_wait: float = MAX_RETRY_WAIT,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        from labtrain import __version__

        self.url = normalize_url(str(http.base_url) if http is not None and not url else url)
        headers = {"User-Agent": f"labtrain-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.owns_http = http is None  # a client handed in is its owner's to close
        if http is None:
            http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self.http = http
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    def close(self) -> None:
        if self.owns_http:
            self.http.close()

    def unreachable(self, exc: httpx.TransportError) -> ServiceUnreachable:
        if isinstance(exc, httpx.ConnectError):
            return ServiceUnreachable(f"cannot reach the service at {self.url} (is `labtrain up` running?)", self.url)
        return ServiceUnreachable(f"the service at {self.url} did not answer: {exc or type(exc).__name__}", self.url)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; 429 and 503 are retried after their Retry-After (at most
        `max_retries` times, never waiting more than `max_retry_wait` at once); any other
        error status raises its APIError, a transport failure ServiceUnreachable."""
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise self.unreachable(exc) from exc
            if response.status_code < 400:
                return response
            wait = retry_after(response)
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                delay = wait if wait is not None else 0.5 * 2**attempt
                if delay <= self.max_retry_wait:
                    attempt += 1
                    time.sleep(delay)
                    continue
            raise error_from(response, wait)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- Server-Sent Events ------------------------------------------------------------------

    def stream_events(self, path: str, last_event_id: int | None, read_timeout: float | None) -> Iterator[Event]:
        """One connection to an event stream, from after `last_event_id`. Raises APIError for an
        error status, StreamLost for an answer that is not an event stream, and lets transport
        errors through (the caller decides whether to reconnect)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from(response, retry_after(response))
            kind = response.headers.get("content-type", "")
            if not kind.startswith("text/event-stream"):
                raise StreamLost(f"GET {path} is not an event stream (content-type {kind!r})")
            yield from parse_sse(response.iter_lines())


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events with JSON object data from the lines of a text/event-stream; comments (pings) and
    events whose data is not a JSON object are skipped."""
    kind: str = ""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                event = _event(kind or "message", event_id, "\n".join(data))
                if event is not None:
                    yield event
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


def _event(kind: str, event_id: str | None, data: str) -> Event | None:
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


__all__ = ["APIError", "Event", "Transport", "default_api_key", "default_url", "parse_sse"]
