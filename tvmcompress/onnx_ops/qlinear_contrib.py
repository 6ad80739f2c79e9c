"""onnxruntime's com.microsoft quantized ops, expanded into standard DequantizeLinear -> op -> QuantizeLinear.

onnxruntime's quantize_static in QuantFormat.QOperator emits these ops besides the standard QLinearConv /
QLinearMatMul. Each is specified (com.microsoft contrib op docs) as the float op on dequantized inputs, quantized
to the output's scale and zero point; onnxruntime computes most of them through lookup tables or float
arithmetic built from exactly that, so the expansion is the op's definition, not an approximation. TVM's
importer lacks all of them. Expanded at the ONNX level (in `frontend.canonicalize`) because the result is
plain ONNX that shape inference, folding and our import understand; the Q/DQ then fold into integer kernels
with the rest of a pre-quantized model (passes.quantize.fold_prequantized).

| op | expansion |
|---|---|
| QGemm | Gemm(DQ(A), DQ(B, b_scale*alpha), DQ(C, a_scale*b_scale*alpha)) [-> Q if y_scale is given] |
| QLinearAdd / QLinearMul | Q(Add/Mul(DQ(A), DQ(B))) |
| QLinearSigmoid / QLinearLeakyRelu | Q(Sigmoid/LeakyRelu(DQ(X))) |
| QLinearSoftmax | Q(Softmax(DQ(X), axis)) (opset >= 13 semantics, or the last axis) |
| QLinearConcat | Q(Concat(DQ(X_i)...)) |
| QLinearAveragePool / QLinearGlobalAveragePool | Q(AveragePool/GlobalAveragePool(DQ(X))) (NCHW only) |
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import TvmcompressError

__all__ = ["EXPANDED_OPS", "expand_contrib_qlinear"]

_DOMAIN = "com.microsoft"
_UNARY = {"QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax",
          "QLinearAveragePool": "AveragePool", "QLinearGlobalAveragePool": "GlobalAveragePool"}
_BINARY = {"QLinearAdd": "Add", "QLinearMul": "Mul"}
EXPANDED_OPS = frozenset({"QGemm", "QLinearConcat", *_UNARY, *_BINARY})


class _Expander:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.names = {name for node in graph.node for name in (*node.input, *node.output)}
        self.names |= {t.name for t in graph.initializer}
        self.ranks = {t.name: len(t.dims) for t in graph.initializer}
        self.nodes: list[onnx.NodeProto] = []

    def fresh(self, hint: str) -> str:
        index = 0
        while f"{hint}_{index}" in self.names:
            index += 1
        name = f"{hint}_{index}"
        self.names.add(name)
        return name

    def emit(self, op_type: str, inputs, output: str | None = None, hint: str = "q", **attrs) -> str:
        output = output or self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def dequantize(self, x: str, scale: str, zero_point: str, **attrs) -> str:
        return self.emit("DequantizeLinear", [x, scale, zero_point] if zero_point else [x, scale], hint=f"{x}_dq",
                         **attrs)

    def quantize(self, x: str, scale: str, zero_point: str, output: str) -> str:
        return self.emit("QuantizeLinear", [x, scale, zero_point] if zero_point else [x, scale], output)

    def expand(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input) + [""] * 9
        out = node.output[0]
        if node.op_type in _BINARY:
            a = self.dequantize(inputs[0], inputs[1], inputs[2])
            b = self.dequantize(inputs[3], inputs[4], inputs[5])
            y = self.emit(_BINARY[node.op_type], [a, b], hint=f"{out}_float")
            self.quantize(y, inputs[6], inputs[7], out)
        elif node.op_type in _UNARY:
            self.expand_unary(node, attrs, inputs)
        elif node.op_type == "QLinearConcat":
            parts = [self.dequantize(*node.input[i:i + 3]) for i in range(2, len(node.input), 3)]
            y = self.emit("Concat", parts, hint=f"{out}_float", axis=attrs["axis"])
            self.quantize(y, inputs[0], inputs[1], out)
        else:
            self.expand_qgemm(node, attrs, inputs)

    def expand_unary(self, node, attrs, inputs) -> None:
        op_type, out = _UNARY[node.op_type], node.output[0]
        if attrs.pop("channels_last", 0):
            raise TvmcompressError(f"{node.op_type}(channels_last=1) is not supported: quantize the model in NCHW")
        if op_type == "Softmax":
            opset = attrs.pop("opset", 13)
            axis = attrs.get("axis", -1 if opset >= 13 else 1)
            rank = self.ranks.get(node.input[0])
            if opset < 13 and axis != -1 and (rank is None or axis != rank - 1):
                raise TvmcompressError(
                    f"QLinearSoftmax(opset={opset}, axis={axis}) is not supported: re-quantize the model with opset 13+"
                )
            attrs["axis"] = axis
        x = self.dequantize(inputs[0], inputs[1], inputs[2])
        y = self.emit(op_type, [x], hint=f"{out}_float", **attrs)
        self.quantize(y, inputs[3], inputs[4], out)

    def expand_qgemm(self, node, attrs, inputs) -> None:
        out = node.output[0]
        alpha = float(attrs.get("alpha", 1.0))
        trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
        b_scale = inputs[4]
        if alpha != 1.0:
            # alpha goes into B's scale: TVM's Gemm would multiply the activation by it, which hides the
            # dequantize from FoldQDQToInt8.
            alpha_name = self.fresh(f"{out}_alpha")
            self.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(alpha, np.float32), alpha_name))
            b_scale = self.emit("Mul", [b_scale, alpha_name], hint=f"{out}_b_scale")
        a = self.dequantize(inputs[0], inputs[1], inputs[2])
        # b_scale is per tensor or per output column (N): axis 0 of a transposed B, else axis 1.
        b = self.dequantize(inputs[3], b_scale, inputs[5], axis=0 if trans_b else 1)
        gemm_inputs = [a, b]
        if inputs[6]:
            # C is int32 with zero point 0 and scale alpha * a_scale * b_scale (the contrib op's definition).
            scale = self.emit("Mul", [inputs[1], b_scale], hint=f"{out}_bias_scale")
            rank = self.ranks.get(inputs[6], 1)
            gemm_inputs.append(self.dequantize(inputs[6], scale, "", axis=max(rank - 1, 0)))
        quantized = bool(inputs[7])
        y = self.emit("Gemm", gemm_inputs, None if quantized else out, hint=f"{out}_float", transA=trans_a,
                      transB=trans_b)
        if quantized:
            self.quantize(y, inputs[7], inputs[8], out)


def expand_contrib_qlinear(model: onnx.ModelProto) -> int:
    """Replace, in place, the com.microsoft QLinear*/QGemm nodes of the main graph by their expansions.
    Returns how many were expanded."""
    graph = model.graph
    expander = _Expander(graph)
    count = 0
    kept = []
    for node in graph.node:
        if node.domain == _DOMAIN and node.op_type in EXPANDED_OPS:
            expander.nodes = []
            expander.expand(node)
            kept.extend(expander.nodes)
            count += 1
        else:
            kept.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(kept)
    return count
