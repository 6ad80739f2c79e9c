"""Test oracle for pruning: apply a pruning decision to an ONNX model's initializers and run it in ONNX Runtime.

Written independently of passes/channel_groups.py (on the ONNX graph, not Relax), so that a wrong dependency
analysis in the pass shows up as a numeric mismatch. Relax layers map to ONNX Conv / Gemm / MatMul nodes in
graph order (the importer keeps it). Handles the ops of the test models: Conv (groups 1 or depthwise),
BatchNormalization, Relu, MaxPool, GlobalAveragePool, Add of two tensors, Concat on axis 1, Flatten, Gemm
(transB=1), MatMul, Add of a bias.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def _layer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]


def prune_onnx_channels(model: onnx.ModelProto, kept_by_layer: list[np.ndarray | None]) -> onnx.ModelProto:
    """Slice initializers so that layer i (the i-th Conv/Gemm/MatMul) keeps output channels kept_by_layer[i]
    (None: all); input channels follow from the graph."""
    model = onnx.shape_inference.infer_shapes(onnx.ModelProto.FromString(model.SerializeToString()))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    kept: dict[str, np.ndarray | None] = {}  # tensor -> kept indices along its channel axis
    decisions = iter(kept_by_layer)

    def sliced(name: str, indices, axis: int):
        if indices is not None:
            inits[name] = np.take(inits[name], indices, axis=axis)

    for node in model.graph.node:
        ins = [kept.get(i) for i in node.input]
        out = node.output[0]
        op = node.op_type
        if op == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            own = next(decisions)
            if group == 1:
                sliced(node.input[1], ins[0], 1)
            else:  # depthwise: output channels are the input channels
                own = ins[0]
                for a in node.attribute:
                    if a.name == "group" and own is not None:
                        a.i = len(own)
            sliced(node.input[1], own, 0)
            if len(node.input) > 2:
                sliced(node.input[2], own, 0)
            kept[out] = own
        elif op in ("Gemm", "MatMul"):
            own = next(decisions)
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            sliced(node.input[1], ins[0], 1 if trans_b else 0)
            sliced(node.input[1], own, 0 if trans_b else 1)
            if len(node.input) > 2:
                sliced(node.input[2], own, 0)
            kept[out] = own
        elif op == "BatchNormalization":
            for name in node.input[1:]:
                sliced(name, ins[0], 0)
            kept[out] = ins[0]
        elif op in ("Relu", "MaxPool", "GlobalAveragePool", "Clip"):
            kept[out] = ins[0]
        elif op == "Add":
            if node.input[1] in inits:
                sliced(node.input[1], ins[0], inits[node.input[1]].ndim - 1)
                kept[out] = ins[0]
            else:
                assert (ins[0] is None) == (ins[1] is None) and (ins[0] is None or np.array_equal(ins[0], ins[1]))
                kept[out] = ins[0]
        elif op == "Concat":
            parts, offset = [], 0
            for name, k in zip(node.input, ins):
                size = shapes[name][1]
                parts.append((np.arange(size) if k is None else k) + offset)
                offset += size
            kept[out] = np.concatenate(parts)
        elif op == "Flatten":
            shape = shapes[node.input[0]]
            factor = int(np.prod(shape[2:]))
            kept[out] = None if ins[0] is None else (ins[0][:, None] * factor + np.arange(factor)).reshape(-1)
        else:
            assert all(k is None for k in ins), f"prune_onnx_channels: no rule for {op}"
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(inits[tensor.name]), tensor.name))
    del model.graph.value_info[:]
    return model


def zero_onnx_weights(model: onnx.ModelProto, masks: list[np.ndarray | None]) -> onnx.ModelProto:
    """Zero the weights of layer i where masks[i] (in the Relax layout: conv OIHW, matmul [K, N]) is False."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in model.graph.initializer}
    for node, mask in zip(_layer_nodes(model), masks):
        if mask is None:
            continue
        tensor = inits[node.input[1]]
        weight = numpy_helper.to_array(tensor)
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        onnx_mask = mask.T if (node.op_type == "Gemm" and trans_b) else mask
        tensor.CopyFrom(numpy_helper.from_array(np.where(onnx_mask, weight, 0).astype(weight.dtype), tensor.name))
    return model


def run_onnx(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def run_relax(mod, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import tvm
    from tvm import relax

    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    args = [tvm.runtime.tensor(inputs[p.name]) for p in mod["main"].params]
    return vm["main"](*args).numpy()


def build_test_cnn(seed: int = 0, batch: int = 2) -> onnx.ModelProto:
    """A small CNN with every dependency the channel analysis handles: BN, a residual add of two convs'
    outputs, a strided block with a 1x1 shortcut, a depthwise conv, a channel concat and a flatten into Gemm.
    Input [batch, 3, 16, 16] -> [batch, 10]."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits, count = [], [], [0]

    def name(prefix):
        count[0] += 1
        return f"{prefix}{count[0]}"

    def const(array):
        n = name("w")
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), n))
        return n

    def op(kind, inputs, **attrs):
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv_bn(x, cin, cout, k, stride=1, groups=1, relu=True):
        w = const(rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k)))
        y = op("Conv", [x, w, const(0.1 * rng.standard_normal(cout))], kernel_shape=[k, k], strides=[stride] * 2,
               pads=[k // 2] * 4, group=groups)
        bn = [const(1 + 0.2 * rng.standard_normal(cout)), const(0.1 * rng.standard_normal(cout)),
              const(0.1 * rng.standard_normal(cout)), const(1 + 0.2 * rng.random(cout))]
        y = op("BatchNormalization", [y, *bn], epsilon=1e-5)
        return op("Relu", [y]) if relu else y

    x = conv_bn("input", 3, 16, 3)
    x = op("Relu", [op("Add", [conv_bn(conv_bn(x, 16, 16, 3), 16, 16, 3, relu=False), x])])
    y = conv_bn(conv_bn(x, 16, 32, 3, stride=2), 32, 32, 3, relu=False)
    x = op("Relu", [op("Add", [y, conv_bn(x, 16, 32, 1, stride=2, relu=False)])])
    x = conv_bn(x, 32, 32, 3, groups=32)
    x = op("Concat", [x, conv_bn(x, 32, 16, 1)], axis=1)
    x = op("MaxPool", [conv_bn(x, 48, 24, 3)], kernel_shape=[2, 2], strides=[2, 2])
    x = op("Flatten", [x], axis=1)
    x = op("Gemm", [x, const(rng.standard_normal((10, 24 * 16)) / 20), const(np.zeros(10))], transB=1)
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(nodes, "prune_test_cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model
