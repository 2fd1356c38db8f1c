"""The deployment files: docker-compose.yml validated by docker-compose itself, its services'
wiring, the Dockerfile's choices, and the package the image installs (`pip install .`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKER_COMPOSE = shutil.which("docker-compose")
LABTRAIN_SERVICES = ("migrate", "api", "worker", "worker-gpu")


def compose_config(*args: str, env: dict[str, str] | None = None, file: Path = COMPOSE) -> subprocess.CompletedProcess:
    """`docker-compose -f FILE [args] config -q` with only `env` (and PATH) in the environment."""
    if DOCKER_COMPOSE is None:
        if os.environ.get("LABTRAIN_TEST_REQUIRE_DOCKER_COMPOSE") == "1":
            pytest.fail("docker-compose is not installed and LABTRAIN_TEST_REQUIRE_DOCKER_COMPOSE=1")
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    environ = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    argv = [DOCKER_COMPOSE, "-f", str(file), "--project-directory", str(ROOT), *args, "config", "-q"]
    return subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and `<<` merges


def test_docker_compose_accepts_the_file_with_and_without_the_gpu_profile() -> None:
    for args in ((), ("--profile", "gpu")):
        result = compose_config(*args, env={"LABTRAIN_API_KEYS": "me:a-key"})
        assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_the_api_without_keys() -> None:
    result = compose_config()
    assert result.returncode != 0
    assert "set LABTRAIN_API_KEYS=owner:key" in result.stderr


def test_docker_compose_validation_fails_on_an_invalid_file(tmp_path: Path) -> None:
    """The check above can fail: a misspelled depends_on condition is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_completed_successfully", "condition: done", 1))
    result = compose_config(env={"LABTRAIN_API_KEYS": "me:a-key"}, file=broken)
    assert result.returncode != 0
    assert "condition" in result.stderr


def test_services_wait_for_healthy_dependencies_and_share_only_the_database_and_redis() -> None:
    services = load_compose()["services"]
    assert set(services) == {"redis", "postgres", *LABTRAIN_SERVICES}
    for name in ("redis", "postgres", "api", "worker", "worker-gpu"):
        assert services[name]["healthcheck"]["test"], name
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("api", "worker", "worker-gpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy", name
    for name in LABTRAIN_SERVICES:
        env = services[name]["environment"]
        assert env["LABTRAIN_DATABASE_URL"].startswith("postgresql+psycopg://labtrain:"), name
        assert env["LABTRAIN_REDIS_URL"] == "redis://redis:6379/0", name
        # Models and checkpoints travel through PostgreSQL: no directory is shared, so a worker on
        # another machine needs nothing but the two URLs (README "Several machines").
        assert "LABTRAIN_ARTIFACT_DIR" not in env, name
        assert "volumes" not in services[name], name
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert set(load_compose()["volumes"]) == {"redis", "postgres"}
    # `docker compose up --scale worker=N`: nothing in the worker service is unique to one container.
    assert not {"container_name", "ports", "hostname"} & set(services["worker"])


def test_the_gpu_worker_is_a_profile_with_an_nvidia_reservation() -> None:
    services = load_compose()["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert all("profiles" not in services[name] for name in services if name != "worker-gpu")
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert gpu["environment"]["LABTRAIN_DEVICE"] == "cuda"
    assert gpu["command"][:3] == ["worker", "--queues", "gpu,cpu"]
    assert gpu["build"]["args"]["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/cu")
    assert services["worker"]["environment"]["LABTRAIN_DEVICE"] == "cpu"
    assert services["worker"]["command"][:3] == ["worker", "--queues", "cpu"]


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_installs_every_package_and_runs_labtrain_as_a_user() -> None:
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    args = [a for k, a in instructions if k == "ARG"]
    assert any(a.startswith("TORCH_INDEX=https://download.pytorch.org/whl/cpu") for a in args)
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert '--index-url "${TORCH_INDEX}"' in runs
    assert "pip install -c constraints.txt ." in runs
    copied = {a.split()[0] for k, a in instructions if k == "COPY"}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:  # "api*" → api: a package added to pyproject must reach the image
        assert package.rstrip("*") in copied, package
    assert {"pyproject.toml", "constraints.txt"} <= copied
    users = [a for k, a in instructions if k == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["labtrain"]') in instructions
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert ".venv" in ignored
    assert "var" in ignored
    assert not ignored & ({p.rstrip("*") for p in packages} | {"pyproject.toml", "constraints.txt", "README.md"})


@pytest.mark.timeout(180)
def test_the_installed_package_carries_the_migrations_and_the_datasets(tmp_path: Path) -> None:
    """What `pip install .` puts in the image (not the editable checkout): Alembic's scripts and
    the datasets package, or `labtrain migrate` and training fail in a container."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("labtrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"migrations/env.py", "migrations/script.py.mako"} <= names
    versions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert versions
    assert {f"migrations/versions/{v}" for v in versions} <= names
    data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "ml" / "datasets").rglob("*") if p.is_file()]
    data = [p for p in data if "__pycache__" not in p]
    assert data
    assert set(data) <= names
    assert any(n.endswith("entry_points.txt") and "labtrain" in zipfile.ZipFile(wheel).read(n).decode() for n in names)
