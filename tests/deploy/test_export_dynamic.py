"""The deploy bundle of a dynamic-shape artifact (issue 21): model.h carries the ranges, and m_run_shaped runs any
batch in them and refuses one outside, through the C API."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import HERE, cmake_build
from onnx import TensorProto, helper, numpy_helper

from tvmcompress import CompileOptions, compile as tvmc_compile, load


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (0.3 * rng.standard_normal((16, 10))).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.slow  # cmake + a C++ build of the bundle: ~40 s here
def test_run_shaped_runs_every_batch_in_the_range_and_refuses_others(tmp_path):
    model = _mlp()
    onnx.save(model, tmp_path / "m.onnx")
    tvmc_compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "out",
                 options=CompileOptions.create(input_shapes={"x": ("N", 16)}, dims={"N": (1, 8)}))
    bundle = tmp_path / "bundle"
    load(tmp_path / "out").export(bundle, name="m")
    header = (bundle / "model.h").read_text()
    assert '#define M_NUM_DIMS 1' in header and 'm_dim_names[1] = {"N"}' in header
    assert "m_dim_min[1] = {1}" in header and "m_dim_max[1] = {8}" in header
    assert "m_input0_dim_symbols[2] = {0, -1}" in header
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(HERE / "dynamic_shapes.c", source / "main.c")
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(dynamic_shapes C CXX)\n"
        f'add_subdirectory("{bundle}" bundle)\n'
        "add_executable(dynamic_shapes main.c)\ntarget_link_libraries(dynamic_shapes PRIVATE tvmcompress::m)\n"
        "set_target_properties(dynamic_shapes PROPERTIES LINKER_LANGUAGE CXX)\n"
    )
    build = cmake_build(source, tmp_path / "build")
    shutil.copy(bundle / "model.so", build / "model.so")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
        (tmp_path / "in.bin").write_bytes(x.tobytes())
        result = subprocess.run([str(build / "dynamic_shapes"), str(batch), str(tmp_path / "in.bin"),
                                 str(tmp_path / "out.bin")], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.startswith(f"0 {batch},10 "), result.stdout + result.stderr
        got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.float32).reshape(batch, 10)
        np.testing.assert_allclose(got, session.run(None, {"x": x})[0], rtol=0, atol=1e-5)  # one 16-term dot
    result = subprocess.run([str(build / "dynamic_shapes"), "9", str(tmp_path / "in.bin"), str(tmp_path / "o.bin")],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "1 0,0 m: run_shaped: input 0 dim 0 (N) is 9, outside 1..8", result.stdout
