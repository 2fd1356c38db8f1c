"""Uploaded datasets through the real API, trained by real workers: a CSV trains and predicts by
feature name, an NPZ of images trains, a sweep groups only members of one upload; every bad
upload is refused naming the column or array; delete waits for the experiments on it; and
another owner's upload does not exist for you."""

from __future__ import annotations

import io
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Stack, api_process, wait_for

pytestmark = pytest.mark.integration


def csv_bytes(n: int = 200, seed: int = 0) -> bytes:
    """Two numeric features; the label says which side of width + height = 0 a row is on."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    label = (x[:, 0] + x[:, 1] > 0).astype(int)
    rows = "".join(f"{a:.4f},{b:.4f},{t}\n" for (a, b), t in zip(x, label, strict=True))
    return ("width,height,label\n" + rows).encode()


def npz_bytes(**arrays: Any) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def images(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6, 6) gray images of three classes: a bright row at the top, the middle or the bottom."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.uniform(0, 0.2, size=(n, 6, 6)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, 1 + 2 * label, :] += 1.0
    return x, y


def upload(client: httpx.Client, content: bytes, filename: str, **fields: str) -> httpx.Response:
    return client.post("/datasets", files={"file": (filename, content)}, data=fields)


def uploaded(client: httpx.Client, content: bytes, filename: str, **fields: str) -> dict[str, Any]:
    response = upload(client, content, filename, name=f"{Path(filename).stem}-{secrets.token_hex(3)}", **fields)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/datasets/{response.json()['id']}"
    return response.json()


def on_upload(dataset_id: str, name: str, epochs: int = 40, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "dataset": {"id": dataset_id},
        "model": {"type": "mlp", "hidden_layers": 1, "neurons": 8},
        "optimizer": {"name": "adam", "lr": 0.05},
        "batch_size": 32,
        "epochs": epochs,
    }
    return spec | overrides


@pytest.mark.timeout(120)
def test_an_uploaded_csv_trains_predicts_by_feature_name_and_is_deleted_after(stack: Stack) -> None:
    data = uploaded(stack.client, csv_bytes(), "shapes.csv", target="label")
    assert data["kind"] == "upload"
    assert data["format"] == "csv"
    assert (data["task"], data["input_shape"], data["features"]) == ("binary", [2], ["width", "height"])
    assert data["targets"] == {"label": ["0", "1"]}
    assert data["sizes"] == {"train": 120, "val": 40, "test": 40}
    assert stack.client.get(f"/datasets/{data['id']}").json() == data
    listed = stack.client.get("/datasets").json()["items"]
    assert data in listed
    spirals = next(d for d in listed if d["name"] == "spirals")
    assert spirals["kind"] == "builtin"
    assert spirals["sizes"] == {"train": 600, "val": 200, "test": 200}
    assert stack.client.get("/datasets/house_prices").json()["features"][0] == "Lot_Area"

    created = stack.submit(on_upload(data["id"], "on-csv"))
    assert created["task"] == "binary"
    assert created["param_count"] == 2 * 8 + 8 + 8 + 1
    assert created["spec"]["dataset"]["id"] == data["id"]
    exp = stack.wait_terminal(created["id"])
    assert exp["status"] == "succeeded", exp["error"]
    assert exp["metrics"]["best"]["val_accuracy"] > 0.85

    inputs = [{"width": 2.0, "height": 1.5}, {"height": -2.0, "width": -1.0}, [3.0, 2.0]]
    response = stack.client.post(f"/experiments/{created['id']}/predictions", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == [1, 0, 1]
    missing = stack.client.post(f"/experiments/{created['id']}/predictions", json={"inputs": [{"width": 1.0}]})
    assert missing.status_code == 422
    assert "height" in missing.json()["detail"]
    evaluation = stack.client.post(f"/experiments/{created['id']}/evaluations", json={"split": "test"})
    assert evaluation.status_code == 201, evaluation.text
    assert evaluation.json()["metrics"]["rows"] == 40

    # Finished experiments do not hold the upload: it can go, and their models stay servable.
    assert stack.client.delete(f"/datasets/{data['id']}").status_code == 204
    assert stack.client.get(f"/datasets/{data['id']}").status_code == 404
    response = stack.client.post(f"/experiments/{created['id']}/predictions", json={"inputs": inputs[:1]})
    assert response.status_code == 200
    gone = stack.client.post(f"/experiments/{created['id']}/evaluations", json={"split": "val"})
    assert (gone.status_code, gone.json()["error"]) == (409, "DatasetUnavailable")


@pytest.mark.timeout(120)
def test_an_uploaded_npz_of_images_trains(stack: Stack) -> None:
    x, y = images()
    data = uploaded(stack.client, npz_bytes(x=x, y=y), "rows.npz")
    assert (data["format"], data["task"], data["input_shape"]) == ("npz", "multiclass", [1, 6, 6])
    assert data["targets"] == {"y": ["0", "1", "2"]}
    model = {"type": "cnn", "conv_layers": 1, "filters": 4, "kernel_size": 3, "hidden_layers": 0}
    created = stack.submit(on_upload(data["id"], "on-npz", epochs=30, model=model))
    assert created["param_count"] == (9 + 1) * 4 + (4 * 4 * 4 + 1) * 3
    exp = stack.wait_terminal(created["id"])
    assert exp["status"] == "succeeded", exp["error"]
    assert exp["metrics"]["best"]["val_accuracy"] > 0.8
    image = (np.eye(6)[3] * np.ones((6, 6))).T.tolist()  # bright middle row: class 1
    response = stack.client.post(f"/experiments/{created['id']}/predictions", json={"inputs": [image]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == 1


@pytest.mark.timeout(150)
def test_a_sweep_over_two_uploads_groups_only_members_of_one_upload(stack: Stack) -> None:
    first = uploaded(stack.client, csv_bytes(seed=1), "first.csv", target="label")
    second = uploaded(stack.client, csv_bytes(seed=2), "second.csv", target="label")
    request = {
        "name": "two-uploads",
        "base": on_upload(first["id"], "base", epochs=10),
        "grid": {"dataset.id": [first["id"], second["id"]]},
        "repeats": 2,
    }
    response = stack.client.post("/sweeps", json=request)
    assert response.status_code == 202, response.text
    sweep = response.json()
    by_row: dict[int, set[str]] = {}
    for m in sweep["members"]:
        by_row.setdefault(m["row"], set()).add(m["experiment_id"])
    assert len(by_row) == 2

    def finished() -> dict[str, Any] | None:
        s = stack.client.get(f"/sweeps/{sweep['id']}").json()
        return s if s["status"] == "finished" else None

    done = wait_for(finished, 120, interval=0.2, what="the sweep to finish")
    assert done["counts"] == {"succeeded": 4}
    logged = re.findall(r"group of \d+ on one stack: ([0-9a-f, ]+)", stack.all_worker_logs())
    groups = [set(g.split(", ")) for g in logged]
    mine = [g for g in groups if g & set().union(*by_row.values())]
    assert sorted(map(sorted, mine)) == sorted(map(sorted, by_row.values()))


BAD_UPLOADS = [
    ("not-text", b"\xff\xfe\x00\x01binary", "data.csv", {"target": "label"}, "not UTF-8"),
    ("no-target-column", csv_bytes(), "data.csv", {"target": "price"}, "no target column 'price'"),
    ("no-target-field", csv_bytes(), "data.csv", {}, "needs `target`"),
    ("non-numeric", b"width,height,label\n" + b"1,2,0\n3,abc,1\n" + b"1,1,0\n2,2,1\n" * 5, "data.csv",
     {"target": "label"}, "column 'height' is not numeric: row 2 holds 'abc'"),
    ("missing-value", b"width,height,label\n" + b"1,2,0\n3,,1\n" + b"1,1,0\n2,2,1\n" * 5, "data.csv",
     {"target": "label"}, "column 'height' has a missing value in row 2"),
    ("constant-target", b"width,height,label\n" + b"1,2,1\n" * 20, "data.csv", {"target": "label"},
     "target column 'label' has a single value"),
    ("too-few-rows", b"width,height,label\n" + b"1,2,0\n2,1,1\n" * 2, "data.csv", {"target": "label"},
     "has 4 rows; at least 10"),
    ("npz-row-mismatch", npz_bytes(x=np.zeros((20, 3)), y=np.arange(19) % 2), "d.npz", {},
     "x has 20 rows but y has 19"),
    ("npz-y-2d", npz_bytes(x=np.zeros((20, 3)), y=np.zeros((20, 2))), "d.npz", {}, "y has shape (20, 2)"),
    ("npz-x-1d", npz_bytes(x=np.zeros(20), y=np.arange(20) % 2), "d.npz", {}, "x has shape (20,)"),
    ("npz-no-y", npz_bytes(x=np.zeros((20, 3)), labels=np.arange(20) % 2), "d.npz", {}, "no array 'y'"),
    ("npz-pickled", npz_bytes(x=np.array([{"a": 1}] * 20, dtype=object), y=np.arange(20) % 2), "d.npz", {},
     "array 'x' has dtype object"),
    ("npz-with-target", npz_bytes(x=np.zeros((20, 3)), y=np.arange(20) % 2), "d.npz", {"target": "y"},
     "`target` is for CSV files"),
    ("unknown-field", csv_bytes(), "data.csv", {"target": "label", "colour": "red"}, "unknown form field 'colour'"),
    ("bad-format", csv_bytes(), "data.csv", {"target": "label", "format": "xlsx"}, "format 'xlsx' is not one of"),
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("content", "filename", "fields", "needle"), [c[1:] for c in BAD_UPLOADS],
                         ids=[c[0] for c in BAD_UPLOADS])  # fmt: skip
def test_a_bad_upload_is_refused_naming_the_problem(
    stack: Stack, content: bytes, filename: str, fields: dict[str, str], needle: str
) -> None:
    name = f"bad-{secrets.token_hex(4)}"
    response = upload(stack.client, content, filename, name=name, **fields)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError"
    assert needle in body["detail"], body["detail"]
    assert body["errors"][0]["loc"][0] == "body"
    assert name not in [d["name"] for d in stack.client.get("/datasets").json()["items"]]


@pytest.mark.timeout(30)
def test_a_body_that_is_not_a_multipart_form_is_refused(stack: Stack) -> None:
    response = stack.client.post("/datasets", json={"file": "width,height,label"})
    assert response.status_code == 422
    assert "multipart/form-data" in response.json()["detail"]
    truncated = stack.client.post(
        "/datasets",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\na,b\r\n1,2',
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert truncated.status_code == 422
    assert "closing boundary" in truncated.json()["detail"]
    no_file = stack.client.post("/datasets", files={"target": (None, "label")})
    assert no_file.status_code == 422
    assert "no `file` field" in no_file.json()["detail"]


@pytest.mark.timeout(60)
def test_delete_is_refused_while_an_experiment_waits_on_the_upload(stack: Stack) -> None:
    data = uploaded(stack.client, csv_bytes(), "held.csv", target="label")
    taken = upload(stack.client, csv_bytes(), "other.csv", target="label", name=data["name"])
    assert (taken.status_code, taken.json()["error"]) == (409, "DatasetNameTaken")
    parked = stack.submit(on_upload(data["id"], "parked", device="cuda"))  # the gpu queue: stays queued
    refused = stack.client.delete(f"/datasets/{data['id']}")
    assert refused.status_code == 409
    assert refused.json()["error"] == "DatasetInUse"
    assert parked["id"] in refused.json()["detail"]
    assert stack.client.get(f"/datasets/{data['id']}").status_code == 200

    assert stack.client.post(f"/experiments/{parked['id']}/cancel").status_code == 202
    assert stack.client.delete(f"/datasets/{data['id']}").status_code == 204
    assert stack.client.delete(f"/datasets/{data['id']}").status_code == 404
    assert stack.experiment(parked["id"])["status"] == "cancelled"
    gone = stack.client.post("/experiments", json=on_upload(data["id"], "too late"))
    assert gone.status_code == 422
    assert gone.json()["errors"][0]["loc"] == ["body", "dataset", "id"]

    builtin = stack.client.delete("/datasets/spirals")
    assert (builtin.status_code, builtin.json()["error"]) == (409, "DatasetReadOnly")
    assert stack.client.get("/datasets/nope").status_code == 404


@pytest.fixture
def keyed(stack: Stack, tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, str], dict[str, str]]]:
    """An API with two owners' keys: (client, alice's headers, bob's headers)."""
    a, b = secrets.token_hex(8), secrets.token_hex(8)
    env = {"LABTRAIN_API_KEYS": f"alice:{a},bob:{b}"}
    with api_process(stack, env, tmp_path / "api.log", {}) as client:
        yield client, {"X-API-Key": a}, {"X-API-Key": b}


