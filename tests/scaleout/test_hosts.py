"""Worker hosts that share only PostgreSQL and Redis (tests/scaleout/conftest.py): a host cut off
the network mid-run and brought back, Redis restarted empty, and models and checkpoints larger
than a chunk written on one host and read on the other and by the API, with no shared directory.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.artifact_store import CHUNK_BYTES
from core.db import create_db_engine, session_factory
from core.tables import Artifact, ArtifactChunk, EpochMetric
from tests.conftest import wait_for
from tests.integration.serving import assert_same, expected_predictions, predict, sample_rows
from tests.integration.test_experiments import tiny_spec
from tests.integration.test_sweeps import base_spec, post_sweep, wait_sweep
from tests.scaleout.conftest import Cluster, start_cluster
from worker.reconciler import message_ids

pytestmark = [pytest.mark.scaleout, pytest.mark.integration]


def running_on(cluster: Cluster, label: str) -> dict[str, dict[str, Any]]:
    """The experiments the database says are running on host `label`, by id."""
    items = cluster.stack.client.get("/experiments", params={"status": "running", "limit": 200}).json()["items"]
    return {e["id"]: e for e in items if (e.get("worker") or "").endswith(f"@host-{label}")}


def epoch_rows(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """experiment id → (epoch rows, distinct epochs), straight from the database."""
    engine = create_db_engine(cluster.database_url)
    try:
        with session_factory(engine)() as session:
            stmt = select(
                EpochMetric.experiment_id, func.count(), func.count(func.distinct(EpochMetric.epoch))
            ).group_by(EpochMetric.experiment_id)
            return {i: (n, distinct) for i, n, distinct in session.execute(stmt)}
    finally:
        engine.dispose()


def finished_lines(cluster: Cluster, experiment_id: str) -> list[str]:
    """The workers (hostnames) whose log says they wrote `experiment_id`'s terminal status."""
    pattern = re.compile(rf"experiment {experiment_id}: (succeeded|failed|cancelled|diverged)\b")
    return [name for name in cluster.workers.logs if pattern.search(cluster.workers.log(name))]


