"""The gradient rules distillation adds to TVM (passes/distill_gradients.py), each against central finite
differences of the op's forward result, and the check that names ops without one."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvmcompress.passes.distill_gradients import missing_gradients, register_gradients

TARGET = tvm.target.Target({"kind": "llvm"})


def _loss_and_grad(op, shape):
    """VM functions: loss(x, c) = sum(op(x) * c) and its adjoint with respect to x."""
    register_gradients()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    y_shape = [int(d) for d in bb.normalize(op(x)).ty.shape]
    c = relax.Var("c", relax.TensorType(y_shape, "float32"))
    with bb.function("loss", [x, c]):
        with bb.dataflow():
            y = bb.emit(op(x))
            out = bb.emit_output(bb.emit(relax.op.sum(relax.op.multiply(y, c))))
        bb.emit_func_output(out)
    mod = bb.get()
    mod = relax.transform.Gradient("loss", require_grads=[mod["loss"].params[0]])(mod)
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    return vm, y_shape


@pytest.mark.parametrize("name, op, shape", [
    ("clip (ReLU6)", lambda x: relax.op.clip(x, 0.0, 6.0), [3, 8]),
    ("gelu", relax.op.nn.gelu, [3, 8]),
    ("global average pooling", lambda x: relax.op.nn.adaptive_avg_pool2d(x, (1, 1)), [2, 3, 4, 5]),
])
def test_added_gradient_matches_finite_differences(name, op, shape):
    vm, y_shape = _loss_and_grad(op, shape)
    rng = np.random.default_rng(0)
    # Values spread over [-8, 8] but kept 0.05 away from clip's kinks at 0 and 6, where the slope jumps.
    x = rng.uniform(-8, 8, shape).astype(np.float32)
    x[np.abs(x) < 0.05] += 0.1
    x[np.abs(x - 6) < 0.05] += 0.1
    c = rng.normal(0, 1, y_shape).astype(np.float32)
    _, (grad,) = vm["loss_adjoint"](tvm.runtime.tensor(x), tvm.runtime.tensor(c))
    eps = 1e-2  # float32 forward: the difference quotient's rounding is ~1e-5 / 1e-2 = 1e-3 of the slope

    def loss(value):
        return float(vm["loss"](tvm.runtime.tensor(value), tvm.runtime.tensor(c)).numpy())

    for index in list(np.ndindex(*shape))[::7]:
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        assert numeric == pytest.approx(grad.numpy()[index], rel=1e-2, abs=2e-3), (name, index)


def test_missing_gradients_names_the_ops_without_a_rule():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 3, 8, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.image.resize2d(x, (16, 16)))
            out = bb.emit_output(bb.emit(relax.op.nn.relu(relax.op.clip(y, 0.0, 6.0))))
        bb.emit_func_output(out)
    assert missing_gradients(bb.get()["main"]) == ["relax.image.resize2d"]
