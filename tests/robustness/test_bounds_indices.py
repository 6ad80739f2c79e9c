"""Index checks of Gather, GatherElements, GatherND, ScatterElements and ScatterND (onnx_ops/indexing.py).

One model holds every op, each fed by its own graph input, so that one compile covers them all: valid indices
(negative ones included) must equal onnxruntime's outputs exactly (the ops only move values, so tolerance 0);
one out-of-range index in any input must be an error that names the op and the input, in the Python API, the
CLI (one stderr line, exit 2) and the C API of an exported bundle (_ERR_ARGUMENT), never a read or write past
the tensor. Constant indices out of range fail at compile time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import zoo
from tvmcompress import compile as tvmc_compile
from tvmcompress.errors import TvmcompressError

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)
HERE = Path(__file__).parent


def _indexing_model() -> onnx.ModelProto:
    """A 10x4 table behind Gather (int64 and int32 ids), and one op of each other kind on a 3x4 input x."""
    v = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0, name="embed"),
        helper.make_node("Gather", ["x", "cols"], ["picked"], axis=1, name="pick_cols"),
        helper.make_node("GatherElements", ["x", "ge_idx"], ["ge"], axis=1, name="gather_el"),
        helper.make_node("GatherND", ["x", "nd_idx"], ["nd"], name="gather_nd"),
        helper.make_node("ScatterElements", ["x", "se_idx", "se_upd"], ["se"], axis=0, name="scatter_el"),
        helper.make_node("ScatterND", ["x", "snd_idx", "snd_upd"], ["snd"], name="scatter_nd"),
    ]
    graph = helper.make_graph(
        nodes, "indexing",
        [v("ids", TensorProto.INT64, [1, 3]), v("x", TensorProto.FLOAT, [3, 4]), v("cols", TensorProto.INT32, [2]),
         v("ge_idx", TensorProto.INT64, [3, 2]), v("nd_idx", TensorProto.INT64, [2, 2]),
         v("se_idx", TensorProto.INT64, [1, 4]), v("se_upd", TensorProto.FLOAT, [1, 4]),
         v("snd_idx", TensorProto.INT64, [2, 1]), v("snd_upd", TensorProto.FLOAT, [2, 4])],
        [v("rows", TensorProto.FLOAT, [1, 3, 4]), v("picked", TensorProto.FLOAT, [3, 2]),
         v("ge", TensorProto.FLOAT, [3, 2]), v("nd", TensorProto.FLOAT, [2]), v("se", TensorProto.FLOAT, [3, 4]),
         v("snd", TensorProto.FLOAT, [3, 4])],
        [numpy_helper.from_array(TABLE, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def _valid_feeds() -> dict[str, np.ndarray]:
    """In range, with negative indices in every input (ONNX counts them from the end)."""
    return {
        "ids": np.array([[0, -1, 9]], np.int64),
        "x": np.arange(12, dtype=np.float32).reshape(3, 4),
        "cols": np.array([-4, 3], np.int32),
        "ge_idx": np.array([[0, -1], [3, 1], [-4, 2]], np.int64),
        "nd_idx": np.array([[-3, 3], [2, -1]], np.int64),
        "se_idx": np.array([[-1, 0, 1, -3]], np.int64),
        "se_upd": np.full((1, 4), 100.0, np.float32),
        "snd_idx": np.array([[-1], [0]], np.int64),
        "snd_upd": np.full((2, 4), -5.0, np.float32),
    }


# (input, bad value, where it goes, node name, valid range in the message)
BAD = [
    ("ids", 10, (0, 2), "embed", "[-10, 9]"),
    ("ids", 1_000_000, (0, 2), "embed", "[-10, 9]"),
    ("ids", -11, (0, 0), "embed", "[-10, 9]"),
    ("cols", 4, (1,), "pick_cols", "[-4, 3]"),
    ("cols", -(2**31), (0,), "pick_cols", "[-4, 3]"),
    ("ge_idx", 4, (2, 1), "gather_el", "[-4, 3]"),
    ("nd_idx", 3, (0, 0), "gather_nd", "(3, 4)"),
    ("nd_idx", -5, (1, 1), "gather_nd", "(3, 4)"),
    ("se_idx", 3, (0, 3), "scatter_el", "[-3, 2]"),
    ("se_idx", 2**40, (0, 0), "scatter_el", "[-3, 2]"),
    ("snd_idx", -4, (1, 0), "scatter_nd", "(3,)"),
]


@pytest.fixture(scope="module")
def indexing(tmp_path_factory):
    """(ONNX model path, its compiled artifact) for the host."""
    tmp = tmp_path_factory.mktemp("indexing")
    path = tmp / "indexing.onnx"
    onnx.save(_indexing_model(), str(path))
    return path, tvmc_compile(path, output=tmp / "art")


def _bad_feeds(name, value, position):
    feeds = _valid_feeds()
    feeds[name] = feeds[name].copy()
    feeds[name][position] = value
    return feeds


def test_valid_and_negative_indices_match_onnxruntime(indexing):
    path, artifact = indexing
    feeds = _valid_feeds()
    expected = zoo.ort_outputs(onnx.load(str(path)), feeds)
    got = artifact.run(feeds)
    for spec, want in zip(artifact.outputs, expected):
        np.testing.assert_array_equal(got[spec.name], want, err_msg=spec.name)


@pytest.mark.parametrize("name, value, position, node, valid", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_out_of_range_index_is_an_error_naming_the_op_and_input(indexing, name, value, position, node, valid):
    path, artifact = indexing
    feeds = _bad_feeds(name, value, position)
    # onnxruntime refuses the same inputs (the reference this check follows).
    with pytest.raises(Exception):
        zoo.ort_outputs(onnx.load(str(path)), feeds)
    with pytest.raises(TvmcompressError) as err:
        artifact.run(feeds)
    message = str(err.value)
    assert f'node "{node}"' in message and f'model input "{name}"' in message, message
    assert "index out of range" in message and valid in message, message
    # The session survives the refused call: a valid call afterwards still gives the right rows.
    np.testing.assert_array_equal(artifact.run(_valid_feeds())["rows"][0], TABLE[[0, 9, 9]])


# A process of its own: the far index used to kill the process with SIGSEGV.
@pytest.mark.parametrize("ids", [[[0, 5, 1_000_000]], pytest.param([[0, 1, 10]], marks=pytest.mark.slow)])
def test_cli_run_with_out_of_range_ids_exits_2_with_one_line(indexing, ids, tmp_path):
    _, artifact = indexing
    feeds = _valid_feeds()
    feeds["ids"] = np.array(ids, np.int64)
    np.savez(tmp_path / "ids.npz", **feeds)
    result = subprocess.run(
        [sys.executable, "-m", "tvmcompress.cli", "run", str(artifact.directory), "--inputs", str(tmp_path / "ids.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert 'Gather node "embed", input 1 (indices = model input "ids")' in lines[0]
    assert "outside [-10, 9]" in lines[0]


def test_constant_indices_out_of_range_fail_at_compile_time(tmp_path):
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1, name="g")], "const_idx",
        [v("x", TensorProto.FLOAT, [2, 4])], [v("y", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(np.array([1, 4], np.int64), "idx")],
    )
    path = tmp_path / "const.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    with pytest.raises(TvmcompressError, match=r'constant index out of range: Gather node "g".*\[-4, 3\]'):
        tvmc_compile(path, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_constant_negative_indices_count_from_the_end(tmp_path):
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1, name="g")], "const_idx",
        [v("x", TensorProto.FLOAT, [2, 4])], [v("y", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(np.array([[-1, 0], [-4, 2]], np.int64), "idx")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = tvmc_compile(tmp_path / "m.onnx", output=tmp_path / "out").run({"x": x})["y"]
    np.testing.assert_array_equal(got, zoo.ort_outputs(model, {"x": x})[0])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_c_api_run_returns_err_argument_for_an_out_of_range_index(indexing, tmp_path):
    """A shared bundle of the model, driven by bounds_c_api.c: in-range ids run, out-of-range ones return
    IDX_ERR_ARGUMENT with the message, and the model still runs afterwards."""
    sys.path.insert(0, str(HERE.parent / "deploy"))
    from export_helpers import cmake_build

    _, artifact = indexing
    bundle = tmp_path / "bundle"
    artifact.export(bundle, name="idx")
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(HERE / "bounds_c_api.c", source / "main.c")
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(bounds_c_api C CXX)\n"
        f'add_subdirectory("{bundle}" bundle)\n'
        "add_executable(bounds_c_api main.c)\ntarget_link_libraries(bounds_c_api PRIVATE tvmcompress::idx)\n"
        "set_target_properties(bounds_c_api PROPERTIES LINKER_LANGUAGE CXX)\n"
    )
    build = cmake_build(source, tmp_path / "build")
    shutil.copy(bundle / "model.so", build / "model.so")
    feeds = _valid_feeds()
    inputs = b"".join(np.ascontiguousarray(feeds[spec.name]).astype(spec.dtype).tobytes() for spec in artifact.inputs)
    (tmp_path / "in.bin").write_bytes(inputs)
    result = subprocess.run([str(build / "bounds_c_api"), str(tmp_path / "in.bin")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" ", 1)[0]: line.split(" ", 2)[1:] for line in result.stdout.splitlines()}
    assert {case: int(rest[0]) for case, rest in lines.items()} == {
        "create": 0, "run_valid": 0, "row_9": 0, "run_10": 1, "run_1000000": 1, "run_valid_again": 0,
    }
    assert [spec.name for spec in artifact.inputs][0] == "ids"
    assert lines["run_1000000"][1].startswith('idx: IndexError: index out of range: Gather node "embed"')


@pytest.mark.cross
@pytest.mark.slow
def test_aarch64_artifact_under_qemu_refuses_out_of_range_ids(tmp_path):
    """The same check compiled for AArch64 and run under qemu-user: the kernel's assert, not a wild read."""
    from tvmcompress.targets.runtime_cache import FOREIGN_ARCHES, missing_tool

    reason = missing_tool(FOREIGN_ARCHES["aarch64"])
    if reason is not None:
        pytest.skip(reason)
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0, name="embed")], "gather",
        [v("ids", TensorProto.INT64, [1, 3])], [v("rows", TensorProto.FLOAT, [1, 3, 4])],
        [numpy_helper.from_array(TABLE, "table")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
              str(tmp_path / "g.onnx"))
    artifact = tvmc_compile(tmp_path / "g.onnx", "aarch64", output=tmp_path / "out")
    got = artifact.run({"ids": np.array([[0, -1, 9]], np.int64)})["rows"]
    np.testing.assert_array_equal(got[0], TABLE[[0, 9, 9]])
    for bad in (10, 1_000_000, -11):
        with pytest.raises(TvmcompressError, match=r'index out of range: Gather node "embed".*\[-10, 9\]'):
            artifact.run({"ids": np.array([[0, 1, bad]], np.int64)})