@pytest.mark.timeout(900)
def test_a_host_cut_off_mid_run_and_restored_loses_nothing_and_finishes_nothing_twice(tmp_path: Path) -> None:
    started = time.time()
    with start_cluster(tmp_path) as cluster:
        stack = cluster.stack
        sweep = post_sweep(
            stack,
            {"name": "across hosts", "base": base_spec(epochs=300),
             "grid": {"optimizer.lr": [0.002, 0.004, 0.006, 0.008, 0.01]}, "repeats": 5},
        )  # fmt: skip
        members: list[str] = sweep["experiment_ids"]
        assert len(members) == 25
        first = [stack.submit(tiny_spec(f"first-{i}", epochs=200 if i < 4 else 20 + 5 * (i % 6)))["id"]
                 for i in range(40)]  # fmt: skip

        # Cut the host that trains the sweep's group, once its group and a single run are under way.
        def group_host() -> str | None:
            for label in ("a", "b"):
                running = running_on(cluster, label)
                if any(i in members and e["epochs_done"] >= 30 for i, e in running.items()) and len(running) > 25:
                    return label
            return None

        cut = wait_for(group_host, 120, interval=0.2, what="a host training the group and a single run")
        other = "b" if cut == "a" else "a"
        cluster.hosts[cut].cut()
        cut_at = time.time()
        stranded = running_on(cluster, cut)  # what the cut host held: it can no longer write
        assert len(set(stranded) & set(members)) == 25, stranded.keys()  # the whole group, at least

        # Re-sent once their heartbeat is stale, taken over by the other host, resumed there.
        def taken_over() -> bool:
            return all(
                (e := stack.experiment(i))["worker"].endswith(f"@host-{other}") and e["attempt"] >= 2 for i in stranded
            )

        wait_for(taken_over, 300, interval=0.5, what="the other host to take over the cut host's runs")
        print(f"taken over {time.time() - cut_at:.0f} s after the cut")  # noqa: T201

        cluster.hosts[cut].restore()
        restored_at = time.time()
        stack.wait_ready(2, timeout=180)  # the cut host's worker answers through the broker again
        second = [stack.submit(tiny_spec(f"second-{i}", epochs=80))["id"] for i in range(20)]

        # The cut host comes back fenced, and takes new work.
        (cut_worker,) = cluster.workers.on(cluster.hosts[cut])

        def cut_host_claims_new_work() -> bool:
            log = cluster.workers.log(cut_worker)
            return any(f"experiment {i}: attempt" in log for i in second)

        wait_for(cut_host_claims_new_work, 180, interval=0.5, what="the restored host to claim new work")

        broker = cluster.broker.client()
        waiting = {i for raw in broker.lrange("cpu", 0, -1) for i in message_ids(raw)}
        broker.close()
        cluster.broker.restart()  # empty: every message waiting or delivered is gone
        assert waiting, "nothing was waiting in the queue when Redis restarted"

        everything = [*members, *first, *second]
        for i in everything:
            done = stack.wait_terminal(i, timeout=300)
            assert done["status"] == "succeeded", (i, done["error"])
            assert done["epochs_done"] == done["spec"]["epochs"], i

        # Every epoch exactly once (the unique constraint forbids a double, the count a gap).
        rows = epoch_rows(cluster)
        for i in everything:
            epochs = stack.experiment(i)["spec"]["epochs"]
            assert rows[i] == (epochs, epochs), i

        # No run finished on two hosts: one terminal line per experiment, from the recorded worker.
        for i in everything:
            recorded = stack.experiment(i)["worker"]
            assert finished_lines(cluster, i) == [recorded], i
        # What the cut host held finished under a new claim: on the other host, or (taken over again
        # when its new holder fell silent) by a later attempt, never by the attempt the cut fenced off.
        for i in stranded:
            e = stack.experiment(i)
            assert e["worker"].endswith(f"@host-{other}") or e["attempt"] >= 3, (i, e["worker"], e["attempt"])
        # Taken over by a message sent again: by the reconciler ("(running)"), or one already waiting.
        logs = stack.all_worker_logs()
        (other_worker,) = cluster.workers.on(cluster.hosts[other])
        assert re.search(rf"attempt [2-9] on {re.escape(other_worker)} \(resumed\)", cluster.workers.log(other_worker))
        # Sent again after Redis came back empty: every message that was waiting, but those a worker
        # took in the instant between the look and the restart (at most one per training process).
        resent = {i for i in waiting if f"{i} (queued)" in logs}
        assert len(resent) >= len(waiting) - 4, waiting - resent

        # The sweep's table is complete.
        wait_sweep(stack, sweep["id"], timeout=60)
        table = stack.client.get(f"/sweeps/{sweep['id']}/table").json()["rows"]
        assert len(table) == 5  # one row per learning rate, its 5 repeats averaged
        assert sorted(i for row in table for i in row["experiment_ids"]) == sorted(members)
        for row in table:
            assert row["status"] == "succeeded", row
            assert row["n"] == 5, row
            assert row["val_accuracy"] is not None, row
        assert sum(1 for row in table if row["best"]) == 1
        print(  # noqa: T201  (the figures of the run, in the test's output with -s)
            f"cut host-{cut} for {restored_at - cut_at:.1f} s holding {len(stranded)} runs "
            f"({sum(f'{i} (running)' in logs for i in stranded)} re-sent as running by the reconciler); "
            f"{len(waiting)} waiting at the Redis restart; {time.time() - started:.0f} s in all"
        )


WIDE_SPEC = {  # 363,001 parameters: a 1.45 MB model, a 4.4 MB checkpoint (weights and Adam's moments)
    "dataset": {"name": "spirals", "params": {"n_samples": 300, "noise": 0.1}, "seed": 0},
    "model": {"type": "mlp", "hidden_layers": 2, "neurons": 600, "activation": "relu"},
    "loss": "bce",
    "optimizer": {"name": "adam", "lr": 0.001},
    "batch_size": 128,
    "seed": 0,
}


