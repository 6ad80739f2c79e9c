"""Tuning end to end: tune a small model, rebuild from the saved database, and measure over TVM RPC on loopback.

These measure real candidates (minutes on 2 cores), so they are in the slow tier.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress.config import RpcTarget, TuneConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_registered(tracker_port: int, key: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    """Poll the tracker until `server` offers `key` (it imports TVM first: seconds on a loaded machine)."""
    import tvm.rpc

    deadline = time.monotonic() + timeout_s
    while True:
        summary = tvm.rpc.connect_tracker("127.0.0.1", tracker_port).summary()
        if any(q.get("free", 0) for k, q in summary.get("queue_info", {}).items() if k == key):
            return
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the RPC server did not register key '{key}' with the tracker")
        time.sleep(0.5)


def _check(artifact):
    feeds = zoo.random_inputs(zoo.mlp(), {})
    got = artifact.run(feeds)["logits"]
    np.testing.assert_allclose(got, zoo.ort_outputs(zoo.mlp(), feeds)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tune_then_rebuild_from_database_without_measuring(tmp_path, monkeypatch):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    tuned = tvmcompress.compile(
        str(model), "host", output=str(tmp_path / "tuned"),
        options=tvmcompress.CompileOptions.create(tune=TuneConfig(trials=12, trials_per_round=4)),
    )
    _check(tuned)
    summary = tuned.manifest["tuning"]
    assert summary["measured_tasks"] == summary["tasks"] > 0 and summary["trials"] >= 12
    assert {d["use"] for d in summary["decisions"]} <= {"tuned", "default"}
    database = tmp_path / "tuned" / "tuning"
    assert (database / "database_tuning_record.json").stat().st_size > 0

    # Rebuild from the saved database: nothing may be measured, and the library is the same bytes.
    from tvm.s_tir import meta_schedule as ms

    from tvmcompress.schedules import tuning

    def no_measuring(*_a, **_k):
        raise AssertionError("rebuilding from a complete database must not measure")

    monkeypatch.setattr(ms.tune, "tune_tasks", no_measuring)
    monkeypatch.setattr(tuning, "_measure", no_measuring)
    start = time.perf_counter()
    again = tvmcompress.compile(
        str(model), "host", output=str(tmp_path / "again"),
        options=tvmcompress.CompileOptions.create(tune=TuneConfig(trials=12, database_dir=str(database))),
    )
    assert time.perf_counter() - start < 60
    assert again.manifest["tuning"]["measured_tasks"] == 0
    assert open(again.library_path, "rb").read() == open(tuned.library_path, "rb").read()


@pytest.mark.slow
def test_tuning_measures_over_rpc_on_loopback(tmp_path, tracker_port):
    port = tracker_port
    key = "tvmcompress-test"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = None
    try:
        server_port = _free_port()
        server = subprocess.Popen(
            # --port-end too: its default (9199) is below any ephemeral port, and the server exits at once.
            [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
             "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", key, "--no-fork"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_until_registered(port, key, server)
        model = tmp_path / "mlp.onnx"
        onnx.save(zoo.mlp(), model)
        rpc = RpcTarget("127.0.0.1", port, key)
        artifact = tvmcompress.compile(
            str(model), "host", output=str(tmp_path / "out"),
            options=tvmcompress.CompileOptions.create(tune=TuneConfig(trials=4, trials_per_round=4, rpc=rpc)),
        )
        summary = artifact.manifest["tuning"]
        # Candidates and the default schedules were timed on the RPC server: real latencies, not failures.
        assert summary["trials"] >= 4
        assert all(d["default_s"] < 1.0 for d in summary["decisions"])
        _check(artifact)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
