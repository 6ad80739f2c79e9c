"""Regression (issue 17): a DBNet-style neck (ConvTranspose upsampling added to an earlier feature map) failed with
exit 1, "CodeGenVM cannot emit ... R.nn.conv2d_transpose(..., data_layout="NHWC")".

Root cause: the CPU pipeline's ConvertLayout named only conv2d's desired layout (NHWC), so conv2d_transpose followed
its NHWC input; TVM 0.27 legalizes conv2d_transpose only in NCHW, so it reached the VM unlowered. Its desired layout
is now pinned to NCHW/IOHW (cpu_pipeline.CHANNELS_LAST_LAYOUTS), for fp32 and for int8's channels_last too.

Backend tier: compiles through the CLI, runs on the host, compares with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tvmcompress.cli import main

SIZE = 16


def dbnet_neck_model(channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Two stride-2 convs down, a ConvTranspose (k2 s2) up added to the stride-2 feature map, a 3x3 conv, and
    DBNet's probability head: ConvTranspose to one channel at full size, Sigmoid."""
    rng = np.random.default_rng(seed)
    inits = []

    def weight(name: str, *shape: int) -> str:
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32"), name))
        return name

    c = channels
    nodes = [
        helper.make_node("Conv", ["x", weight("w0", c, 3, 3, 3), weight("b0", c)], ["f1"], kernel_shape=[3, 3],
                         pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["f1"], ["r1"]),
        helper.make_node("Conv", ["r1", weight("w1", 2 * c, c, 3, 3), weight("b1", 2 * c)], ["f2"],
                         kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["f2"], ["r2"]),
        # ConvTranspose weights are [C_in, C_out, kh, kw].
        helper.make_node("ConvTranspose", ["r2", weight("wt", 2 * c, c, 2, 2), weight("bt", c)], ["up"],
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["up", "r1"], ["s"]),
        helper.make_node("Conv", ["s", weight("w2", c, c, 3, 3)], ["h"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("ConvTranspose", ["hr", weight("wt2", c, 1, 2, 2)], ["p"], kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Sigmoid", ["p"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "dbnet_neck", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, SIZE, SIZE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _compile_and_run(tmp_path, model, extra_args, x):
    path = tmp_path / "neck.onnx"
    onnx.save(model, path)
    out = tmp_path / ("int8" if extra_args else "fp32")
    assert main(["-q", "compile", str(path), "-o", str(out), *extra_args]) == 0
    inputs, result = tmp_path / "x.npz", tmp_path / "y.npz"
    np.savez(inputs, x=x)
    assert main(["run", str(out), "--inputs", str(inputs), "--output", str(result)]) == 0
    return np.load(result)["y"]


def _reference(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_convtranspose_neck_compiles_and_matches_ort(tmp_path):
    model = dbnet_neck_model()
    x = np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE)).astype("float32")
    actual = _compile_and_run(tmp_path, model, [], x)
    # Float32 convolutions in another summation order: ~1e-7 measured.
    np.testing.assert_allclose(actual, _reference(model, x), rtol=0, atol=1e-5)


def test_convtranspose_neck_int8_stays_close_to_ort(tmp_path):
    model = dbnet_neck_model()
    rng = np.random.default_rng(2)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, x=rng.standard_normal((16, 3, SIZE, SIZE)).astype("float32"))
    x = rng.standard_normal((1, 3, SIZE, SIZE)).astype("float32")
    actual = _compile_and_run(tmp_path, model, ["--quantize", "int8", "--calibration", str(calibration)], x)
    expected = _reference(model, x)
    # int8 activations and weights: an SQNR floor rather than an elementwise bound.
    sqnr = 10 * np.log10(np.sum(expected ** 2) / np.sum((actual - expected) ** 2))
    assert sqnr > 25, f"int8 SQNR {sqnr:.1f} dB"
