"""What the client hands back: an `Experiment`, a `Sweep`, a `Dataset`. Each holds the
service's JSON as `.data` (the contract in the README) and the client that made it; its methods
are the resource's own endpoints."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from labtrain._frames import encode_rows, flatten_prediction, frame
from labtrain._http import Event
from labtrain.errors import LabtrainError, ServiceUnreachable, StreamLost, WaitTimeout

if TYPE_CHECKING:
    import pandas as pd

    from labtrain.client import Client

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "diverged", "pruned"})
SWEEP_ENDED = frozenset({"finished", "cancelled"})
MAX_UNREACHABLE = 30  # polls in a row without an answer (the API restarting) before waiting gives up


class _Unset:
    """The default of an argument whose None means something (`update(notes=None)` removes them)."""


UNSET = _Unset()


class _Resource:
    _path = ""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def name(self) -> str:
        return str(self.data.get("name", ""))

    def refresh(self) -> Self:
        """Read it again from the service; returns itself, updated."""
        self.data = self.client.transport.json("GET", f"{self._path}/{self.id}")
        return self

    @property
    def tags(self) -> list[str]:
        return list(self.data.get("tags") or [])

    @property
    def notes(self) -> str | None:
        return self.data.get("notes")

    def update(self, *, tags: list[str] | None = None, notes: str | None | _Unset = UNSET) -> Self:
        """Replace its tags (all of them: `[]` removes every tag) and/or its notes (`None` removes
        them) with `PATCH`; what is not given stays. Returns itself, updated."""
        body: dict[str, Any] = {}
        if tags is not None:
            body["tags"] = list(tags)
        if not isinstance(notes, _Unset):
            body["notes"] = notes
        self.data = self.client.transport.json("PATCH", f"{self._path}/{self.id}", json=body)
        return self

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        status = f" {self.data['status']}" if "status" in self.data else ""
        return f"<{type(self).__name__} {self.id} {self.name!r}{status}>"


class Experiment(_Resource):
    """One training run (`GET /experiments/{id}`)."""

    _path = "/experiments"
    _targets: list[str] | None = None

    @property
    def status(self) -> str:
        """The status as last read (`refresh()` reads it again)."""
        return str(self.data["status"])

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def wait(
        self,
        timeout: float | None = None,
        on_event: Callable[[Event], None] | None = None,
        poll_interval: float = 1.0,
    ) -> Experiment:
        """Wait until the run ends and return it refreshed. Follows the event stream
        (`on_event` sees every epoch and status event); when the stream cannot be followed it
        polls instead. Raises WaitTimeout after `timeout` seconds (the run goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.refresh().done:
            try:
                for event in self.client.events(self.id, deadline=deadline):
                    if on_event is not None:
                        on_event(event)
            except StreamLost:
                self._poll(deadline, poll_interval)
        self.refresh()
        if deadline is not None and not self.done:  # a stream that ended early, then a slow refresh
            self._poll(deadline, poll_interval)
        return self

    def _poll(self, deadline: float | None, interval: float) -> None:
        while not self.refresh().done:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"experiment {self.id} is still {self.status}")
            time.sleep(interval)

    def metrics(self) -> pd.DataFrame:
        """Every finished epoch: one row per epoch, columns `epoch`, `train_loss`, `val_loss`,
        the validation metrics, `seconds`."""
        epochs = self.client.transport.json("GET", f"/experiments/{self.id}/metrics")["epochs"]
        return frame(epochs, None if epochs else ["epoch"])

    def predict(self, rows: Any) -> pd.DataFrame:
        """Predictions for `rows` (a DataFrame, a list of dicts keyed by feature, or a 2-D array
        in feature order), one row each in the dataset's units: `label` and `p_<i>`, `value`,
        or `mu` and `sigma` (two targets: `digit.label`...). A DataFrame keeps its index; a
        column that is the dataset's target (and not a feature) is left out."""
        sent, _, index = encode_rows(rows, self.target_columns() if _named(rows) else ())
        return frame([flatten_prediction(p) for p in self.predictions(sent)], index=index)

    def predictions(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """`POST /experiments/{id}/predictions` as JSON: one answer per input row."""
        body = self.client.transport.json("POST", f"/experiments/{self.id}/predictions", json={"inputs": inputs})
        return list(body["predictions"])

    def dataset(self) -> Dataset:
        """The dataset it trained on (a built-in or an upload)."""
        source = self.data["spec"]["dataset"]
        return self.client.dataset(source.get("id") or source["name"])

    def target_columns(self) -> list[str]:
        """The names of the dataset's targets that are not also its features (read once)."""
        if self._targets is None:
            info = self.dataset()
            self._targets = [t for t in info.targets if t not in info.features]
        return list(self._targets)

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Evaluate the served model on its `test` (counted) or `val` split: the metrics."""
        body = self.client.transport.json("POST", f"/experiments/{self.id}/evaluations", json={"split": split})
        return dict(body["metrics"])

    def evaluations(self) -> list[dict[str, Any]]:
        """Its recorded evaluations, oldest first."""
        return list(self.client.transport.json("GET", f"/experiments/{self.id}/evaluations")["items"])

    def model_bytes(self) -> bytes:
        """The served model's file (safetensors with the spec and normalization statistics)."""
        return self.client.transport.request("GET", f"/experiments/{self.id}/model").content

    def download(self, path: str | Path | None = None) -> Path:
        """Write the model file to `path` (a folder gets `<id>.safetensors`); returns the file."""
        target = Path(path) if path is not None else Path(f"{self.id}.safetensors")
        if target.is_dir():
            target = target / f"{self.id}.safetensors"
        target.write_bytes(self.model_bytes())
        return target

    def predictor(self) -> Any:
        """The downloaded model as a local predictor (`.predict(rows)`), with no service
        involved. Needs labtrain's training side (PyTorch): the service's package."""
        try:  # by name: the client distribution has no `ml`, and type-checks without it
            load_predictor = importlib.import_module("ml.predict").load_predictor
        except ImportError as exc:
            raise ImportError(
                "Experiment.predictor() runs the model locally and needs PyTorch and labtrain's `ml` package "
                f"(install the service's distribution); without them use Experiment.predict(). ({exc})"
            ) from None
        return load_predictor(self.model_bytes())

    def plot(self, kind: str = "learning-curves", path: str | Path | None = None, **params: Any) -> bytes:
        """A plot as PNG bytes (`learning-curves`, `decision-boundary`, `sigma`, `confusion`),
        also written to `path` when given. `params` are the plot's query options (`feature=`)."""
        response = self.client.transport.request("GET", f"/experiments/{self.id}/plots/{kind}.png",
                                                 params={k: v for k, v in params.items() if v is not None})  # fmt: skip
        return _png(response.content, path, f"{kind} of {self.id}")

    def cancel(self) -> Experiment:
        """Cancel it (at once if queued, at the next epoch boundary if running)."""
        self.data = self.client.transport.json("POST", f"/experiments/{self.id}/cancel")
        return self


class Sweep(_Resource):
    """A sweep (`GET /sweeps/{id}`): its members counted by status, and their ids."""

    _path = "/sweeps"

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def done(self) -> bool:
        counts = self.data.get("counts", {})
        return self.status in SWEEP_ENDED and not ({"queued", "running"} & set(counts))

    def wait(
        self,
        timeout: float | None = None,
        on_progress: Callable[[Sweep], None] | None = None,
        poll_interval: float = 1.0,
    ) -> Sweep:
        """Poll until no member is queued or running; returns the sweep refreshed. An API that
        restarts meanwhile is waited for (the sweep goes on without it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable = 0
        while True:
            try:
                self.refresh()
                unreachable = 0
            except ServiceUnreachable:
                unreachable += 1
                if unreachable > MAX_UNREACHABLE:
                    raise
                time.sleep(poll_interval)
                continue
            if on_progress is not None:
                on_progress(self)
            if not {"queued", "running"} & set(self.data["counts"]):
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"sweep {self.id} is still running: {self.data['counts']}")
            time.sleep(poll_interval)

    def table_data(self, fmt: str = "json") -> Any:
        """`GET /sweeps/{id}/table`: the JSON table, or the text of `csv` / `markdown`."""
        response = self.client.transport.request("GET", f"/sweeps/{self.id}/table", params={"format": fmt})
        return response.json() if fmt == "json" else response.text

    def table(self) -> pd.DataFrame:
        """The study table, one row per sweep row: name, opt, lr, bs, ep, hidlay, neur, act,
        loss, par, the validation metric (mean and std over repeats), status, best."""
        data = self.table_data()
        rows = data["rows"]
        columns = list(dict.fromkeys([*data["columns"], *(k for row in rows for k in row)]))
        return frame(rows, columns)

    def experiments(self) -> list[Experiment]:
        """Its members, in sweep order."""
        order = {eid: i for i, eid in enumerate(self.data["experiment_ids"])}
        members = list(self.client.experiments(sweep=self.id))
        return sorted(members, key=lambda e: order.get(e.id, len(order)))

    def plot(self, path: str | Path | None = None, **params: Any) -> bytes:
        """The compare plot (validation metric against the swept parameter) as PNG bytes."""
        response = self.client.transport.request("GET", f"/sweeps/{self.id}/plots/compare.png",
                                                 params={k: v for k, v in params.items() if v is not None})  # fmt: skip
        return _png(response.content, path, f"compare plot of {self.id}")

    def cancel(self) -> Sweep:
        """Cancel every member not yet ended."""
        self.data = self.client.transport.json("POST", f"/sweeps/{self.id}/cancel")
        return self


class Dataset(_Resource):
    """A built-in (by name) or an upload (by id and name), with its schema."""

    _path = "/datasets"

    @property
    def id(self) -> str:
        return str(self.data.get("id") or self.data["name"])

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def features(self) -> list[str]:
        return list(self.data["features"])

    @property
    def targets(self) -> dict[str, list[str] | None]:
        return dict(self.data["targets"])

    @property
    def spec(self) -> dict[str, str]:
        """What a spec's `dataset` names it by: `{"id": ...}` for an upload, `{"name": ...}` else."""
        return {"id": self.data["id"]} if self.data.get("id") else {"name": self.data["name"]}

    def delete(self) -> None:
        """Delete this upload (409 while a queued or running experiment trains on it)."""
        self.client.transport.request("DELETE", f"/datasets/{self.id}")


def _named(rows: Any) -> bool:
    """Rows whose columns are named (a DataFrame or dicts): a target column can be recognized."""
    from labtrain._frames import is_dataframe

    if is_dataframe(rows):
        return any(isinstance(c, str) for c in rows.columns)
    return isinstance(rows, list) and bool(rows) and isinstance(rows[0], dict)


def _png(content: bytes, path: str | Path | None, what: str) -> bytes:
    if not content.startswith(b"\x89PNG"):
        raise LabtrainError(f"the {what} is not a PNG")
    if path is not None:
        Path(path).write_bytes(content)
    return content


def pages(fetch: Callable[[str | None], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every item of a cursor-paginated list, a page fetched at a time."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return