def test_tensor_scatter_linear_write_past_the_cache_is_an_error(tmp_path):
    """TensorScatter (opset 24, linear mode) writes update's 2 positions from write_indices[b] on: 3 of a 5-long
    cache is the last valid start; onnx's reference evaluator gives the expected values."""
    from onnx.reference import ReferenceEvaluator

    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("TensorScatter", ["cache", "update", "write"], ["y"], axis=2, name="kv")], "ts",
        [v("cache", TensorProto.FLOAT, [2, 1, 5, 3]), v("update", TensorProto.FLOAT, [2, 1, 2, 3]),
         v("write", TensorProto.INT64, [2])], [v("y", TensorProto.FLOAT, [2, 1, 5, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)], ir_version=10)
    rng = np.random.default_rng(0)
    feeds = {"cache": rng.standard_normal((2, 1, 5, 3)).astype(np.float32),
             "update": rng.standard_normal((2, 1, 2, 3)).astype(np.float32), "write": np.array([0, 3], np.int64)}
    artifact = tvmc_compile(model, output=tmp_path / "out")
    np.testing.assert_array_equal(artifact.run(feeds)["y"], ReferenceEvaluator(model).run(None, feeds)[0])
    for write in ([0, 4], [-1, 0], [2**40, 0]):
        with pytest.raises(TvmcompressError, match=r'index out of range: TensorScatter node "kv", input 2 '
                                                   r"\(write_indices.*outside \[0, 4\]"):
            artifact.run({**feeds, "write": np.array(write, np.int64)})


