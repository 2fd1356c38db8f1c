"""`labtrain watch` and `submit --watch` as a user runs them (the installed command in a
subprocess, against the `stack` fixture): the new user's session with model22 and its plot,
resuming after a dropped connection without repeating an epoch, and Ctrl-C leaving the run going."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_commands import LABTRAIN, ROOT, subprocess_env
from tests.conftest import TERMINAL, Stack, wait_for
from tests.integration.test_experiments import tiny_spec

pytestmark = pytest.mark.integration

# -- watch, Ctrl-C, plots: the running process as a user starts it ------------------------------------


def run(stack: Stack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABTRAIN, *args], cwd=ROOT, env=subprocess_env(stack), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def epoch_numbers(stderr: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in stderr.splitlines() if line.startswith("epoch ")]


@pytest.mark.timeout(180)
def test_new_user_submits_model22_with_watch_then_plots_it(stack: Stack, tmp_path: Path) -> None:
    done = run(stack, "submit", "examples/model22.yaml", "--watch")
    assert done.returncode == 0, done.stderr
    experiment_id, summary = done.stdout.strip().splitlines()
    assert epoch_numbers(done.stderr) == list(range(1, 301))  # every epoch once, in order, to the end
    assert "status succeeded" in done.stderr
    assert summary.startswith(f"{experiment_id} model22: succeeded after 300 epochs; best val_accuracy ")
    line = next(line for line in done.stderr.splitlines() if line.startswith("epoch 300/300"))
    assert "loss " in line
    assert "val_accuracy " in line

    picture = tmp_path / "boundary.png"
    plotted = run(stack, "plot", experiment_id, "decision-boundary", "--out", str(picture))
    assert plotted.returncode == 0, plotted.stderr
    assert plotted.stdout.strip() == str(picture)
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert picture.read_bytes() == stack.client.get(f"/experiments/{experiment_id}/plots/decision-boundary.png").content

    again = run(stack, "watch", experiment_id)  # late: the stored epochs are replayed, then the end
    assert again.returncode == 0, again.stderr
    assert epoch_numbers(again.stderr) == list(range(1, 301))


class DroppingProxy:
    """A TCP forwarder between the command and the API whose open connections the test can cut,
    as a flaky network or a restarting load balancer would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def close(self) -> None:
        self.listener.close()
        self.drop()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[DroppingProxy]:
    p = DroppingProxy(int(stack.base_url.rsplit(":", 1)[1]))
    yield p
    p.close()


def slow_spec(name: str, epochs: int) -> dict[str, Any]:
    """About 0.1 s an epoch: long enough to act while it runs."""
    return tiny_spec(name, epochs=epochs, dataset={"name": "spirals", "params": {"n_samples": 3000}}, batch_size=8)


class Reader:
    """The stderr lines of a running command, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "".join(self.lines)

    def rest(self) -> str:
        """Everything, once the command has exited (its stderr closed)."""
        self.thread.join(timeout=10)
        return self.text()


@pytest.mark.timeout(120)
def test_watch_resumes_after_a_dropped_connection_without_repeating_an_epoch(
    stack: Stack, proxy: DroppingProxy
) -> None:
    experiment_id = stack.submit(slow_spec("cli-drop", epochs=5000))["id"]  # still running when cut
    env = subprocess_env(stack) | {"LABTRAIN_URL": f"http://127.0.0.1:{proxy.port}"}
    process = subprocess.Popen([*LABTRAIN, "watch", experiment_id], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    reader = Reader(process)
    try:
        wait_for(lambda: epoch_numbers(reader.text()), 60, what="the first epoch on the watch")
        proxy.drop()
        wait_for(lambda: "reconnecting" in reader.text(), 30, what="the watch to reconnect")
        seen = len(epoch_numbers(reader.text()))
        wait_for(lambda: len(epoch_numbers(reader.text())) > seen + 3, 60, what="epochs after the reconnect")
    finally:
        stack.client.post(f"/experiments/{experiment_id}/cancel")
    assert process.wait(timeout=60) == 1  # the run ended other than succeeded
    assert process.stdout is not None
    stdout = process.stdout.read()
    done = stack.wait_terminal(experiment_id)
    assert done["status"] == "cancelled"
    # Resumed with Last-Event-ID: every epoch of the run shown once, in order, none lost.
    assert epoch_numbers(reader.rest()) == list(range(1, done["epochs_done"] + 1))
    assert f"{experiment_id} cli-drop: cancelled after {done['epochs_done']} epochs" in stdout


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the command, as a terminal gives it: a test run started in
    the background of a non-interactive shell (`make test &`) passes SIGINT on ignored, and
    Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(90)
def test_ctrl_c_stops_watching_and_leaves_the_run_going(stack: Stack) -> None:
    experiment_id = stack.submit(slow_spec("cli-ctrl-c", epochs=5000))["id"]
    process = subprocess.Popen([*LABTRAIN, "watch", experiment_id], cwd=ROOT, env=subprocess_env(stack), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_ctrl_c_as_in_a_terminal)  # fmt: skip
    reader = Reader(process)
    try:
        wait_for(lambda: epoch_numbers(reader.text()), 60, what="the first epoch on the watch")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
        assert process.returncode == 130
        assert f"the run goes on: labtrain watch {experiment_id}" in reader.rest()
        time.sleep(0.5)
        experiment = stack.experiment(experiment_id)
        assert experiment["status"] == "running"
        assert not experiment["cancel_requested"]
    finally:
        process.kill()
        stack.client.post(f"/experiments/{experiment_id}/cancel")
    assert stack.wait_terminal(experiment_id, timeout=30)["status"] in TERMINAL
