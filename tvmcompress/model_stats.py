"""Static statistics of an ONNX model for `tvmcompress inspect`: ops, I/O, parameters, MACs, unsupported ops.

Works on any loaded model; MACs need static shapes, so counts are exact on a canonical model (see
`frontend.canonicalize`) and layers whose shapes stay unknown are listed under `macs.unknown` instead.
The result holds only str, int, list and dict, so it goes straight into `json.dumps`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import onnx

from .frontend import _dims, _is_static, model_io, unsupported_ops
from .onnx_graphs import all_graphs

logger = logging.getLogger(__name__)

__all__ = ["model_stats"]

# Which inputs of a MAC-heavy op are the data and the weight (or the two matmul operands).
_CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}


def model_stats(model: onnx.ModelProto) -> dict:
    """Op histogram, inputs and outputs, parameter count and bytes, MACs per layer type, unsupported ops.

    MACs count one multiply-accumulate per weight use: Conv = output elements x (C_in / groups) x kernel size,
    ConvTranspose = input elements x (C_out / groups) x kernel size, Gemm = M x N x K, MatMul = output elements
    x K (batched and broadcast included). Ops outside these are not counted.
    """
    shapes = _inferred_shapes(model)
    graph = model.graph
    inputs, outputs = model_io(model)

    histogram = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
                        for g in all_graphs(graph) for node in g.node)

    parameters = [_constant_array_meta(t) for g in all_graphs(graph) for t in g.initializer]
    parameters += [_constant_array_meta(a.t) for g in all_graphs(graph) for node in g.node
                   if node.op_type == "Constant" for a in node.attribute if a.HasField("t")]

    layers, unknown = [], []
    for node in graph.node:
        kind, macs = _layer_macs(node, shapes)
        if kind is None:
            continue
        if macs is None:
            unknown.append(node.name or node.output[0])
        else:
            layers.append({"name": node.name or node.output[0], "type": kind, "macs": macs})
    by_type = Counter()
    for layer in layers:
        by_type[layer["type"]] += layer["macs"]

    return {
        "ir_version": int(model.ir_version),
        "opsets": {entry.domain or "ai.onnx": int(entry.version) for entry in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "num_nodes": sum(histogram.values()),
        "op_histogram": dict(sorted(histogram.items())),
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in inputs],
        "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in outputs],
        "parameters": {
            "count": sum(count for count, _ in parameters),
            "bytes": sum(nbytes for _, nbytes in parameters),
        },
        "macs": {
            "total": sum(by_type.values()),
            "by_layer_type": dict(sorted(by_type.items())),
            "layers": layers,
            "unknown": unknown,
        },
        "unsupported_ops": unsupported_ops(model),
    }


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of the main graph's values, by name (values with dynamic dims are left out)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # noqa: BLE001 - onnx raises several types; stats then use the shapes at hand
        logger.debug("shape inference for model stats failed: %s", err)
        inferred = model
    graph = inferred.graph
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = _dims(info)
        if _is_static(dims):
            shapes.setdefault(info.name, dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.HasField("t"):
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    return shapes


def _constant_array_meta(tensor: onnx.TensorProto) -> tuple[int, int]:
    count = math.prod(tensor.dims)
    if tensor.data_type == onnx.TensorProto.STRING:
        return count, sum(len(s) for s in tensor.string_data)
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return count, (count + 1) // 2
    return count, count * itemsize


def _layer_macs(node: onnx.NodeProto, shapes: dict) -> tuple[str | None, int | None]:
    """(layer type, MACs) for a MAC-heavy node; (None, None) for other ops; MACs None if shapes are unknown."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None, None

    def shape(index):
        return shapes.get(node.input[index]) if index < len(node.input) and node.input[index] else None

    if op in _CONV_OPS:
        _, w_index = _CONV_OPS[op]
        weight, out = shape(w_index), shapes.get(node.output[0])
        group = _int_attr(node, "group", 1)
        in_channels = weight[1] * group if weight else None
        kind = "Conv" if group == 1 else "Conv/depthwise" if group == in_channels else "Conv/grouped"
        if weight is None or out is None:
            return kind, None
        return kind, math.prod(out) * math.prod(weight[1:])
    if op == "ConvTranspose":
        data, weight = shape(0), shape(1)
        if data is None or weight is None:
            return op, None
        # weight is (C_in, C_out / groups, k...): every input element is scattered through its group's kernel.
        return op, math.prod(data) * math.prod(weight[1:])
    if op == "Gemm":
        a, out = shape(0), shapes.get(node.output[0])
        if a is None or out is None:
            return op, None
        k = a[0] if _int_attr(node, "transA", 0) else a[1]
        return op, math.prod(out) * k
    if op in _MATMUL_OPS:
        a_index, _ = _MATMUL_OPS[op]
        a, out = shape(a_index), shapes.get(node.output[0])
        if a is None or out is None:
            return "MatMul", None
        return "MatMul", math.prod(out) * a[-1]
    return None, None


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default