def test_the_benchmark_baseline_really_has_no_checks():
    """bench/bench_runtime_checks.py times the default build against one without the checks: the baseline must
    lack the index check kernel and PropagateNaN, and still count negative indices from the end."""
    sys.path.insert(0, str(HERE.parent.parent / "bench"))
    import bench_runtime_checks
    from tvmcompress import frontend
    from tvmcompress.schedules import cpu_pipeline

    from tvmcompress.schedules.propagate_nan import PropagateNaN

    model = frontend.canonicalize(bench_runtime_checks.build_bert_embedding(seq=4, hidden=8))

    def has_check(mod) -> bool:
        return any(str(gvar).find("check_indices") >= 0 for gvar in mod.get_global_vars())

    assert has_check(frontend.import_to_relax(model))
    with bench_runtime_checks.without_runtime_checks():
        baseline = frontend.import_to_relax(model)
        assert cpu_pipeline.PropagateNaN is not PropagateNaN
    assert not has_check(baseline)
    assert cpu_pipeline.PropagateNaN is PropagateNaN  # restored for the rest of the process


# ---- MaxUnpool: its indices address the flattened output ------------------------------------------------------


def _maxunpool_model() -> onnx.ModelProto:
    """x [1, 2, 2, 3] unpooled by a 2x2 kernel, stride 2, pads 0,0,0,1: output [1, 2, 4, 5], 40 positions."""
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 1],
                          name="unpool")],
        "unpool", [v("x", TensorProto.FLOAT, [1, 2, 2, 3]), v("i", TensorProto.INT64, [1, 2, 2, 3])],
        [v("y", TensorProto.FLOAT, [1, 2, 4, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=9)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def maxunpool(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("maxunpool")
    path = tmp / "unpool.onnx"
    onnx.save(_maxunpool_model(), str(path))
    return path, tvmc_compile(path, output=tmp / "art")


def _unpool_feeds(indices=None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    valid = np.sort(rng.choice(40, 12, replace=False)).astype(np.int64)  # distinct: no write order to depend on
    valid[-1] = 39  # the last position of the output
    chosen = valid if indices is None else np.asarray(indices, np.int64)
    return {"x": rng.standard_normal((1, 2, 2, 3)).astype(np.float32), "i": chosen.reshape(1, 2, 2, 3)}


def test_maxunpool_valid_indices_match_onnxruntime(maxunpool):
    path, artifact = maxunpool
    feeds = _unpool_feeds()
    np.testing.assert_array_equal(artifact.run(feeds)["y"], zoo.ort_outputs(onnx.load(str(path)), feeds)[0])


@pytest.mark.parametrize("bad", [40, -1, 10**6, -(2**62)])
def test_maxunpool_out_of_range_index_is_an_error(maxunpool, bad):
    path, artifact = maxunpool
    indices = list(range(12))
    indices[7] = bad
    feeds = _unpool_feeds(indices)
    with pytest.raises(Exception, match="out of bounds"):  # onnxruntime: valid range [0, 40)
        zoo.ort_outputs(onnx.load(str(path)), feeds)
    with pytest.raises(TvmcompressError) as err:
        artifact.run(feeds)
    message = str(err.value)
    assert 'MaxUnpool node "unpool", input 1 (I = model input "i")' in message, message
    assert "index out of range" in message and "outside [0, 39]" in message, message


def test_cli_run_of_maxunpool_with_a_bad_index_exits_2_with_one_line(maxunpool, tmp_path):
    _, artifact = maxunpool
    np.savez(tmp_path / "bad.npz", **_unpool_feeds([40] + list(range(11))))
    result = subprocess.run(
        [sys.executable, "-m", "tvmcompress.cli", "run", str(artifact.directory), "--inputs", str(tmp_path / "bad.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and result.stdout == "", result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and "MaxUnpool" in lines[0], result.stderr
