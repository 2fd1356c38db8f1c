"""Hostile input at the API boundary, over real HTTP on SQLite and PostgreSQL: non-finite and
out-of-range numbers, NUL and control characters, deep nesting, oversized values, lax types,
out-of-range Last-Event-IDs, unknown query parameters, HEAD, and formula-looking table cells.
Every refusal is a 4xx in the error envelope naming the place, nothing is created, and the
connection stays usable."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Stack, api_process
from tests.integration.test_experiments import parked_spec, tiny_spec

pytestmark = pytest.mark.integration

NAN_SPEC = '{"name": "nan", "dataset": {"name": "spirals"}, "optimizer": {"name": "adam", "lr": %s}, "epochs": 3}'


def experiment_ids(stack: Stack) -> list[str]:
    return [e["id"] for e in stack.client.get("/experiments", params={"limit": 200}).json()["items"]]


def sweep_ids(stack: Stack) -> list[str]:
    return [s["id"] for s in stack.client.get("/sweeps", params={"limit": 200}).json()["items"]]


def assert_envelope(response: httpx.Response, status: int, loc: list[Any] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str)
    assert isinstance(body["detail"], str)
    if loc is not None:
        locs = [e["loc"] for e in body["errors"]]
        assert loc in locs, locs
    return body


@pytest.fixture(scope="module")
def parked(stack: Stack) -> str:
    """An experiment that stays queued (40 epochs, the gpu queue no test worker serves)."""
    return stack.submit(parked_spec("hostile-parked"))["id"]


@pytest.mark.parametrize(
    ("literal", "kind"),
    [("NaN", "finite_number"), ("Infinity", "finite_number"), ("-Infinity", "finite_number"),
     ("1e400", "finite_number"), ("-1e400", "finite_number"), ("1" + "0" * 400, "finite_number")],
)  # fmt: skip
@pytest.mark.timeout(60)
def test_non_finite_and_huge_numbers_are_422_naming_the_field(stack: Stack, literal: str, kind: str) -> None:
    before = experiment_ids(stack)
    response = stack.client.post(
        "/experiments", content=NAN_SPEC % literal, headers={"content-type": "application/json"}
    )
    body = assert_envelope(response, 422, ["body", "optimizer", "lr"])
    assert body["error"] == "ValidationError"
    assert body["errors"][0]["type"] == kind
    assert "body.optimizer.lr" in body["detail"]
    assert experiment_ids(stack) == before


@pytest.mark.timeout(60)
def test_every_json_route_refuses_non_finite_numbers(stack: Stack, parked: str) -> None:
    cases: list[tuple[str, str, list[Any]]] = [
        ("/experiments", '{"name": "x", "dataset": {"name": "spirals"}, "epochs": NaN}', ["body", "epochs"]),
        ("/sweeps", '{"base": {"dataset": {"name": "spirals"}}, "grid": {"optimizer.lr": [0.1, Infinity]}}',
         ["body", "grid", "optimizer.lr", 1]),
        (f"/experiments/{parked}/predictions", '{"inputs": [[0.5, -Infinity]]}', ["body", "inputs", 0, 1]),
        (f"/experiments/{parked}/predictions", '{"inputs": [{"x1": 1e999, "x2": 0}]}', ["body", "inputs", 0, "x1"]),
        (f"/experiments/{parked}/evaluations", '{"split": "test", "extra": NaN}', ["body", "extra"]),
    ]  # fmt: skip
    for path, text, loc in cases:
        response = stack.client.post(path, content=text, headers={"content-type": "application/json"})
        assert_envelope(response, 422, loc)


@pytest.mark.timeout(60)
def test_the_keep_alive_connection_survives_a_refusal(stack: Stack) -> None:
    url = urlsplit(stack.base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        for literal in ("NaN", "1e400"):
            conn.request("POST", "/experiments", body=NAN_SPEC % literal, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 422
            assert json.loads(response.read())["error"] == "ValidationError"
            assert not response.will_close
        sock = conn.sock
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        assert conn.sock is sock  # the same connection answered
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_deep_nesting_is_a_4xx(stack: Stack, parked: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path, text in [
        ("/experiments", deep),
        ("/experiments", '{"name": "x", "dataset": {"name": "spirals", "params": {"a": ' + deep + "}}}"),
        (f"/experiments/{parked}/predictions", '{"inputs": ' + "[" * 40 + "]" * 40 + "}"),
        ("/sweeps", "{" + '"a": {' * 5_000 + "}" * 5_000 + "}"),
    ]:
        response = stack.client.post(path, content=text, headers={"content-type": "application/json"})
        body = assert_envelope(response, 422)
        assert body["errors"][0]["type"] == "json_too_deep"


@pytest.mark.timeout(60)
def test_errors_echo_only_an_excerpt_of_a_10_mb_value(stack: Stack) -> None:
    huge = "x" * 10_000_000
    cases = [
        tiny_spec(huge),  # the name: too long
        tiny_spec("ok", dataset={"name": huge}),  # an unknown dataset quoted in the message
        tiny_spec("ok", batch_size=huge),  # a value quoted by a validator
        tiny_spec("ok", **{huge: 1}),  # an unknown field: the key is in `loc`
    ]
    before = experiment_ids(stack)
    for spec in cases:
        response = stack.client.post("/experiments", json=spec)
        assert_envelope(response, 422)
        assert len(response.content) < 5_000, len(response.content)
        longest = max((len(m) for m in re.findall(r"x+", response.text)), default=0)
        assert 50 <= longest <= 400, longest  # an excerpt: enough to recognize, never the whole
    assert experiment_ids(stack) == before


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"epochs": True}, ["body", "epochs"]),
        ({"optimizer": {"name": "adam", "lr": "0.1"}}, ["body", "optimizer", "lr"]),
        ({"seed": "1"}, ["body", "seed"]),
        ({"model": {"widths": [8, 8], "neurons": 8}}, ["body", "model"]),
        ({"model": {"widths": [8], "hidden_layers": 2}}, ["body", "model"]),
        ({"batch_size": 601}, ["body", "batch_size"]),  # 1000 points, val and test 0.2: 600 train
        ({"name": "nul\x00name"}, ["body", "name"]),
        ({"name": "tab\tname"}, ["body", "name"]),
        ({"name": "line\nbreak"}, ["body", "name"]),
        ({"dataset": {"name": "spir\x00als"}}, ["body", "dataset", "name"]),
        ({"dataset": {"name": "spirals", "params": {"n_samples": "1000"}}}, ["body", "dataset", "params", "n_samples"]),
    ],
)  # fmt: skip
@pytest.mark.timeout(60)
def test_lax_and_unsafe_specs_are_422_and_create_nothing(stack: Stack, change: dict[str, Any], loc: list[Any]) -> None:
    before = experiment_ids(stack)
    response = stack.client.post("/experiments", json=tiny_spec("strict") | change)
    body = assert_envelope(response, 422, loc)
    if loc == ["body", "batch_size"]:
        assert "600" in body["detail"]
    assert experiment_ids(stack) == before


@pytest.mark.timeout(60)
def test_nul_and_control_characters_in_sweep_names_are_422(stack: Stack) -> None:
    base = parked_spec("base")
    before = sweep_ids(stack), experiment_ids(stack)
    cases = [
        ({"name": "s\x00weep", "base": base, "grid": {"epochs": [2, 3]}}, ["body", "name"]),
        ({"name": "s\x1bweep", "base": base, "grid": {"epochs": [2, 3]}}, ["body", "name"]),
        ({"base": base, "variants": [{"name": "r\x00w", "epochs": 2}]}, ["body", "variants", 0, "name"]),
        ({"base": base, "variants": [{"name": "r\rw", "epochs": 2}]}, ["body", "variants", 0, "name"]),
        ({"base": base | {"name": "b\x00ase"}, "grid": {"epochs": [2]}}, ["body", "base", "name"]),
    ]
    for body, loc in cases:
        assert_envelope(stack.client.post("/sweeps", json=body), 422, loc)
    assert (sweep_ids(stack), experiment_ids(stack)) == before


@pytest.mark.timeout(60)
def test_nul_in_the_path_or_the_query_is_422(stack: Stack) -> None:
    assert_envelope(stack.client.get("/experiments/a%00b"), 422, ["path"])
    assert_envelope(stack.client.get("/experiments", params={"sweep_id": "a\x00b"}), 422, ["query", "sweep_id"])
    assert_envelope(stack.client.get("/datasets/a%00b"), 422, ["path"])


@pytest.mark.timeout(60)
def test_last_event_id_outside_the_run_is_400_before_the_stream(stack: Stack, parked: str) -> None:
    for value in ("41", str(2**31), str(2**31 - 1), str(2**63), str(2**64), "9" * 5_000):
        response = stack.client.get(f"/experiments/{parked}/events", headers={"Last-Event-ID": value})
        body = assert_envelope(response, 400)
        assert body["error"] == "InvalidLastEventId"
        assert "from 0 to 40" in body["detail"]
        assert len(response.content) < 1_000
    # the last epoch is a valid id: the stream starts (and is left at its first event)
    with stack.client.stream("GET", f"/experiments/{parked}/events", headers={"Last-Event-ID": "40"}) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("id:") or first.startswith("event:") or first.startswith(":")

    sweep = stack.client.post("/sweeps", json={"base": parked_spec("s"), "grid": {"epochs": [2, 3]}})
    assert sweep.status_code == 202, sweep.text
    url = f"/sweeps/{sweep.json()['id']}/events"
    for value in (str(2**63), str(2**31), "10"):  # the last id: 2 + 3 epochs + 2 for each of 2 ended members = 9
        body = assert_envelope(stack.client.get(url, headers={"Last-Event-ID": value}), 400)
        assert body["error"] == "InvalidLastEventId"
    assert stack.client.post(f"/sweeps/{sweep.json()['id']}/cancel").status_code == 202


@pytest.mark.timeout(120)
def test_unknown_query_parameters_are_422_on_every_route(stack: Stack, parked: str) -> None:
    schema = stack.client.get("/openapi.json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        url = re.sub(r"\{experiment_id\}", parked, path)
        url = re.sub(r"\{kind\}", "learning-curves", url)
        url = re.sub(r"\{[^}]+\}", "nope", url)
        for method in operations:
            if path.endswith("/events") and method == "get":
                continue  # covered below: a stream that would not end
            response = stack.client.request(method.upper(), url, params={"stauts": "running"})
            assert_envelope(response, 422, ["query", "stauts"])
            checked += 1
    assert checked >= 20
    response = stack.client.get(f"/experiments/{parked}/events", params={"after": "3"})
    assert_envelope(response, 422, ["query", "after"])
    for url in ["/healthz?x=1", "/docs?x=1", "/openapi.json?x=1", "/experiments?status=queued&limit=5&bogus="]:
        body = assert_envelope(stack.client.get(url), 422)
        assert body["errors"][0]["type"] == "extra_forbidden"
    # declared parameters, by their alias, still pass
    assert stack.client.get("/experiments", params={"status": "queued", "limit": 5}).status_code == 200


@pytest.mark.timeout(60)
def test_head_answers_wherever_get_does(stack: Stack, parked: str) -> None:
    for url in [
        "/healthz",
        "/experiments",
        f"/experiments/{parked}",
        f"/experiments/{parked}/metrics?format=csv",
        "/sweeps",
        "/datasets",
        "/datasets/spirals",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/docs/assets/swagger-ui.css",
        "/experiments/nope",
    ]:
        get = stack.client.get(url)
        head = stack.client.head(url)
        assert head.status_code == get.status_code, url
        assert head.content == b"", url
        assert head.headers.get("content-type") == get.headers.get("content-type"), url
        if "content-length" in get.headers:
            assert head.headers["content-length"] == get.headers["content-length"], url
    head = stack.client.head(f"/experiments/{parked}/events", timeout=30)  # a stream: its headers only
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""
    assert stack.client.get("/healthz").status_code == 200


@pytest.mark.timeout(60)
def test_table_cells_never_become_formulas_or_break_markdown(stack: Stack) -> None:
    variants = [{"name": name, "epochs": 2 + i} for i, name in enumerate(["=1+1", "@SUM(A1)", "-2+3", "a|b", "+x"])]
    sweep = stack.client.post("/sweeps", json={"base": parked_spec("cells"), "variants": variants})
    assert sweep.status_code == 202, sweep.text
    sweep_id = sweep.json()["id"]
    csv_text = stack.client.get(f"/sweeps/{sweep_id}/table", params={"format": "csv"}).text
    names = [line.split(",")[0] for line in csv_text.splitlines()[1:]]
    assert names == ["'=1+1", "'@SUM(A1)", "'-2+3", "a|b", "'+x"]
    assert ",0.01," in csv_text  # numbers untouched
    markdown = stack.client.get(f"/sweeps/{sweep_id}/table", params={"format": "markdown"}).text
    lines = markdown.splitlines()
    assert len(lines) == 2 + len(variants)  # header, rule, one line per row: nothing broke a line
    cells = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
    assert len(set(cells)) == 1, cells  # every line has the same number of cell separators
    assert "a\\|b" in markdown
    assert stack.client.post(f"/sweeps/{sweep_id}/cancel").status_code == 202


@pytest.mark.timeout(90)
def test_docs_need_a_key_and_load_nothing_from_outside(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    log = tmp_path_factory.mktemp("docs-keys") / "api.log"
    with api_process(stack, {"LABTRAIN_API_KEYS": "alice:key-a"}, log, {}) as client:
        for url in ["/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"]:
            body = assert_envelope(client.get(url), 401)
            assert body["error"] == "Unauthorized"
            assert client.head(url).status_code == 401
        key = {"X-API-Key": "key-a"}
        assert client.get("/openapi.json", headers=key).json()["info"]["title"] == "labtrain"
        for page in ["/docs", "/redoc"]:
            html = client.get(page, headers={"Authorization": "Bearer key-a"})
            assert html.status_code == 200
            assert html.headers["content-type"].startswith("text/html")
            urls = re.findall(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""", html.text)
            assert len(urls) >= 3, urls  # the script, the stylesheet or icon, and the schema
            assert not re.search(r"https?://", html.text), "a page refers to another host"
            for url in urls:
                assert url.startswith("/"), url  # same origin
                asset = client.get(url, headers=key)
                assert asset.status_code == 200, url
                assert len(asset.content) > 100, url
        assert client.get("/docs/assets/../../etc/passwd", headers=key).status_code == 404
        assert client.get("/docs/assets/core.py", headers=key).status_code == 404


@pytest.mark.timeout(60)
def test_control_characters_in_headers_are_never_a_5xx(stack: Stack) -> None:
    url = urlsplit(stack.base_url)
    body = json.dumps(parked_spec("header")).encode()
    statuses: list[int] = []
    for value in (b"a\x00b", b"a\x01b", b"\xff\xfe", b"x" * 300):
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        try:
            conn.putrequest("POST", "/experiments")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Idempotency-Key", value)
            conn.putheader("Last-Event-ID", value)
            conn.endheaders(body)
            response = conn.getresponse()
            status = response.status
            response.read()
        except (http.client.RemoteDisconnected, ConnectionError):
            status = 400  # the HTTP parser refused the request line itself
        finally:
            conn.close()
        assert status < 500, (value, status)
        statuses.append(status)
    assert stack.client.get("/healthz").status_code == 200
    assert statuses[0] == 400  # a NUL: the HTTP parser refuses it, before any route