def stored(cluster: Cluster, experiment_id: str, kind: str) -> tuple[int, int, str | None] | None:
    """(size, chunks, sha256) of an experiment's artifact as the database holds it; None if absent."""
    engine = create_db_engine(cluster.database_url)
    try:
        with session_factory(engine)() as session:
            row = session.scalars(
                select(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.kind == kind)
            ).one_or_none()
            if row is None:
                return None
            assert row.location is None  # no directory anywhere: in the database
            chunks = session.scalar(select(func.count()).where(ArtifactChunk.artifact_id == row.id))
            return row.size, int(chunks or 0), row.sha256
    finally:
        engine.dispose()


@pytest.mark.timeout(600)
def test_models_and_checkpoints_larger_than_a_chunk_cross_hosts_without_a_shared_directory(tmp_path: Path) -> None:
    inline_max = {"LABTRAIN_ARTIFACT_INLINE_MAX_BYTES": str(CHUNK_BYTES)}  # larger blobs: in chunks
    with start_cluster(tmp_path, env_extra=inline_max, workers_on=("a",)) as cluster:
        stack = cluster.stack
        (worker_a,) = cluster.workers.on(cluster.hosts["a"])

        # A model written on host A, read by the API: downloaded and served.
        small = stack.wait_terminal(stack.submit({"name": "wide", "epochs": 3, **WIDE_SPEC})["id"], timeout=120)
        assert small["status"] == "succeeded", small["error"]
        assert small["worker"] == worker_a
        size, chunks, sha256 = stored(cluster, small["id"], "model") or (0, 0, None)
        assert size > CHUNK_BYTES
        assert chunks == -(-size // CHUNK_BYTES)
        downloaded = stack.client.get(f"/experiments/{small['id']}/model")
        assert downloaded.status_code == 200
        assert len(downloaded.content) == size
        assert downloaded.headers["etag"] == f'"{sha256}"'
        rows = sample_rows({"name": "rows", "epochs": 1, **WIDE_SPEC}, 6)
        served = predict(stack.client, small["id"], rows)
        assert served.status_code == 200, served.text
        assert_same(served.json()["predictions"], expected_predictions(downloaded.content, rows))

        # A checkpoint written on host A, read by a worker on host B, which resumes the run there.
        long = stack.submit({"name": "wide-long", "epochs": 60, **WIDE_SPEC})

        def checkpointed() -> bool:
            checkpoint = stored(cluster, long["id"], "checkpoint")
            return checkpoint is not None and checkpoint[1] >= 2 and stack.experiment(long["id"])["epochs_done"] >= 5

        wait_for(checkpointed, 120, interval=0.2, what="a checkpoint in several chunks")
        killed_at = time.time()
        cluster.workers.kill(worker_a)  # host A loses power
        worker_b = cluster.workers.start(cluster.hosts["b"])

        done = stack.wait_terminal(long["id"], timeout=240)
        assert done["status"] == "succeeded", done["error"]
        assert done["worker"] == worker_b
        assert done["attempt"] == 2
        assert "(resumed)" in cluster.workers.log(worker_b)
        engine = create_db_engine(cluster.database_url)
        try:
            with session_factory(engine)() as session:
                first_epoch = session.scalar(
                    select(func.min(EpochMetric.created_at)).where(EpochMetric.experiment_id == long["id"])
                )
                epochs = session.scalar(select(func.count()).where(EpochMetric.experiment_id == long["id"]))
        finally:
            engine.dispose()
        assert first_epoch is not None
        assert first_epoch.timestamp() < killed_at
        assert epochs == 60
        assert stored(cluster, long["id"], "checkpoint") is None  # a finished run keeps no checkpoint

        # The model host B wrote, read by the API.
        size, chunks, sha256 = stored(cluster, long["id"], "model") or (0, 0, None)
        assert chunks >= 2
        model = stack.client.get(f"/experiments/{long['id']}/model")
        assert model.status_code == 200
        assert len(model.content) == size
        served = predict(stack.client, long["id"], rows)
        assert served.status_code == 200, served.text
        assert_same(served.json()["predictions"], expected_predictions(model.content, rows))
        assert not any(p.is_file() and p.suffix == ".safetensors" for p in tmp_path.rglob("*"))  # no files
