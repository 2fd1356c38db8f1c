"""The client distribution as a lab installs it: the wheel built from client/ holds only the
`labtrain` package, installs into a fresh virtual environment without PyTorch, and from there
runs the README's example against the real service (the `stack` fixture): model22 submitted,
waited for, its metrics read as a DataFrame."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.integration


def local_indexes() -> list[str]:
    """pip's options for the package indexes on this machine's disk (`file://` in the pip
    config), so the install needs no network; none when the config has none."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    urls = [u for line in listed.stdout.splitlines() if re.search(r"\.(extra-)?index-url=", line)
            for u in line.split("=", 1)[1].strip("'\"").split() if u.startswith("file://")]  # fmt: skip
    if not urls:
        return []
    return ["--index-url", urls[0], *(arg for u in urls[1:] for arg in ("--extra-index-url", u))]


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
               str(ROOT / "client")]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = out.glob("labtrain_client-*.whl")
    return wheel


@pytest.fixture(scope="module")
def lab_python(client_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the client wheel and its extras installed, nothing else."""
    venv = tmp_path_factory.mktemp("lab") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", *local_indexes(), "--find-links", str(client_wheel.parent),
               "labtrain-client[pandas,yaml]"]  # fmt: skip
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return python


def test_the_wheel_holds_only_the_labtrain_package(client_wheel: Path) -> None:
    with zipfile.ZipFile(client_wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"labtrain"}
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == ["httpx>=0.24"]
    assert {r.split(";")[0].strip() for r in requires if "extra ==" in r} == {"pandas", "pyyaml"}


@pytest.mark.timeout(900)
def test_the_readme_example_runs_from_a_lab_environment_without_torch(
    lab_python: Path, stack: Stack, tmp_path: Path
) -> None:
    # A lab's folder, not this repository (whose packages `python -c` would find in its cwd).
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "model22.yaml", tmp_path / "examples")
    absent = subprocess.run([str(lab_python), "-c", "import torch"], cwd=tmp_path, capture_output=True, text=True)
    assert absent.returncode != 0  # no PyTorch: the client does not need it
    names = "import importlib.util as u; print([m for m in ('ml', 'core', 'api', 'cli', 'worker') if u.find_spec(m)])"
    found = subprocess.run([str(lab_python), "-c", names], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"  # nothing of the service's to shadow a lab's own packages
    where = "import labtrain; print(labtrain.__file__)"
    installed = subprocess.run([str(lab_python), "-c", where], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "site-packages" in installed.stdout

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using labtrain from your own code", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    env = {k: v for k, v in stack.env.items() if not k.startswith("LABTRAIN_")} | {"LABTRAIN_URL": stack.base_url}
    done = subprocess.run([str(lab_python), "-c", example.group(1)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("succeeded {")  # the status and the best validation metrics
    assert "'val_accuracy': " in lines[0]
    assert lines[1].split() == ["epoch", "train_loss", "val_accuracy"]  # the DataFrame's header
    assert [line.split()[1] for line in lines[2:5]] == ["298", "299", "300"]  # its last three epochs
    assert lines[5].split() == ["label", "p_0", "p_1"]
