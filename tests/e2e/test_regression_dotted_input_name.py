"""Regression (issue 17 corpus): every torch-exported model with an unnamed input ("input.1") failed int8 with exit 2.

Root cause: TVM's ONNX importer sanitized input names into Relax parameter names ("input.1" -> "input_1"), while the
calibration and eval batches are keyed by the ONNX names (the names the .npz must use) and the passes that run the
module read each batch by parameter name. The importer now keeps the ONNX names (onnx_ops.importer.from_onnx).

Backend tier: compiles on the host, runs, compares with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import tvmcompress
from tvmcompress.passes.quantize_config import QuantizeConfig

NAME = "input.1"  # torch.onnx.export's name for an unnamed input


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", [NAME, "w1", "b1"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "dotted", [helper.make_tensor_value_info(NAME, TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_int8_with_calibration_and_eval_data_keyed_by_a_dotted_onnx_name(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_model(), path)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", **{NAME: rng.standard_normal((8, 3, 8, 8)).astype(np.float32)})
    np.savez(tmp_path / "eval.npz", **{NAME: rng.standard_normal((4, 3, 8, 8)).astype(np.float32)})
    options = tvmcompress.CompileOptions.create(quantize=QuantizeConfig(mode="int8"),
                                                calibration=str(tmp_path / "calib.npz"),
                                                eval_data=str(tmp_path / "eval.npz"))
    artifact = tvmcompress.compile(str(path), "host", output=str(tmp_path / "out"), options=options)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = list(artifact.run({NAME: x}).values())[0]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {NAME: x})[0]
    sqnr = 10 * np.log10(np.sum(want.astype(np.float64) ** 2) / np.sum((want - got).astype(np.float64) ** 2))
    assert sqnr > 25
    assert [spec.name for spec in artifact.inputs] == [NAME]
