"""`labtrain.Client`: the service from a script or a notebook.

from labtrain import Client

client = Client()  # LABTRAIN_URL, else LABTRAIN_HOST/LABTRAIN_PORT; LABTRAIN_API_KEY
run = client.submit("examples/model22.yaml").wait()
run.metrics()  # a DataFrame, one row per epoch
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from labtrain._frames import is_dataframe
from labtrain._http import Event, Transport, default_api_key, default_url
from labtrain.errors import ServiceUnreachable, SpecFileError, StreamLost, WaitTimeout
from labtrain.resources import TERMINAL, Dataset, Experiment, Sweep, pages

if TYPE_CHECKING:
    import pandas as pd

RECONNECT_TRIES = 30  # connections in a row without an event before a stream counts as lost
RECONNECT_DELAY = 1.0  # seconds, doubled after each failed attempt up to RECONNECT_DELAY_MAX
RECONNECT_DELAY_MAX = 5.0

Spec = Mapping[str, Any] | str | Path | Any  # a dict, a .json/.yaml file, or the pydantic ExperimentSpec


class Client:
    """A labtrain service. `url` defaults to `LABTRAIN_URL`, else `http://LABTRAIN_HOST:LABTRAIN_PORT`
    (127.0.0.1:8000, where `labtrain up` listens); `api_key` to `LABTRAIN_API_KEY`, sent as
    `Authorization: Bearer <key>`. Refusals raise `labtrain.APIError` subclasses; 429 and 503
    are retried after their Retry-After, up to `max_retries` times and never waiting more than
    `max_retry_wait` seconds at once (a longer Retry-After is raised, in `APIError.retry_after`).
    `http` hands in an httpx.Client of your own (its base URL, headers, proxies), left open on close."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        key = api_key if api_key is not None else default_api_key()
        base = url or ("" if http is not None else default_url())
        self.transport = Transport(base, key, timeout, max_retries, max_retry_wait, transport, http)

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def http(self) -> httpx.Client:
        """The underlying httpx client (base URL and key set), for endpoints without a method here."""
        return self.transport.http

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<labtrain.Client {self.url}>"

    # -- experiments -------------------------------------------------------------------------

    def submit(self, spec: Spec, *, idempotency_key: str | None = None) -> Experiment:
        """Submit an experiment spec: a dict, a path to a .json/.yaml file, or a pydantic spec.
        Every submission carries an Idempotency-Key (a fresh one unless given), so a retried
        request never queues the experiment twice."""
        body = spec_body(spec)
        headers = {"Idempotency-Key": idempotency_key or f"labtrain-client-{uuid.uuid4().hex}"}
        return Experiment(self, self.transport.json("POST", "/experiments", json=body, headers=headers))

    def experiment(self, experiment_id: str) -> Experiment:
        """An experiment by id."""
        return Experiment(self, self.transport.json("GET", f"/experiments/{experiment_id}"))

    def experiments(
        self,
        status: str | None = None,
        sweep: str | None = None,
        tag: str | list[str] | None = None,
        page_size: int = 100,
    ) -> Iterator[Experiment]:
        """Every experiment, newest first, fetched a page at a time; only those in `status`, of
        `sweep` (its id), or carrying `tag` (every one of a list): its own tag or its sweep's,
        filtered by the service (`?tag=`)."""
        params: dict[str, Any] = {"limit": page_size}
        params |= {"status": status} if status else {}
        params |= {"sweep_id": sweep} if sweep else {}
        params |= {"tag": [tag] if isinstance(tag, str) else list(tag)} if tag else {}

        def fetch(cursor: str | None) -> dict[str, Any]:
            page = params | ({"cursor": cursor} if cursor else {})
            return dict(self.transport.json("GET", "/experiments", params=page))

        for item in pages(fetch):
            yield Experiment(self, item)

    def events(
        self,
        experiment_id: str,
        *,
        on_reconnect: Callable[[int, str], None] | None = None,
        deadline: float | None = None,
    ) -> Iterator[Event]:
        """Follow `GET /experiments/{id}/events` until a terminal status event: `epoch` and
        `status` events. A dropped connection is opened again with the last epoch's id as
        Last-Event-ID, so no epoch is seen twice or missed (`on_reconnect(attempt, reason)` is
        told first); after RECONNECT_TRIES failures in a row it raises StreamLost. A service
        that never answered raises ServiceUnreachable at once. `deadline` (time.monotonic())
        raises WaitTimeout once passed."""
        last_epoch: int | None = None
        connected = False
        failures = 0
        delay = RECONNECT_DELAY
        while True:
            read_timeout = None if deadline is None else max(deadline - time.monotonic(), 0.05)
            reason = "the stream ended before the run did"
            try:
                for event in self.transport.stream_events(f"/experiments/{experiment_id}/events", last_epoch,
                                                          read_timeout):  # fmt: skip
                    connected = True
                    failures, delay = 0, RECONNECT_DELAY
                    if event.kind not in ("epoch", "status"):
                        continue
                    if event.kind == "epoch":
                        last_epoch = int(event.data.get("epoch", event.id or 0))
                    yield event
                    if event.kind == "status" and event.data.get("status") in TERMINAL:
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WaitTimeout(f"experiment {experiment_id} has not ended")
                connected = True
            except httpx.TransportError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"experiment {experiment_id} has not ended") from exc
                if not connected:
                    raise self.transport.unreachable(exc) from exc
                reason = f"connection lost ({type(exc).__name__})"
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"experiment {experiment_id} has not ended")
            failures += 1
            if failures > RECONNECT_TRIES:
                raise StreamLost(f"the event stream of {experiment_id} was lost {failures - 1} times: {reason}")
            if on_reconnect is not None:
                on_reconnect(failures, reason)
            time.sleep(delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    # -- sweeps ------------------------------------------------------------------------------

    def submit_sweep(self, body: Mapping[str, Any] | str | Path, *, idempotency_key: str | None = None) -> Sweep:
        """Submit a sweep: `base` (a spec) and one of `variants`, `grid`, `random`, `tpe`, with
        optional `repeats`; a dict or a .json/.yaml file."""
        payload = spec_body(body)
        headers = {"Idempotency-Key": idempotency_key or f"labtrain-client-{uuid.uuid4().hex}"}
        return Sweep(self, self.transport.json("POST", "/sweeps", json=payload, headers=headers))

    def sweep(self, sweep_id: str) -> Sweep:
        return Sweep(self, self.transport.json("GET", f"/sweeps/{sweep_id}"))

    def sweeps(self, tag: str | list[str] | None = None, page_size: int = 100) -> Iterator[Sweep]:
        """Every sweep, newest first; only those carrying `tag` (every one of a list)."""
        tags = {"tag": [tag] if isinstance(tag, str) else list(tag)} if tag else {}

        def fetch(cursor: str | None) -> dict[str, Any]:
            params: dict[str, Any] = {"limit": page_size} | tags | ({"cursor": cursor} if cursor else {})
            return dict(self.transport.json("GET", "/sweeps", params=params))

        for item in pages(fetch):
            yield Sweep(self, item)

    # -- datasets ----------------------------------------------------------------------------

    def datasets(self) -> list[Dataset]:
        """The built-ins, then your uploads (newest first), each with its schema."""
        return [Dataset(self, d) for d in self.transport.json("GET", "/datasets")["items"]]

    def dataset(self, name_or_id: str) -> Dataset:
        return Dataset(self, self.transport.json("GET", f"/datasets/{name_or_id}"))

    def upload(
        self,
        data: pd.DataFrame | str | Path,
        target: str | None = None,
        name: str | None = None,
        format: str | None = None,  # noqa: A002
    ) -> Dataset:
        """Upload a dataset: a DataFrame (sent as CSV; `target` names the column to predict) or
        a file (.csv with `target`, or .npz with arrays `x` and `y`). `name` defaults to the
        file's name; use the returned `Dataset.spec` as a spec's `dataset`."""
        if is_dataframe(data):
            content = data.to_csv(index=False).encode()  # type: ignore[union-attr]
            filename = f"{name or 'dataframe'}.csv"
            format = format or "csv"
        else:
            path = Path(data)
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise SpecFileError(f"cannot read {path}: {exc.strerror}") from exc
            filename = path.name
        form = {k: v for k, v in {"target": target, "name": name, "format": format}.items() if v is not None}
        response = self.transport.json("POST", "/datasets", files={"file": (filename, content)}, data=form)
        return Dataset(self, response)

    # -- the service -------------------------------------------------------------------------

    def health(self) -> bool:
        """Whether the API answers `GET /healthz`."""
        try:
            self.transport.request("GET", "/healthz")
        except ServiceUnreachable:
            return False
        return True


def spec_body(spec: Spec) -> dict[str, Any]:
    """The JSON body of a spec or sweep given as a mapping, a file path, or a pydantic model."""
    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, str | Path):
        return read_spec_file(Path(spec))
    if hasattr(spec, "model_dump"):  # the pydantic ExperimentSpec, recognized without importing it
        dumped = spec.model_dump(mode="json", exclude_unset=True)
        if isinstance(dumped, dict):
            return dumped
    raise TypeError(f"a spec is a dict, a .json/.yaml path or a pydantic model, not {type(spec).__name__}")


def read_spec_file(path: Path) -> dict[str, Any]:
    """A spec or sweep file: JSON (.json) or YAML (.yaml, .yml), a mapping."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SpecFileError(f"{path}: expected a .json, .yaml, .yml file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror}") from exc
    if suffix == ".json":
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise SpecFileError(f"{path}: not valid JSON: {' '.join(str(exc).split())}") from exc
    else:
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError("a YAML spec needs PyYAML (pip install 'labtrain-client[yaml]')") from None
        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecFileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(body, dict):
        raise SpecFileError(f"{path}: a spec is a mapping of fields (dataset, model, loss, ...)")
    return body
