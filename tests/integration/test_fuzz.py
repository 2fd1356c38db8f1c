"""Fuzzing with what schemathesis's defaults do not send: non-finite and huge numbers, control
characters and lone surrogates, deep nesting and oversized strings, in every JSON route's body
(a valid body with one to three places replaced, or keys added) and in every query and path
parameter of every operation of /openapi.json, over HTTP on SQLite and PostgreSQL. No answer may
be a 5xx, and every 4xx is the JSON error envelope.

Bodies start from a valid one, so the hostile value reaches the deeper checks (spec validation,
the sweep expansion, the prediction rows of a trained model). Specs are parked on the gpu queue,
which no test worker serves, and whatever is accepted is cancelled at once, so the session's
other tests see no extra queued work. Examples are derandomized: a failure repeats on a rerun.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack
from tests.integration.test_experiments import parked_spec, tiny_spec

pytestmark = pytest.mark.integration

EXAMPLES = 20  # per operation: about 500 requests per database


class Raw:
    """JSON text put into a body as it is (`NaN`, `1e400`, `[[[...]]]`): json.dumps cannot write it."""

    def __init__(self, text: str) -> None:
        self.text = text


NUMBERS = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "1" + "0" * 400, "-" + "9" * 5000, "1E309"]
).map(Raw)
DEEP = st.integers(min_value=30, max_value=3000).map(lambda d: Raw("[" * d + "]" * d))
TEXT = st.one_of(
    st.text(st.characters(categories=["Cc"]), min_size=1, max_size=8),
    st.text(max_size=20),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "\u2028", "=1+1", "x" * 100_000, "é" * 40_000]),
)
HOSTILE = st.one_of(
    NUMBERS,
    DEEP,
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**63, 2**64, -1, 0, 1e308, -0.0, 5e-324]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
QUERY_VALUE = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["NaN", "Infinity", "1e400", "-1", "0", "9" * 40, "\x00", "x" * 5000, "", "true", "%00"]),
)
PATH_VALUE = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["x" * 300, "..", "\x00", "%00", "\u202e"]))
BUDGET = settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing case is reported as found
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def dumps(doc: Any) -> str:
    """JSON text of `doc`, its Raw values written as they are."""
    raws: list[str] = []

    def encode(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"\x01RAW{len(raws) - 1}\x01"
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [encode(v) for v in value]
        return value

    text = json.dumps(encode(doc))
    return re.sub(r'"\\u0001RAW(\d+)\\u0001"', lambda m: raws[int(m.group(1))], text)


def places(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `doc` (the root included)."""
    out = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += places(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += places(value, (*path, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one to three values replaced by hostile ones, or hostile keys added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(places(doc)))
        value = draw(HOSTILE)
        if not path:
            return value if draw(st.booleans()) else doc
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(TEXT)] = value  # a new, hostile key
        else:
            parent[path[-1]] = value
    return doc


def check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), what
        body = response.json()
        assert isinstance(body.get("error"), str), what
        assert isinstance(body.get("detail"), str), what


def cleanup(stack: Stack, method: str, path: str, response: httpx.Response) -> None:
    """Cancel what an accepted example created (parked on the gpu queue, it would stay queued)."""
    if method != "POST" or response.status_code not in (200, 202):
        return
    if path == "/experiments":
        stack.client.post(f"/experiments/{response.json()['id']}/cancel")
    elif path == "/sweeps":
        stack.client.post(f"/sweeps/{response.json()['id']}/cancel")


@pytest.fixture(scope="module")
def targets(stack: Stack) -> dict[str, str]:
    """A trained experiment (predictions reach a real model), a parked one, a sweep."""
    trained = stack.submit(tiny_spec("fuzz-trained", epochs=3))
    parked = stack.submit(parked_spec("fuzz-parked"))
    sweep = stack.client.post("/sweeps", json={"base": parked_spec("fuzz-sweep"), "grid": {"epochs": [2, 3]}})
    assert sweep.status_code == 202, sweep.text
    done = stack.wait_terminal(trained["id"], timeout=90)
    assert done["status"] == "succeeded", done["error"]
    return {"experiment_id": done["id"], "parked": parked["id"], "sweep_id": sweep.json()["id"]}


def bodies(targets: dict[str, str]) -> dict[str, Any]:
    """A valid body for each JSON route (by its path template)."""
    return {
        "/experiments": parked_spec("fuzz"),
        "/sweeps": {"name": "fuzz", "base": parked_spec("fuzz"), "grid": {"epochs": [2, 3]}, "repeats": 1},
        "/experiments/{experiment_id}/predictions": {"inputs": [[0.5, -0.25], {"x1": 0.1, "x2": 0.2}]},
        "/experiments/{experiment_id}/evaluations": {"split": "val"},
    }


def run(examples: Callable[[], None], what: str) -> str | None:
    try:
        examples()
    except (Exception, BaseExceptionGroup) as exc:
        return f"{what}: {type(exc).__name__}: {exc}"[:3000]
    return None


def fill(template: str, targets: dict[str, str], hostile: dict[str, str]) -> str:
    """The URL of `template`: real ids (so the route goes deep), or one hostile path value."""
    real = {"experiment_id": targets["experiment_id"], "sweep_id": targets["sweep_id"], "kind": "learning-curves"}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return quote(hostile[name], safe="") if name in hostile else real.get(name, "spirals")

    return re.sub(r"\{([^}]+)\}", value, template)


def operation_examples(
    stack: Stack, targets: dict[str, str], method: str, template: str, base: Any, names: list[str], calls: list[int]
) -> Callable[[], None]:
    """The examples of one operation: a hostile body (when it takes JSON), query and path."""

    @given(
        body=mutated(base) if base is not None else st.none(),
        query=st.dictionaries(st.sampled_from(names), QUERY_VALUE, max_size=3),
        path=st.dictionaries(st.sampled_from(["experiment_id", "sweep_id", "kind", "name"]), PATH_VALUE, max_size=1),
    )
    @BUDGET
    def examples(body: Any, query: dict[str, str], path: dict[str, str]) -> None:
        calls[0] += 1
        url = fill(template, targets, path)
        content = dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} if content is not None else {}
        response = stack.client.request(method, url, params=query, content=content, headers=headers)
        check(response, f"{method} {url} query={query!r:.200} body={content!r:.300}")
        cleanup(stack, method, template, response)

    return examples


@pytest.mark.timeout(600)
def test_hostile_values_in_every_body_query_and_path_are_never_a_5xx(stack: Stack, targets: dict[str, str]) -> None:
    schema = stack.client.get("/openapi.json").json()
    known = bodies(targets)
    failures: list[str] = []
    calls = [0]
    for template, operations in schema["paths"].items():
        if template.endswith("/events"):
            continue  # streams: covered by test_events and test_hostile_input
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"] + ["bogus"]
            takes_json = "application/json" in operation.get("requestBody", {}).get("content", {})
            base = known.get(template, {}) if takes_json else None
            examples = operation_examples(stack, targets, method.upper(), template, base, names, calls)
            failure = run(examples, f"{method.upper()} {template}")
            if failure:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)
    assert calls[0] >= 20 * EXAMPLES
    assert stack.client.get("/healthz").status_code == 200
