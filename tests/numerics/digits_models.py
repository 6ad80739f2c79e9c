"""Digits models and data for the quantization accuracy tests (a backend tier: runs on this machine's CPU).

- `digits_split()`: examples/train_digits.py's split (its test part is examples/digits_test.npz);
- `with_batch(model, n)`: import an ONNX classifier with its batch dim set to n;
- `train_mlp(...)`: a 64-64-10 MLP trained with scikit-learn (seeded, ~2 s), as ONNX;
- `accuracy(mod, x, y)` and `calibration(mod, x_train)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvmcompress.frontend import canonicalize, import_to_relax, load_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCH = 40  # 360 test images = 9 batches; the model's batch dim is fixed at import
CALIBRATION_BATCHES = 5  # 200 training images


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    # The split of examples/train_digits.py: its test part is examples/digits_test.npz.
    return train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def with_batch(model: onnx.ModelProto, batch: int) -> tvm.IRModule:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    name = model.graph.input[0].name
    shape = [batch] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return import_to_relax(canonicalize(model, {name: shape}))


def accuracy(mod: tvm.IRModule, x: np.ndarray, y: np.ndarray, executable=None) -> float:
    """Top-1 accuracy in percent of `mod` (built with TVM's default pipeline unless `executable` is given)."""
    if executable is None:
        target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
        executable = tvm.compile(mod, target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    shape = [int(d) for d in mod["main"].params[0].ty.shape]
    predictions = [
        vm["main"](tvm.runtime.tensor(x[i : i + BATCH].reshape(shape))).numpy().argmax(-1)
        for i in range(0, len(x), BATCH)
    ]
    return 100.0 * float(np.mean(np.concatenate(predictions) == y))


def calibration(mod: tvm.IRModule, x_train: np.ndarray):
    name = mod["main"].params[0].name
    shape = [int(d) for d in mod["main"].params[0].ty.shape]
    return ({name: x_train[i * BATCH : (i + 1) * BATCH].reshape(shape)} for i in range(CALIBRATION_BATCHES))


def train_mlp(x_train, y_train) -> onnx.ModelProto:
    """A 64-64-10 MLP (sklearn, seeded, ~2 s), written as MatMul/Add/Relu ONNX."""
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=0).fit(x_train.reshape(len(x_train), -1), y_train)
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W1"], ["h"]),
        helper.make_node("Add", ["h", "B1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["o"]),
        helper.make_node("Add", ["o", "B2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return load_model(model.SerializeToString())