@pytest.mark.timeout(60)
def test_an_owner_cannot_see_use_or_delete_another_owners_upload(
    keyed: tuple[httpx.Client, dict[str, str], dict[str, str]],
) -> None:
    client, alice, bob = keyed
    assert client.post("/datasets", files={"file": ("a.csv", csv_bytes())}, data={"target": "label"}).status_code == 401
    name = f"private-{secrets.token_hex(3)}"
    mine = client.post("/datasets", files={"file": ("a.csv", csv_bytes())}, data={"target": "label", "name": name},
                       headers=alice)  # fmt: skip
    assert mine.status_code == 201, mine.text
    ident = mine.json()["id"]
    assert client.get(f"/datasets/{ident}", headers=alice).status_code == 200

    assert client.get(f"/datasets/{ident}", headers=bob).status_code == 404
    assert client.delete(f"/datasets/{ident}", headers=bob).status_code == 404
    assert ident not in [d.get("id") for d in client.get("/datasets", headers=bob).json()["items"]]
    refused = client.post("/experiments", json=on_upload(ident, "bob's", device="cuda"), headers=bob)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "dataset", "id"]
    sweep = {"name": "bob's", "base": on_upload(ident, "b", device="cuda"), "variants": [{"name": "x"}]}
    assert client.post("/sweeps", json=sweep, headers=bob).status_code == 422
    # Names are per owner: bob may use alice's.
    his = client.post("/datasets", files={"file": ("b.csv", csv_bytes())}, data={"target": "label", "name": name},
                      headers=bob)  # fmt: skip
    assert his.status_code == 201, his.text

    ok = client.post("/experiments", json=on_upload(ident, "alice's", device="cuda"), headers=alice)
    assert ok.status_code == 202, ok.text
    assert client.post(f"/experiments/{ok.json()['id']}/cancel", headers=alice).status_code == 202
    assert client.delete(f"/datasets/{ident}", headers=alice).status_code == 204
    assert client.delete(f"/datasets/{his.json()['id']}", headers=bob).status_code == 204


