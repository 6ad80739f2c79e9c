"""SpaceToDepth with mode (DCR and CRD) and TensorScatter (linear, circular, without write_indices), compiled for
the host and compared with onnx's reference evaluator (exact: they only move data); MaxUnpool's output_shape form
stays rejected by name."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import tvmcompress
from tvmcompress.frontend import unsupported_ops


def _model(nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    # Opset 28: SpaceToDepth's `mode`; TensorScatter is 24.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 28)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def _value(name, shape, elem_type=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def test_space_to_depth_and_tensor_scatter_match_onnx_reference(tmp_path):
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 2, 4, 6)).astype(np.float32),
             "cache": rng.standard_normal((2, 3, 5, 4)).astype(np.float32),
             "update": rng.standard_normal((2, 3, 2, 4)).astype(np.float32),
             "write": np.array([1, 4], np.int64)}
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["dcr"], blocksize=2),
             helper.make_node("SpaceToDepth", ["x"], ["crd"], blocksize=2, mode="CRD"),
             helper.make_node("TensorScatter", ["cache", "update", "write"], ["circular"], axis=2, mode="circular"),
             helper.make_node("TensorScatter", ["cache", "update"], ["linear"], axis=-2)]
    outputs = [_value("dcr", [1, 8, 2, 3]), _value("crd", [1, 8, 2, 3]), _value("circular", [2, 3, 5, 4]),
               _value("linear", [2, 3, 5, 4])]
    model = _model(nodes, [_value("x", [1, 2, 4, 6]), _value("cache", [2, 3, 5, 4]), _value("update", [2, 3, 2, 4]),
                           _value("write", [2], TensorProto.INT64)], outputs)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = tvmcompress.compile(model, "host", output=str(tmp_path / "out")).run(feeds)
    for info, reference in zip(outputs, want):
        np.testing.assert_array_equal(got[info.name], reference, err_msg=info.name)
    assert not np.array_equal(want[0], want[1])  # the two modes order the channels differently


def test_max_unpool_with_output_shape_is_rejected_by_name():
    node = helper.make_node("MaxUnpool", ["x", "i", "s"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    model = _model([node], [_value("x", [1, 1, 2, 2]), _value("i", [1, 1, 2, 2], TensorProto.INT64),
                            _value("s", [4], TensorProto.INT64)], [_value("y", [1, 1, 4, 4])])
    assert unsupported_ops(model) == ["MaxUnpool(output_shape)"]
