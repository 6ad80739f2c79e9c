"""Regression (issue 17 fuzz seed 10): Resize with coordinate_transformation_mode=align_corners to an output of
size 1 on a spatial axis failed with exit 1, "Check failed: fb->value != 0 Divide by zero".

Root cause: align_corners samples at y * (in - 1) / (out - 1); ONNX defines the coordinate as 0 where out is 1, TVM's
resize divides by out - 1. onnx_ops.form_checks.Resize now resizes the axis's first slice repeated to size 2 (exact
under align_corners) and keeps the first output slice.

Backend tier: compiles on the host, runs, compares with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmcompress


def _resize_model(in_shape, out_shape, mode, by_scales=False) -> onnx.ModelProto:
    if by_scales:
        scales = np.array(out_shape, np.float32) / np.array(in_shape, np.float32)
        inits = [numpy_helper.from_array(scales, "scales")]
        node_inputs = ["x", "", "scales"]
    else:
        inits = [numpy_helper.from_array(np.array(out_shape, np.int64), "sizes")]
        node_inputs = ["x", "", "", "sizes"]
    node = helper.make_node("Resize", node_inputs, ["y"], mode=mode, coordinate_transformation_mode="align_corners")
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("in_shape,out_shape,mode,by_scales", [
    ([1, 2, 1, 4], [1, 2, 1, 8], "linear", False),  # the fuzzer's graph: 1 -> 1 on H
    ([1, 2, 5, 4], [1, 2, 1, 7], "linear", False),  # 5 -> 1 on H: the first row
    ([1, 3, 6, 5], [1, 3, 9, 1], "cubic", False),
    ([1, 2, 4, 4], [1, 2, 1, 1], "nearest", False),
    ([1, 2, 1, 3], [1, 2, 1, 6], "linear", True),
])
def test_resize_align_corners_to_size_one_matches_onnxruntime(tmp_path, in_shape, out_shape, mode, by_scales):
    path = tmp_path / "m.onnx"
    onnx.save(_resize_model(in_shape, out_shape, mode, by_scales), path)
    x = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = tvmcompress.compile(str(path), "host", output=str(tmp_path / "out")).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
