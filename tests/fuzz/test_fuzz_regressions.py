"""Minimized reproductions of the bugs the fuzzer found (harness.minimize: the smallest prefix of the failing
graph that fails the same way, then reduced by hand). Each was a strict xfail until its fix landed; each names its fuzz seed."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import graphgen
import harness


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "regression", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _outcome(model):
    feeds = graphgen.random_feeds(model, 0)
    graphgen.check(model, feeds)  # a valid graph: onnx.checker, shape inference and ORT accept it
    return harness.run_one(0, model)


def test_resize_align_corners_over_a_size_one_axis():
    """align_corners scales by (in - 1) / (out - 1): 0 / 0 on an axis of size 1, which ONNX defines (ORT gives the
    input row) and TVM's simplifier divides by."""
    sizes = numpy_helper.from_array(np.array([1, 2, 1, 8], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="align_corners")
    outcome = _outcome(_model([node], [_value("x", [1, 2, 1, 4])], [_value("y", [1, 2, 1, 8])], [sizes]))
    assert outcome.kind == "match", outcome.detail


def test_conv_then_conv_transpose():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), "w")
    wt = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 2, 2)).astype(np.float32), "wt")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["h", "wt"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    outcome = _outcome(_model(nodes, [_value("x", [1, 2, 6, 6])], [_value("y", [1, 3, 12, 12])], [w, wt]))
    assert outcome.kind == "match", outcome.detail


def test_concat_elu_times_concat_seed536():
    """Fuzz seed 536 without its unrelated Add branch: the Concat's output feeds both Elu and the Mul. TVM's
    build failed with 'Let cannot bind the same var to two different values': PropagateNaN bound the clamps of
    Elu's exp with Lets, which the Vectorizer refused (schedules/propagate_nan.py now repeats small operands)."""
    c1 = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32), "c1")
    nodes = [helper.make_node("Concat", ["x", "c1"], ["cat"], axis=0), helper.make_node("Elu", ["cat"], ["elu"]),
             helper.make_node("Mul", ["elu", "cat"], ["y"])]
    outcome = _outcome(_model(nodes, [_value("x", [1, 4, 2])], [_value("y", [4, 4, 2])], [c1]))
    assert outcome.kind == "match", f"{outcome.kind}: {outcome.detail}"
