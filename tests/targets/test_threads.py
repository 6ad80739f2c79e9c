"""Thread-pool sizing: physical cores from sysfs, the default pool size `import tvmcompress` sets, and a session
running on its artifact's num-cores.

The bug these guard against: TVM's default pool on x86 is half the logical CPUs (it assumes hyperthreads), so on
this 2-vCPU machine every artifact ran single-threaded, 1.6x slower than it could (threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import onnx

import tvmcompress
import zoo
from tvmcompress.targets.cpu_features import physical_cores


def _fake_sysfs(root, siblings: dict[int, str]):
    for cpu, text in siblings.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(text + "\n")
    return str(root)


def test_physical_cores_counts_smt_siblings_once(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    smt = _fake_sysfs(tmp_path / "smt", {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert physical_cores(smt) == 2
    plain = _fake_sysfs(tmp_path / "plain", {0: "0", 1: "1", 2: "2", 3: "3"})
    assert physical_cores(plain) == 4
    # No topology (containers without sysfs): every logical CPU counts.
    assert physical_cores(str(tmp_path / "missing")) == 4


def _pool_size(env: dict[str, str]) -> int:
    code = "import tvmcompress, tvm; print(tvm.get_global_func('runtime.NumThreads')())"
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")} | env
    return int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.split()[-1])


def test_import_sizes_the_pool_to_physical_cores_unless_the_user_chose():
    assert _pool_size({}) == physical_cores()
    assert _pool_size({"TVM_NUM_THREADS": "1"}) == 1
    assert _pool_size({"OMP_NUM_THREADS": "1"}) == 1


def test_session_uses_the_artifacts_num_cores(tmp_path):
    import tvm

    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    one = tvmcompress.compile(str(model), "host", output=str(tmp_path / "one"),
                              options=tvmcompress.CompileOptions.create(cores=1))
    assert one.session().threads == 1
    assert tvm.get_global_func("runtime.NumThreads")() == 1
    full = tvmcompress.load(tvmcompress.compile(str(model), "host", output=str(tmp_path / "all")).directory)
    pool_limit = min(physical_cores(), int(full.target["json"]["num-cores"]))
    assert full.session().threads == pool_limit
