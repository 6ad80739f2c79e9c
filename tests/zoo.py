"""The test-suite model zoo: small ONNX models that cover the op families real models use.

Built with onnx.helper from seeded random weights, so every run builds byte-identical models in milliseconds.
ir_version 9 / opset 17: onnxruntime rejects ir_version > 13, and opset 17 has LayerNormalization.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9


class _Graph:
    """A tiny graph builder: weights become initializers, nodes get unique output names."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def weight(self, shape, scale=None, name=None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const(self.rng.normal(0, scale, size=shape).astype(np.float32), name)

    def const(self, array: np.ndarray, name=None) -> str:
        name = name or f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = []
        for _ in range(n_out):
            self._n += 1
            outs.append(f"t{self._n}_{op_type.lower()}")
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, name, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
        model.producer_name = "tvmcompress-tests"
        onnx.checker.check_model(model)
        return model


def _value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """Gemm -> Relu -> MatMul+Add -> Sigmoid -> Gemm: a classic 3-layer classifier head."""
    g = _Graph(seed)
    h = g.op("Relu", [g.op("Gemm", ["x", g.weight((64, 32)), g.weight((64,), 0.1)], transB=1)])
    h = g.op("Sigmoid", [g.op("Add", [g.op("MatMul", [h, g.weight((64, 48))]), g.weight((48,), 0.1)])])
    g.op("Gemm", [h, g.weight((48, 10)), g.weight((10,), 0.1)])
    g.nodes[-1].output[0] = "logits"
    return g.model("mlp", [_value("x", [2, 32])], [_value("logits", [2, 10])])


def cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv, BatchNorm, ReLU, MaxPool, residual Add, depthwise Conv, Concat, AveragePool, Gemm."""
    g = _Graph(seed)
    c = 8
    h = g.op("Conv", ["x", g.weight((c, 3, 3, 3)), g.weight((c,), 0.1)], pads=[1, 1, 1, 1])
    bn = [
        g.const(g.rng.uniform(0.5, 1.5, c).astype(np.float32)),
        g.const(g.rng.normal(0, 0.1, c).astype(np.float32)),
        g.const(g.rng.normal(0, 0.1, c).astype(np.float32)),
        g.const(g.rng.uniform(0.5, 1.5, c).astype(np.float32)),
    ]
    h = g.op("Relu", [g.op("BatchNormalization", [h, *bn], epsilon=1e-5)])
    h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    branch = g.op("Relu", [g.op("Conv", [h, g.weight((c, c, 1, 1)), g.weight((c,), 0.1)])])
    res = g.op("Add", [h, branch])
    dw = g.op("Relu", [g.op("Conv", [res, g.weight((c, 1, 3, 3)), g.weight((c,), 0.1)], group=c, pads=[1, 1, 1, 1])])
    cat = g.op("Concat", [res, dw], axis=1)
    pooled = g.op("AveragePool", [cat], kernel_shape=[2, 2], strides=[2, 2])
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [pooled])], axis=1)
    g.op("Gemm", [flat, g.weight((10, 2 * c)), g.weight((10,), 0.1)], transB=1)
    g.nodes[-1].output[0] = "logits"
    return g.model("cnn", [_value("x", [1, 3, 16, 16])], [_value("logits", [1, 10])])


def transformer(seed: int = 0, seq: int = 8, hidden: int = 16, heads: int = 2) -> onnx.ModelProto:
    """One encoder block: LayerNorm, multi-head attention (MatMul, Softmax), GELU (the Erf form exporters emit)."""
    g = _Graph(seed)
    d = hidden // heads

    def layer_norm(x):
        return g.op(
            "LayerNormalization",
            [x, g.const(g.rng.uniform(0.8, 1.2, hidden).astype(np.float32)), g.weight((hidden,), 0.1)],
            axis=-1,
            epsilon=1e-5,
        )

    def dense(x, n_in, n_out):
        return g.op("Add", [g.op("MatMul", [x, g.weight((n_in, n_out))]), g.weight((n_out,), 0.1)])

    def split_heads(x):
        r = g.op("Reshape", [x, g.const(np.array([1, seq, heads, d], np.int64))])
        return g.op("Transpose", [r], perm=[0, 2, 1, 3])

    x = layer_norm("x")
    q, k, v = (split_heads(dense(x, hidden, hidden)) for _ in range(3))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), g.const(np.float32(1 / np.sqrt(d)))])
    attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    merged = g.op("Reshape", [g.op("Transpose", [attn], perm=[0, 2, 1, 3]), g.const(np.array([1, seq, hidden], np.int64))])
    h = g.op("Add", ["x", dense(merged, hidden, hidden)])
    f = dense(layer_norm(h), hidden, 4 * hidden)
    gelu = g.op("Mul", [g.op("Mul", [f, g.const(np.float32(0.5))]),
                        g.op("Add", [g.op("Erf", [g.op("Div", [f, g.const(np.float32(np.sqrt(2)))])]), g.const(np.float32(1))])])
    g.op("Add", [h, dense(gelu, 4 * hidden, hidden)])
    g.nodes[-1].output[0] = "y"
    return g.model("transformer", [_value("x", [1, seq, hidden])], [_value("y", [1, seq, hidden])])


def exporter_style(seed: int = 0) -> onnx.ModelProto:
    """What PyTorch/Paddle/tf2onnx exports look like: a dynamic batch, the flatten shape computed at run time by
    Shape -> Gather -> Unsqueeze -> Concat -> Reshape, and an `If` on a constant condition (a traced flag)."""
    g = _Graph(seed)
    conv = g.op("Relu", [g.op("Conv", ["x", g.weight((4, 3, 3, 3)), g.weight((4,), 0.1)], pads=[1, 1, 1, 1])])
    shape = g.op("Shape", [conv])
    batch = g.op("Unsqueeze", [g.op("Gather", [shape, g.const(np.array(0, np.int64))], axis=0), g.const(np.array([0], np.int64))])
    new_shape = g.op("Concat", [batch, g.const(np.array([-1], np.int64))], axis=0)
    flat = g.op("Reshape", [conv, new_shape])
    logits = g.op("MatMul", [flat, g.weight((4 * 8 * 8, 10))])
    then_branch = helper.make_graph(
        [helper.make_node("Relu", [logits], ["then_out"])], "then", [], [_value("then_out", ["batch", 10])]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Sigmoid", [logits], ["else_out"])], "else", [], [_value("else_out", ["batch", 10])]
    )
    cond = g.const(np.array(True), name="use_relu")
    g.nodes.append(helper.make_node("If", [cond], ["y"], then_branch=then_branch, else_branch=else_branch))
    return g.model("exporter_style", [_value("x", ["batch", 3, 8, 8])], [_value("y", ["batch", 10])])


# name -> (builder, input shapes to fix at compile time)
ZOO = {
    "mlp": (mlp, {}),
    "cnn": (cnn, {}),
    "transformer": (transformer, {}),
    "exporter_style": (exporter_style, {"x": (1, 3, 8, 8)}),
}


def random_inputs(model: onnx.ModelProto, shapes: dict, seed: int = 1) -> dict[str, np.ndarray]:
    """Standard-normal float32 inputs for every graph input, with dynamic dims taken from `shapes`."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        shape = shapes.get(inp.name) or [d.dim_value for d in inp.type.tensor_type.shape.dim]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def ort_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
