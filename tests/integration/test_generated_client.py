"""A client generated from the running service's `/openapi.json` by openapi-python-client works:
short function names from the operation ids (`create_experiment`, `get_metrics`, ...), a spec
model that takes `batch_size: 128` and `"full"`, and with it the report's model22 is submitted,
followed and its metrics read, over real HTTP (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.integration

GENERATOR = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
PACKAGE = "labtrain_generated"


def test_the_schema_has_short_unique_operation_ids_and_a_typed_batch_size(stack: Stack) -> None:
    schema = stack.client.get("/openapi.json").json()
    operations = {
        (method, path): op["operationId"] for path, ops in schema["paths"].items() for method, op in ops.items()
    }
    assert len(set(operations.values())) == len(operations)
    assert operations[("post", "/experiments")] == "create_experiment"
    assert operations[("get", "/experiments")] == "list_experiments"
    assert operations[("get", "/experiments/{experiment_id}")] == "get_experiment"
    assert operations[("patch", "/experiments/{experiment_id}")] == "update_experiment"
    assert operations[("get", "/experiments/{experiment_id}/metrics")] == "get_metrics"
    assert operations[("post", "/experiments/{experiment_id}/cancel")] == "cancel_experiment"
    assert operations[("post", "/experiments/{experiment_id}/predictions")] == "create_predictions"
    assert all(op.get("tags") for ops in schema["paths"].values() for op in ops.values())  # one per resource
    spec = schema["components"]["schemas"]["ExperimentSpec"]
    assert spec["examples"][0]["name"] == "model22"
    integer, full = spec["properties"]["batch_size"]["anyOf"]
    assert integer == {"type": "integer", "minimum": 1, "maximum": 1_000_000}
    assert full["const"] == "full"
    assert full["enum"] == ["full"]


@pytest.fixture(scope="module")
def generated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The package generated from the service's own /openapi.json, importable."""
    if GENERATOR is None:
        pytest.fail("openapi-python-client is not installed: pip install --no-deps openapi-python-client ruamel.yaml")
    work = tmp_path_factory.mktemp("generated")
    (work / "openapi.json").write_text(json.dumps(stack.client.get("/openapi.json").json()))
    # No post hooks: the generated code is used as generated, without a formatter run.
    (work / "config.yaml").write_text(f"post_hooks: []\npackage_name_override: {PACKAGE}\n")
    command = [GENERATOR, "generate", "--path", "openapi.json", "--output-path", "out", "--config", "config.yaml"]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(work / "out"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work / "out"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.mark.timeout(240)
def test_a_generated_client_submits_model22_and_reads_its_metrics(stack: Stack, generated: Any) -> None:
    from labtrain_generated.api.experiments import create_experiment, get_experiment, get_metrics  # type: ignore
    from labtrain_generated.models import ExperimentSpec  # type: ignore

    body = yaml.safe_load((ROOT / "examples" / "model22.yaml").read_text()) | {"epochs": 12}
    spec = ExperimentSpec.from_dict(body)
    assert spec.batch_size == 128
    assert ExperimentSpec.from_dict(body | {"batch_size": "full"}).batch_size == "full"

    client = generated.Client(base_url=stack.base_url, raise_on_unexpected_status=True)
    created = create_experiment.sync_detailed(client=client, body=spec)
    assert created.status_code == 202, created.content
    experiment = created.parsed
    assert experiment.param_count == 177  # the report's model22
    assert experiment.spec["batch_size"] == 128

    deadline = time.monotonic() + 180
    while experiment.status not in ("succeeded", "failed", "cancelled", "diverged"):
        assert time.monotonic() < deadline, experiment.status
        time.sleep(0.2)
        experiment = get_experiment.sync(experiment.id, client=client)
    assert experiment.status == "succeeded", experiment.error

    metrics = get_metrics.sync(experiment.id, client=client)
    epochs = metrics.epochs
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert all(0.0 <= e["val_accuracy"] <= 1.0 for e in epochs)
