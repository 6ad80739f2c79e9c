"""Regression (issue 17): a YOLOv8n C2f block compiled with Winograd returned garbage (ORT correlation 0.02).

Root cause: the Winograd output transform is injective, so FuseOps fuses the C2f's Concat (and the graph's closing
transpose) into it. The rule then computed that epilogue per output tile with reverse_compute_at, which derives the
epilogue iterations from the index at which it reads Y alone: the Concat's iterations that read the *other*
inputs never ran, leaving those channels uninitialized. Epilogues are now fused only when they read the main
output at a permutation of their own iteration point (common.reads_as_permutation); others run as a loop nest of
their own after it.

Backend tier: builds with our CPU pipeline and runs on the host, against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import s_tir
from tvm.script import tirx as T

from tvmcompress.schedules.cpu_rules.common import reads_as_permutation

from rule_harness import before_schedule, funcs, run_both

# Winograd F(4x4) rounds differently from a direct convolution (~5e-6 of the output's magnitude measured on these
# graphs, 2e-7 for F(2x2)); the bug gave errors of order 1 (or NaN from uninitialized memory).
_TOLERANCE = 5e-5


class _GraphBuilder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv_silu(self, x: str, cin: int, cout: int, kernel: int, stride: int = 1) -> str:
        """Conv (He-scaled random weights, bias) then SiLU written as YOLOv8's ONNX export does: x * Sigmoid(x)."""
        w, b, y, s, out = (self.name(p) for p in ("w", "b", "conv", "sigmoid", "silu"))
        weight = self.rng.standard_normal((cout, cin, kernel, kernel)) / np.sqrt(cin * kernel * kernel)
        self.inits += [numpy_helper.from_array(weight.astype("float32"), w),
                       numpy_helper.from_array((0.1 * self.rng.standard_normal(cout)).astype("float32"), b)]
        self.nodes += [helper.make_node("Conv", [x, w, b], [y], kernel_shape=[kernel] * 2, pads=[kernel // 2] * 4,
                                        strides=[stride] * 2),
                       helper.make_node("Sigmoid", [y], [s]), helper.make_node("Mul", [y, s], [out])]
        return out

    def c2f(self, x: str, cin: int, cout: int, hidden: int, bottlenecks: int, residual: bool) -> str:
        """Ultralytics' C2f: 1x1 conv to 2 * hidden, Split in halves, a chain of bottlenecks (two 3x3 convs, plus
        the input when `residual`) on the second half, Concat of both halves and every bottleneck output, 1x1."""
        h = self.conv_silu(x, cin, 2 * hidden, 1)
        first, second, sizes = self.name("split"), self.name("split"), self.name("sizes")
        self.inits.append(numpy_helper.from_array(np.array([hidden, hidden], "int64"), sizes))
        self.nodes.append(helper.make_node("Split", [h, sizes], [first, second], axis=1))
        parts, current = [first, second], second
        for _ in range(bottlenecks):
            out = self.conv_silu(self.conv_silu(current, hidden, hidden, 3), hidden, hidden, 3)
            if residual:
                added = self.name("add")
                self.nodes.append(helper.make_node("Add", [current, out], [added]))
                out = added
            parts.append(out)
            current = out
        cat = self.name("concat")
        self.nodes.append(helper.make_node("Concat", parts, [cat], axis=1))
        return self.conv_silu(cat, (2 + bottlenecks) * hidden, cout, 1)


def c2f_model(channels: int, size: int, bottlenecks: int = 1, residual: bool = True, stages: int = 1,
              seed: int = 0) -> onnx.ModelProto:
    """`stages` C2f blocks of `channels` (hidden channels / 2, as YOLOv8's C2f(c, c) has), each after the first
    behind a stride-2 3x3 conv that doubles the channels, as in YOLOv8n's backbone."""
    g = _GraphBuilder(seed)
    x, c = "x", channels
    for stage in range(stages):
        if stage:
            x, c = g.conv_silu(x, c, 2 * c, 3, stride=2), 2 * c
        x = g.c2f(x, c, c, c // 2, bottlenecks, residual)
    g.nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(g.nodes, "c2f", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(1).standard_normal(shape).astype("float32")}


def _assert_matches_ort(model: onnx.ModelProto):
    actual, expected = run_both(model, _input(model))
    assert np.isfinite(actual).all()
    error = float(np.abs(actual - expected).max() / np.abs(expected).max())
    assert error < _TOLERANCE, f"max error {error:.3g} of the output's magnitude"


def _conv3x3_concat_model() -> onnx.ModelProto:
    # The smallest graph with the bug: a Winograd conv whose only consumer is a Concat with another tensor.
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((0.2 * rng.standard_normal((32, 32, 3, 3))).astype("float32"), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["t"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Concat", ["x", "t"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_winograd_conv_fused_with_concat_matches_ort():
    model = _conv3x3_concat_model()
    ((name, _),) = funcs(before_schedule(model), "winograd_output")
    assert "concat" in name  # the fusion that went wrong is still there: the test exercises it
    _assert_matches_ort(model)


def test_c2f_block_with_winograd_matches_ort():
    # 32 -> 32 3x3 convs as in YOLOv8n's C2f(64) (at 40x40 for a 320x320 input; 28x28 is the smallest size with
    # F(4x4) tiles, which keeps this test fast). The slow tier runs the real sizes.
    model = c2f_model(64, 28)
    assert funcs(before_schedule(model), "winograd_output")  # the bottleneck convs take the Winograd path
    _assert_matches_ort(model)


@pytest.mark.slow
@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("size", [40, 80, 160, 320])
@pytest.mark.parametrize("channels", [32, 64, 128])
def test_c2f_variants_match_ort(channels, size, residual):
    # hidden = channels / 2: 16 (stays direct), 32 and 64 channel Winograd convs.
    _assert_matches_ort(c2f_model(channels, size, bottlenecks=2, residual=residual))


@pytest.mark.slow
def test_c2f_stack_with_strided_convs_matches_ort():
    # YOLOv8n's backbone shape at a 160x160 input: C2f stages joined by stride-2 convs that double the channels.
    _assert_matches_ort(c2f_model(32, 80, stages=3))


@T.prim_func(private=True, s_tir=True)
def _concat_epilogue(y: T.Buffer((1, 4, 4, 8), "float32"), other: T.Buffer((1, 4, 4, 8), "float32"),
                     out: T.Buffer((1, 16, 4, 4), "float32")):
    # Y's consumer in NHWC: a Concat over channels, then the NCHW output transpose; reads Y at c - 8 only.
    for n, c, h, w in T.grid(1, 16, 4, 4):
        with T.sblock("concat_transpose"):
            vn, vc, vh, vw = T.axis.remap("SSSS", [n, c, h, w])
            out[vn, vc, vh, vw] = T.if_then_else(8 <= vc, y[vn, vh, vw, vc - 8], other[vn, vh, vw, vc])


@T.prim_func(private=True, s_tir=True)
def _transpose_epilogue(y: T.Buffer((1, 4, 4, 8), "float32"), out: T.Buffer((1, 8, 4, 4), "float32")):
    for n, c, h, w in T.grid(1, 8, 4, 4):
        with T.sblock("transpose"):
            vn, vc, vh, vw = T.axis.remap("SSSS", [n, c, h, w])
            out[vn, vc, vh, vw] = y[vn, vh, vw, vc]


def _read_of_y(func) -> tuple[s_tir.Schedule, object, object]:
    sch = s_tir.Schedule(func)
    (block,) = sch.get_child_blocks(sch.get_sblock("root"))
    return sch, block, next(r.source for r in sch.get(block).reads if r.source.name == "y")


def test_reads_as_permutation_refuses_a_concat_and_accepts_a_transpose():
    assert reads_as_permutation(*_read_of_y(_concat_epilogue)) is None
    assert reads_as_permutation(*_read_of_y(_transpose_epilogue)) == (0, 2, 3, 1)
