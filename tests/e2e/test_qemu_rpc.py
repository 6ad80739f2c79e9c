"""Tuning for aarch64 over TVM RPC, measured by our C++ RPC server running under qemu-aarch64.

A host-Python tracker and the emulated server on loopback; candidates are cross-compiled here and timed under
qemu (so the latencies are qemu's: this proves the path, not the schedules). Minutes on 2 cores: slow tier.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress.config import RpcTarget, TuneConfig
from tvmcompress.errors import TvmcompressError
from tvmcompress.schedules.tuning import FAILED_RUN_S
from tvmcompress.targets import qemu_rpc
from tvmcompress.targets.qemu import qemu_available

_needs_qemu = pytest.mark.skipif(qemu_available("aarch64") is not None, reason=str(qemu_available("aarch64")))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.cross
@_needs_qemu
def test_tuning_for_aarch64_measures_under_qemu_rpc(tmp_path, tracker_port):
    key = "tvmcompress-qemu-test"
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    with qemu_rpc.start_qemu_rpc_server("127.0.0.1", tracker_port, key) as server:
        pgid = server.process.pid
        artifact = tvmcompress.compile(
            str(model), "aarch64", output=str(tmp_path / "out"),
            options=tvmcompress.CompileOptions.create(
                tune=TuneConfig(trials=4, trials_per_round=4, rpc=RpcTarget("127.0.0.1", tracker_port, key))
            ),
        )
        sessions = server.sessions()
    assert not _group_alive(pgid), "the RPC server or one of its sessions outlived the context manager"

    summary = artifact.manifest["tuning"]
    # Every candidate and default schedule ran in its own session on the emulated server: the decisions hold
    # real latencies for every task (a failed build or run is recorded as FAILED_RUN_S).
    assert summary["trials"] >= 4 and summary["measured_tasks"] == summary["tasks"] > 0
    assert all(d["default_s"] < FAILED_RUN_S for d in summary["decisions"])
    assert any(d["tuned_s"] < FAILED_RUN_S for d in summary["decisions"])
    assert sessions >= summary["trials"] + summary["measured_tasks"]

    # The artifact runs under qemu-aarch64 like any aarch64 build; fp32 kernels, reordered accumulation: 1e-4.
    feeds = zoo.random_inputs(zoo.mlp(), {})
    got = artifact.run(feeds)["logits"]
    np.testing.assert_allclose(got, zoo.ort_outputs(zoo.mlp(), feeds)[0], rtol=1e-4, atol=1e-4)


def test_unreachable_tracker_fails_at_once_with_what_to_start():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(
        TvmcompressError,
        match=rf"cannot reach the RPC tracker at 127\.0\.0\.1:{port} \(.*\): start one with "
        rf"python -m tvm\.exec\.rpc_tracker --host 127\.0\.0\.1 --port {port}$",
    ):
        qemu_rpc.launch_qemu_rpc_server("127.0.0.1", port, "k")


def test_bad_key_is_refused_before_starting_anything():
    with pytest.raises(TvmcompressError, match=r"bad RPC key 'a b': use letters, digits"):
        qemu_rpc.launch_qemu_rpc_server("127.0.0.1", 9190, "a b")


@pytest.mark.slow
@pytest.mark.cross
@_needs_qemu
def test_stop_ends_a_server_stuck_in_a_session(tracker_port):
    """A client that holds a session open: stopping the server must still leave no process behind."""
    import tvm.rpc

    with qemu_rpc.start_qemu_rpc_server("127.0.0.1", tracker_port, "held") as server:
        session = tvm.rpc.connect_tracker("127.0.0.1", tracker_port).request("held", session_timeout=0)
        assert session.get_function("tvm.rpc.server.workpath")("x").endswith("/x")
        assert "session started" in server.log_text()
        pgid = server.process.pid
    assert not _group_alive(pgid)
    assert server.process.returncode == 0  # it handled SIGTERM (killing its session) rather than being killed
    del session
