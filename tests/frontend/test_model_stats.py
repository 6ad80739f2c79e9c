"""Tests for tvmcompress.model_stats: MACs against hand-computed formulas, parameters, histogram, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from frontend_models import make_model, value
from onnx import helper, numpy_helper

from tvmcompress.frontend import canonicalize
from tvmcompress.model_stats import model_stats


def init(name, shape):
    return numpy_helper.from_array(np.full(shape, 0.1, np.float32), name)


@pytest.fixture
def small_conv_net():
    """Conv, depthwise Conv, grouped Conv, ConvTranspose, Gemm on one path; 2-D and batched MatMul on another."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c2", "W3"], ["c3"], name="grouped", group=2),
        helper.make_node("ConvTranspose", ["c3", "W4"], ["c4"], name="up", strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "B", "C"], ["logits"], name="fc", transB=1),
        helper.make_node("MatMul", ["seq", "M1"], ["m1"], name="proj"),
        helper.make_node("MatMul", ["seq", "M2"], ["m2"], name="bmm"),
    ]
    initializers = [init("W1", (8, 3, 3, 3)), init("W2", (8, 1, 3, 3)), init("W3", (16, 4, 1, 1)),
                    init("W4", (16, 4, 2, 2)), init("B", (10, 4)), init("C", (10,)),
                    init("M1", (6, 7)), init("M2", (2, 6, 3))]
    return make_model(
        nodes,
        [value("x", ["batch", 3, 16, 16]), value("seq", [2, 5, 6])],
        [value("logits", ["batch", 10]), value("m1", [2, 5, 7]), value("m2", [2, 5, 3])],
        initializers,
    )


def test_macs_match_hand_computed_formulas(small_conv_net):
    stats = model_stats(canonicalize(small_conv_net, input_shapes={"x": [1, 3, 16, 16]}))
    layers = {layer["name"]: (layer["type"], layer["macs"]) for layer in stats["macs"]["layers"]}
    # Conv: output elements x (C_in / groups) x kH x kW
    assert layers["conv"] == ("Conv", (1 * 8 * 16 * 16) * (3 * 3 * 3))            # 55_296
    assert layers["dw"] == ("Conv/depthwise", (1 * 8 * 8 * 8) * (1 * 3 * 3))      # 4_608
    assert layers["grouped"] == ("Conv/grouped", (1 * 16 * 8 * 8) * (8 // 2))     # 4_096
    # ConvTranspose: input elements x (C_out / groups) x kH x kW
    assert layers["up"] == ("ConvTranspose", (1 * 16 * 8 * 8) * (4 * 2 * 2))       # 16_384
    # Gemm: M x N x K; MatMul: output elements x K (batched included)
    assert layers["fc"] == ("Gemm", 1 * 10 * 4)
    assert layers["proj"] == ("MatMul", (2 * 5 * 7) * 6)
    assert layers["bmm"] == ("MatMul", (2 * 5 * 3) * 6)
    assert stats["macs"]["by_layer_type"] == {
        "Conv": 55_296, "Conv/depthwise": 4_608, "Conv/grouped": 4_096, "ConvTranspose": 16_384,
        "Gemm": 40, "MatMul": 420 + 180,
    }
    assert stats["macs"]["total"] == 55_296 + 4_608 + 4_096 + 16_384 + 40 + 600
    assert stats["macs"]["unknown"] == []


def test_parameters_histogram_and_io(small_conv_net):
    stats = model_stats(canonicalize(small_conv_net, input_shapes={"x": [1, 3, 16, 16]}))
    count = 216 + 72 + 64 + 256 + 40 + 10 + 42 + 36
    assert stats["parameters"] == {"count": count, "bytes": 4 * count}
    assert stats["op_histogram"] == {"Conv": 3, "ConvTranspose": 1, "Flatten": 1, "Gemm": 1,
                                     "GlobalAveragePool": 1, "MatMul": 2, "Relu": 1}
    assert stats["inputs"] == [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"},
                               {"name": "seq", "shape": [2, 5, 6], "dtype": "float32"}]
    assert stats["outputs"][0] == {"name": "logits", "shape": [1, 10], "dtype": "float32"}
    assert stats["unsupported_ops"] == []
    assert json.loads(json.dumps(stats)) == stats


def test_dynamic_shapes_leave_layers_uncounted(small_conv_net):
    stats = model_stats(small_conv_net)  # batch is still dynamic: conv-path MACs are unknown
    assert set(stats["macs"]["unknown"]) == {"conv", "dw", "grouped", "up", "fc"}
    assert stats["macs"]["by_layer_type"] == {"MatMul": 600}
    assert stats["inputs"][0]["shape"] == [-1, 3, 16, 16]


def test_unsupported_ops_are_listed():
    model = make_model([helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")], [value("x", [1, 4])],
                       [value("y", [1, 4])], extra_opsets=[("com.example", 1)])
    stats = model_stats(model)
    assert stats["unsupported_ops"] == ["com.example::FancyOp"]
    assert stats["macs"]["total"] == 0