def wine_csv(n: int = 200, seed: int = 3) -> bytes:
    """Two features and a text target column named `quality` (not `target`, not `label`)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    quality = np.where(x[:, 0] - x[:, 1] > 0, "good", "poor")
    rows = "".join(f"{a:.4f},{b:.4f},{q}\n" for (a, b), q in zip(x, quality, strict=True))
    return ("alcohol,acidity,quality\n" + rows).encode()


@pytest.mark.timeout(150)
def test_an_upload_is_named_by_its_name_in_a_spec_and_in_the_routes(stack: Stack) -> None:
    name = f"wine-{secrets.token_hex(3)}"
    response = upload(stack.client, wine_csv(), "wine.csv", target="quality", name=name)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["targets"] == {"quality": ["good", "poor"]}
    assert stack.client.get(f"/datasets/{name}").json() == data
    assert stack.client.get(f"/datasets/{data['id']}").json() == data
    again = upload(stack.client, wine_csv(seed=4), "wine.csv", target="quality", name=name)
    assert (again.status_code, again.json()["error"]) == (409, "DatasetNameTaken")

    spec = on_upload(data["id"], "by-name", epochs=40) | {"dataset": {"name": name}}
    created = stack.submit(spec)
    assert created["spec"]["dataset"]["id"] == data["id"]  # resolved: the experiment names one upload
    assert created["spec"]["dataset"].get("name") is None
    exp = stack.wait_terminal(created["id"], timeout=120)
    assert exp["status"] == "succeeded", exp["error"]
    assert exp["metrics"]["best"]["val_accuracy"] > 0.85
    inputs = [{"alcohol": 2.0, "acidity": -1.0}, {"alcohol": -2.0, "acidity": 1.5}]
    predicted = stack.client.post(f"/experiments/{created['id']}/predictions", json={"inputs": inputs})
    assert predicted.status_code == 200, predicted.text
    assert [p["label"] for p in predicted.json()["predictions"]] == ["good", "poor"]

    unknown = stack.client.post("/experiments", json=spec | {"dataset": {"name": f"no-{name}"}})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["body", "dataset", "name"]
    with_params = stack.client.post("/experiments", json=spec | {"dataset": {"name": name, "params": {"a": 1}}})
    assert with_params.status_code == 422
    assert with_params.json()["errors"][0]["loc"] == ["body", "dataset", "params"]
    sweep = {"name": "by-name", "base": spec | {"device": "cuda"}, "grid": {"optimizer.lr": [0.01, 0.1]}}
    swept = stack.client.post("/sweeps", json=sweep)
    assert swept.status_code == 202, swept.text
    assert stack.client.delete(f"/datasets/{name}").status_code == 409  # its sweep's members are queued
    assert stack.client.post(f"/sweeps/{swept.json()['id']}/cancel").status_code == 202
    assert stack.client.delete(f"/datasets/{name}").status_code == 204
    assert stack.client.get(f"/datasets/{name}").status_code == 404


def race(
    stack: Stack, data: dict[str, Any], delete_at: float, submit_at: float
) -> tuple[list[httpx.Response], httpx.Response]:
    """20 submits on the upload (by id and by name), 2 ms apart from `submit_at` s, and its delete
    at `delete_at` s."""
    spec = on_upload(data["id"], "raced", device="cuda")  # the gpu queue: accepted ones stay queued
    by_name = spec | {"dataset": {"name": data["name"]}}
    start = threading.Barrier(21)
    submitted: list[httpx.Response] = []
    deleted: list[httpx.Response] = []

    def submit(i: int) -> None:
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            start.wait()
            time.sleep(submit_at + 0.002 * i)
            submitted.append(client.post("/experiments", json=by_name if i % 2 else spec))

    def delete() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            start.wait()
            time.sleep(delete_at)
            deleted.append(client.delete(f"/datasets/{data['id']}"))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    threads.append(threading.Thread(target=delete))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return submitted, deleted[0]


@pytest.mark.timeout(240)
def test_submits_racing_a_delete_answer_4xx_never_5xx(stack: Stack) -> None:
    """20 submits race one delete, four times: the delete either wins (no submit is accepted) or
    loses (409: the accepted experiments hold the upload); never a 5xx."""
    for round_ in range(4):
        data = uploaded(stack.client, csv_bytes(seed=round_), "raced.csv", target="label")
        submitted, deleted = race(stack, data, *((0.0, 0.02), (0.0, 0.005), (0.005, 0.0), (0.01, 0.0))[round_])
        errors = [r.text for r in [*submitted, deleted] if r.status_code >= 500]
        assert errors == []
        codes = sorted(r.status_code for r in submitted)
        assert len(codes) == 20
        assert set(codes) <= {202, 404, 422}, codes
        accepted = [r.json()["id"] for r in submitted if r.status_code == 202]
        if deleted.status_code == 204:
            assert accepted == []  # nothing accepted trains on a deleted upload
        else:
            assert deleted.status_code == 409, deleted.text
            assert accepted
        for ident in accepted:
            assert stack.client.post(f"/experiments/{ident}/cancel").status_code == 202
        stack.client.delete(f"/datasets/{data['id']}")
