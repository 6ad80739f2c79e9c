"""One dynamic-shape artifact against ONNX Runtime at several shapes (issue 21): an MLP with a dynamic batch and
a small CRNN-like conv net with a dynamic width (conv, pool, reshape to a sequence, per-column classifier)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmcompress
from tvmcompress.cli import main
from tvmcompress.config import CompileOptions

# float32 kernels against ORT's: reassociated sums over <= 72 terms of O(1) values.
ATOL = 1e-4


def _model(nodes, inputs, outputs, weights) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(w, n) for n, w in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def mlp(rng) -> onnx.ModelProto:
    weights = {"w1": (0.3 * rng.standard_normal((16, 32))).astype(np.float32),
               "b1": (0.1 * rng.standard_normal(32)).astype(np.float32),
               "w2": (0.3 * rng.standard_normal((32, 10))).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], weights)


def conv_sequence(rng) -> onnx.ModelProto:
    """[1, 3, 8, W] -> conv 3x3 -> relu -> maxpool 2x2 -> [1, 8, 4, W/2] -> reshape [1, 32, W/2] -> transpose
    [W/2, 1, 32] -> matmul [32, 5]: a CRNN's shape flow, without the LSTM."""
    weights = {"w": (0.3 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32),
               "fc": (0.3 * rng.standard_normal((32, 5))).astype(np.float32),
               "shape": np.array([1, 32, -1], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["s"]),
             helper.make_node("Transpose", ["s"], ["t"], perm=[2, 0, 1]),
             helper.make_node("MatMul", ["t", "fc"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, "width"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", 1, 5])], weights)


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlp")
    model = mlp(np.random.default_rng(0))
    onnx.save(model, tmp / "mlp.onnx")
    assert main(["compile", str(tmp / "mlp.onnx"), "-o", str(tmp / "out"), "--input-shape", "x=N,16",
                 "--dim", "N=1..64"]) == 0
    return model, tvmcompress.load(tmp / "out"), tmp


@pytest.fixture(scope="module")
def conv_artifact(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conv")
    model = conv_sequence(np.random.default_rng(1))
    onnx.save(model, tmp / "conv.onnx")
    artifact = tvmcompress.compile(tmp / "conv.onnx", "host", output=tmp / "out",
                                   options=CompileOptions.create(input_shapes={"x": (1, 3, 8, "W")},
                                                                 dims={"W": (8, 256)}))
    return model, artifact


def _ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_dynamic_batch_mlp_matches_onnxruntime(mlp_artifact, batch):
    model, artifact, _ = mlp_artifact
    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    got = artifact.run({"x": x})["y"]
    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, _ort(model, {"x": x}), rtol=0, atol=ATOL)


def test_dynamic_batch_manifest_records_the_ranges(mlp_artifact):
    _, artifact, _ = mlp_artifact
    manifest = artifact.manifest
    assert manifest["dynamic_dims"] == {"N": {"min": 1, "max": 64}}
    assert manifest["inputs"][0]["dims"] == ["N", 16] and manifest["inputs"][0]["shape"] == [64, 16]
    assert manifest["outputs"][0]["dims"] == ["N", 10] and manifest["outputs"][0]["shape"] == [64, 10]
    # Verified against ORT at the smallest, a middle and the largest batch.
    assert [s["dims"] for s in manifest["verification"]["shapes"]] == [{"N": 1}, {"N": 32}, {"N": 64}]
    # The plan holds the largest batch: the 64 x 32 hidden layer alone is 8 KiB.
    assert manifest["memory"]["peak_activation_bytes"] >= 64 * 32 * 4


def test_inspect_shows_the_symbolic_dims_and_ranges(mlp_artifact, capsys):
    _, _, tmp = mlp_artifact
    assert main(["inspect", str(tmp / "out")]) == 0
    out = capsys.readouterr().out
    assert "input x: float32 = [N, 16], largest [64, 16]" in out and "dynamic dims: N=1..64" in out


@pytest.mark.parametrize("width", [8, 50, 256])
def test_dynamic_width_conv_matches_onnxruntime(conv_artifact, width):
    model, artifact = conv_artifact
    x = np.random.default_rng(width).standard_normal((1, 3, 8, width)).astype(np.float32)
    got = artifact.run({"x": x})["y"]
    assert got.shape == (width // 2, 1, 5)
    np.testing.assert_allclose(got, _ort(model, {"x": x}), rtol=0, atol=ATOL)


def test_dynamic_width_output_dims_are_symbolic(conv_artifact):
    _, artifact = conv_artifact
    out = artifact.manifest["outputs"][0]
    assert out["shape"] == [128, 1, 5] and isinstance(out["dims"][0], str) and "W" in out["dims"][0]


def test_run_cli_takes_the_actual_shape_and_refuses_one_outside_the_range(mlp_artifact, capsys):
    model, _, tmp = mlp_artifact
    x = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    np.savez(tmp / "in.npz", x=x)
    assert main(["run", str(tmp / "out"), "--inputs", str(tmp / "in.npz"), "--output", str(tmp / "y.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp / "y.npz")["y"], _ort(model, {"x": x}), rtol=0, atol=ATOL)
    capsys.readouterr()
    np.savez(tmp / "big.npz", x=np.zeros((65, 16), np.float32))
    code = main(["run", str(tmp / "out"), "--inputs", str(tmp / "big.npz"), "--output", str(tmp / "big_out.npz")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "dim 0 (N) is 65, outside the compiled range N=1..64" in err
    assert not os.path.exists(tmp / "big_out.npz")
    json.dumps(tvmcompress.load(tmp / "out").manifest)  # still a readable artifact


def lstm(rng, **attrs) -> onnx.ModelProto:
    """Bidirectional LSTM, hidden 3, with biases and initial states, over a dynamic sequence length."""
    hidden, features = 3, 4
    weights = {"W": (0.5 * rng.standard_normal((2, 4 * hidden, features))).astype(np.float32),
               "R": (0.5 * rng.standard_normal((2, 4 * hidden, hidden))).astype(np.float32),
               "B": (0.2 * rng.standard_normal((2, 8 * hidden))).astype(np.float32),
               "h0": (0.5 * rng.standard_normal((2, 2, hidden))).astype(np.float32),
               "c0": (0.5 * rng.standard_normal((2, 2, hidden))).astype(np.float32)}
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y", "y_h", "y_c"], hidden_size=hidden,
                            direction="bidirectional", **attrs)
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", 2, features])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", 2, 2, hidden]),
                   helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [2, 2, hidden]),
                   helper.make_tensor_value_info("y_c", TensorProto.FLOAT, [2, 2, hidden])], weights)


def test_lstm_over_a_dynamic_sequence_length_matches_onnxruntime(tmp_path):
    model = lstm(np.random.default_rng(3))
    onnx.save(model, tmp_path / "lstm.onnx")
    artifact = tvmcompress.compile(tmp_path / "lstm.onnx", "host", output=tmp_path / "out",
                                   options=CompileOptions.create(input_shapes={"x": ("T", 2, 4)}, dims={"T": (1, 40)}))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for steps in (1, 7, 40):
        x = np.random.default_rng(steps).standard_normal((steps, 2, 4)).astype(np.float32)
        got = artifact.run({"x": x})
        for name, expected in zip(("y", "y_h", "y_c"), session.run(None, {"x": x})):
            # 40 steps of float32 gates: errors compound a little through the recurrence.
            np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL, err_msg=f"{name} at T={steps}")


def test_lstm_form_without_a_dynamic_loop_is_refused_in_one_line(tmp_path, capsys):
    onnx.save(lstm(np.random.default_rng(3), clip=2.0), tmp_path / "lstm.onnx")
    code = main(["compile", str(tmp_path / "lstm.onnx"), "-o", str(tmp_path / "out"), "--input-shape", "x=1..9,2,4"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "LSTM with a dynamic sequence length does not support clip yet" in err
    assert not os.path.exists(tmp_path / "out")


def test_winograd_convolution_with_a_dynamic_batch_matches_onnxruntime(tmp_path):
    # A 3x3 stride-1 conv of 32 -> 32 channels takes Winograd with a symbolic batch too (static H and W fix its
    # tiles): the library holds the Winograd kernels, and each batch matches ORT.
    rng = np.random.default_rng(5)
    weights = {"w": (0.15 * rng.standard_normal((32, 32, 3, 3))).astype(np.float32)}
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 12, 12])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32, 12, 12])], weights)
    onnx.save(model, tmp_path / "conv.onnx")
    artifact = tvmcompress.compile(tmp_path / "conv.onnx", "host", output=tmp_path / "out",
                                   options=CompileOptions.create(input_shapes={"x": ("N", 32, 12, 12)},
                                                                 dims={"N": (1, 4)}))
    assert b"winograd_gemm" in (tmp_path / "out" / "model.so").read_bytes()
    for batch in (1, 2, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 32, 12, 12)).astype(np.float32)
        # Winograd's transforms round differently from a direct sum of 288 terms (float32, values O(1)).
        np.testing.assert_allclose(artifact.run({"x": x})["y"], _ort(model, {"x": x}), rtol=0, atol=1e-4)
