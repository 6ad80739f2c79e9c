"""Builders for the three default-schedule benchmark models, written as ONNX files with onnx.helper.

Weights are random but seeded, so the same call always writes the same bytes. The graphs follow the
standard architectures: ResNet-18 and MobileNetV2 (1x3x224x224, eval-mode BatchNormalization kept as
a node, as an exporter without BN folding would write it) and a 4-layer BERT-style encoder
(hidden 256, 4 heads, FFN 1024, seq 128, input float32 [1,128,256]).
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class _GraphBuilder:
    """Accumulates nodes and initializers; names are generated in order, so output is deterministic."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def weight(self, *shape: int, fan_in: int) -> str:
        return self.const((self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype("float32"))

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "Relu") -> str:
        w = self.weight(cout, cin // groups, k, k, fan_in=cin // groups * k * k)
        y = self.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
                    pads=[k // 2] * 4, group=groups)
        scale = self.const((1.0 + 0.1 * self.rng.standard_normal(cout)).astype("float32"))
        bias = self.const((0.1 * self.rng.standard_normal(cout)).astype("float32"))
        mean = self.const((0.1 * self.rng.standard_normal(cout)).astype("float32"))
        var = self.const((1.0 + 0.1 * self.rng.random(cout)).astype("float32"))
        y = self.op("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)
        if act == "Relu":
            y = self.op("Relu", [y])
        elif act == "Relu6":
            y = self.op("Clip", [y, self.const(np.array(0.0, "float32")), self.const(np.array(6.0, "float32"))])
        return y

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        return model


def build_resnet18(seed: int = 0, num_classes: int = 1000) -> onnx.ModelProto:
    g = _GraphBuilder(seed)
    x = g.conv_bn("input", 3, 64, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]:
        y = g.conv_bn(x, cin, cout, 3, stride=stride)
        y = g.conv_bn(y, cout, cout, 3, act=None)
        shortcut = g.conv_bn(x, cin, cout, 1, stride=stride, act=None) if (stride != 1 or cin != cout) else x
        x = g.op("Relu", [g.op("Add", [y, shortcut])])
        cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.weight(num_classes, 512, fan_in=512)
    b = g.const(np.zeros(num_classes, "float32"))
    x = g.op("Gemm", [x, w, b], transB=1)
    g.nodes[-1].output[0] = "output"
    return g.model("resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, num_classes])])


def build_mobilenet_v2(seed: int = 0, num_classes: int = 1000) -> onnx.ModelProto:
    g = _GraphBuilder(seed)
    x = g.conv_bn("input", 3, 32, 3, stride=2, act="Relu6")
    cin = 32
    # (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper.
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else g.conv_bn(x, cin, hidden, 1, act="Relu6")
            y = g.conv_bn(y, hidden, hidden, 3, stride=stride, groups=hidden, act="Relu6")
            y = g.conv_bn(y, hidden, c, 1, act=None)
            x = g.op("Add", [x, y]) if (stride == 1 and cin == c) else y
            cin = c
    x = g.conv_bn(x, cin, 1280, 1, act="Relu6")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.weight(num_classes, 1280, fan_in=1280)
    b = g.const(np.zeros(num_classes, "float32"))
    x = g.op("Gemm", [x, w, b], transB=1)
    g.nodes[-1].output[0] = "output"
    return g.model("mobilenet_v2", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, num_classes])])


def build_bert_encoder(seed: int = 0, layers: int = 4, hidden: int = 256, heads: int = 4, ffn: int = 1024,
                       seq: int = 128) -> onnx.ModelProto:
    g = _GraphBuilder(seed)
    head_dim = hidden // heads

    def linear(x: str, cin: int, cout: int) -> str:
        w = g.const((g.rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype("float32"))
        b = g.const((0.02 * g.rng.standard_normal(cout)).astype("float32"))
        return g.op("Add", [g.op("MatMul", [x, w]), b])

    def layer_norm(x: str) -> str:
        gamma = g.const((1.0 + 0.1 * g.rng.standard_normal(hidden)).astype("float32"))
        beta = g.const((0.1 * g.rng.standard_normal(hidden)).astype("float32"))
        return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)

    def split_heads(x: str) -> str:  # [1, S, H] -> [1, heads, S, head_dim]
        shape = g.const(np.array([1, seq, heads, head_dim], "int64"))
        return g.op("Transpose", [g.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])

    x = "input"
    scale = g.const(np.array(1.0 / np.sqrt(head_dim), "float32"))
    for _ in range(layers):
        q, k, v = (split_heads(linear(x, hidden, hidden)) for _ in range(3))
        scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), scale])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const(np.array([1, seq, hidden], "int64"))])
        x = layer_norm(g.op("Add", [x, linear(ctx, hidden, hidden)]))
        h = linear(x, hidden, ffn)
        # GELU (erf form), spelled out: opset 17 has no Gelu op.
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [g.op("Erf", [g.op("Div", [h, g.const(np.array(np.sqrt(2.0), "float32"))])]),
                                                    g.const(np.array(1.0, "float32"))])]),
                         g.const(np.array(0.5, "float32"))])
        x = layer_norm(g.op("Add", [x, linear(h, ffn, hidden)]))
    g.nodes[-1].output[0] = "output"
    return g.model("bert_encoder", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, seq, hidden])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, seq, hidden])])


BUILDERS = {"resnet18": build_resnet18, "mobilenet_v2": build_mobilenet_v2, "bert_encoder": build_bert_encoder}


def write_models(out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write every benchmark model to out_dir/<name>.onnx and return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, build in BUILDERS.items():
        paths[name] = out_dir / f"{name}.onnx"
        onnx.save(build(), paths[name])
    return paths


if __name__ == "__main__":
    import sys

    for name, path in write_models(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tvmcompress_bench")).items():
        print(name, path)
