"""Regression (issue 17 fuzz seeds 38, 117, 125): Resize by scales whose output size is fractional (0.5 of an odd
size) was refused, which counted against the fuzzer's 2% refusal budget.

ONNX floors the output size and samples with the given scale; TVM's resize samples with output/input, so its
answer differs. onnx_ops.form_checks.Resize now builds such a resize from gathers at constant indices (and, for
linear, constant weights) computed as ONNX defines them. Cubic and antialiased forms stay refused.

Backend tier: compiles on the host, runs, compares with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmcompress

CASES = [(mode, ctm, nearest) for ctm in ("half_pixel", "asymmetric", "pytorch_half_pixel")
         for mode, nearest in (("linear", None), ("nearest", "round_prefer_floor"))] + [
    ("nearest", "half_pixel", "floor"), ("nearest", "asymmetric", "ceil"), ("nearest", "half_pixel", "round_prefer_ceil"),
    ("linear", "half_pixel_symmetric", None)]


def _model(in_shape, scales) -> onnx.ModelProto:
    """One Resize per case, all reading x: one compile checks them all."""
    out_shape = [int(np.floor(d * s)) for d, s in zip(in_shape, scales)]
    nodes, outputs = [], []
    for i, (mode, ctm, nearest_mode) in enumerate(CASES):
        attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
        if nearest_mode:
            attrs["nearest_mode"] = nearest_mode
        nodes.append(helper.make_node("Resize", ["x", "", "scales"], [f"y{i}"], **attrs))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, out_shape))
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              outputs, [numpy_helper.from_array(np.array(scales, np.float32), "scales")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


@pytest.mark.parametrize("in_shape,scales", [([1, 2, 7, 5], [1, 1, 0.5, 0.5]), ([1, 2, 5, 3], [1, 1, 1.5, 2.5])])
def test_resize_with_fractional_scales_matches_onnxruntime(tmp_path, in_shape, scales):
    path = tmp_path / "m.onnx"
    onnx.save(_model(in_shape, scales), path)
    x = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = tvmcompress.compile(str(path), "host", output=str(tmp_path / "out")).run({"x": x})
    for i, case in enumerate(CASES):
        np.testing.assert_allclose(got[f"y{i}"], want[i], rtol=1e-5, atol=1e-5, err_msg=str(case))
