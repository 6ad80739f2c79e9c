"""Distillation engine (passes/distill.py) on a small MLP: the gradient TVM derives for our loss against finite
differences, a few steps lowering the loss, and the student's compressed form surviving training."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.distill import (
    WeightGrid, _kl_and_labels, _layers, build_training_module, distill, lift_trainable, quantization_grids,
)
from tvmcompress.passes.distill_config import DistillConfig
from tvmcompress.passes.quantize_weights import quantize_per_channel
from tvmcompress.passes.reconstruct import ReplaceLayerWeights
from tvmcompress.passes.ternary_weights import binarize, pack_codes, ternarize, unpack_codes

BATCH, IN, HIDDEN, CLASSES = 16, 6, 12, 4
TARGET = tvm.target.Target({"kind": "llvm"})


def _mlp(seed: int = 0) -> tvm.IRModule:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (IN, HIDDEN)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (HIDDEN,)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (HIDDEN, CLASSES)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([BATCH, IN], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(w1)))
            h = bb.emit(relax.op.nn.relu(relax.op.add(h, relax.const(b1))))
            out = bb.emit_output(bb.emit(relax.op.matmul(h, relax.const(w2))))
        bb.emit_func_output(out)
    return bb.get()


def _data(n_batches: int = 6, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (BATCH, IN)).astype(np.float32)} for _ in range(n_batches)]


def _weights(mod) -> dict[str, np.ndarray]:
    return {name: call.args[1].value.numpy() for name, call in _layers(mod["main"]).items()}


def test_kl_loss_gradient_matches_finite_differences():
    """Gradient's adjoint of our KL + label loss through matmul/add/relu, against central differences (float32:
    steps of 1e-2 on O(1) weights keep rounding below 1e-4 of the slope; rtol 2e-2 absorbs the curvature)."""
    lifted = lift_trainable(_mlp())
    out_ty = lifted.func.ret_ty
    mod = build_training_module(lifted, [], _kl_and_labels(2.0, 0.3, True), [out_ty, out_ty])
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (BATCH, IN)).astype(np.float32)
    soft = rng.dirichlet(np.ones(CLASSES), BATCH).astype(np.float32)
    onehot = np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, BATCH)]
    weights = [v.copy() for v in lifted.values]

    def loss(ws):
        args = [x, *ws, soft, onehot]
        return float(vm["loss_adjoint"](*(tvm.runtime.tensor(a) for a in args))[0].numpy())

    _, grads = vm["loss_adjoint"](*(tvm.runtime.tensor(a) for a in [x, *weights, soft, onehot]))
    grads = [g.numpy() for g in grads]
    assert len(grads) == len(weights) == 3
    eps = 1e-2
    for k, w in enumerate(weights):
        for index in list(np.ndindex(w.shape))[:: max(1, w.size // 6)]:
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[k][index] += eps
            minus[k][index] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            assert numeric == pytest.approx(grads[k][index], rel=2e-2, abs=2e-4), (k, index)


def test_distill_lowers_the_loss_and_keeps_int4_grid_and_pruned_zeros():
    teacher = _mlp()
    weights = _weights(teacher)
    first = next(name for name, w in weights.items() if w.shape == (IN, HIDDEN))
    pruned = weights[first].copy()
    pruned[np.abs(pruned) < np.quantile(np.abs(pruned), 0.5)] = 0.0  # 50% unstructured
    student = ReplaceLayerWeights({first: pruned})(teacher)
    grids = quantization_grids(student, "int4-weight")
    assert set(grids) == set(weights)
    result, record = distill(student, teacher, _data(), DistillConfig(epochs=8, reconstruct_epochs=2,
                                                                      learning_rate=3e-3), grids, target=TARGET)
    curve = record["phases"][-1]["loss_curve"]
    assert curve[-1] < 0.8 * curve[0]
    assert record["metric_after"]["sqnr_db"] > record["metric_before"]["sqnr_db"]
    assert record["masked_layers"] == [first]
    trained = _weights(result)
    np.testing.assert_array_equal(trained[first][pruned == 0], 0.0)  # pruned stays pruned
    for name, w in trained.items():
        assert not np.array_equal(w, weights[name])  # it trained
        q, scale = quantize_per_channel(w, 1, bits=4)
        np.testing.assert_allclose(q * scale.reshape(1, -1), w, rtol=1e-6, atol=1e-7)  # on the int4 grid


@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_distill_keeps_ternary_and_binary_grids_and_is_deterministic(kind):
    teacher = _mlp()
    mode = f"{kind}-weight"
    config = DistillConfig(epochs=3, reconstruct_epochs=1)
    first, record = distill(teacher, teacher, _data(), config, quantization_grids(teacher, mode), target=TARGET)
    # Determinism checked once (ternary): each distill compiles three modules, a few seconds.
    second = distill(teacher, teacher, _data(), config, quantization_grids(teacher, mode), target=TARGET)[0] \
        if kind == "ternary" else first
    for w, again in zip(_weights(first).values(), _weights(second).values()):
        np.testing.assert_array_equal(w, again)  # same seed, same data: bit-identical
        codes, alpha = (ternarize if kind == "ternary" else binarize)(w, 1)
        np.testing.assert_allclose(codes * alpha.reshape(1, -1), w, rtol=1e-6)
        assert set(np.unique(codes)) <= ({-1, 0, 1} if kind == "ternary" else {-1, 1})
    assert record["steps"] == 4 * len(_data())


def test_ternary_and_binary_projection_is_idempotent_and_packs_exactly():
    rng = np.random.default_rng(5)
    w = rng.normal(0, 1, (8, 3, 3, 3)).astype(np.float32)
    for kind, bits in (("ternary", 2), ("binary", 1)):
        grid = WeightGrid(kind, 0, bits)
        once = grid.project(w)
        np.testing.assert_array_equal(grid.project(once), once)
        codes, _ = (ternarize if bits == 2 else binarize)(w, 0)
        packed = pack_codes(codes, bits)
        assert packed.nbytes == -(-w.size * bits // 8)
        np.testing.assert_array_equal(unpack_codes(packed, w.shape, bits), codes)
    codes, alpha = ternarize(w, 0)
    # TWN: the threshold 0.7 E|W| keeps about 42% of Gaussian weights at zero.
    assert 0.3 < np.mean(codes == 0) < 0.55 and alpha.shape == (8,)


@pytest.mark.parametrize("kwargs, message", [
    ({"minutes": 0}, "minutes must be a positive number"),
    ({"epochs": 0, "reconstruct_epochs": 0}, "nothing to train"),
    ({"label_weight": 1.5}, "label_weight must be in"),
    ({"seed": -1}, "seed must be an integer"),
])
def test_distill_config_rejects_bad_values(kwargs, message):
    with pytest.raises(TvmcompressError, match=message):
        DistillConfig(**kwargs)


def test_distill_keeps_clustered_layers_shared_values():
    teacher = _mlp()
    weights = _weights(teacher)
    clustered = {}
    for name, w in weights.items():  # 4 shared values per layer, as --cluster-bits 2 leaves them
        edges = np.quantile(w, [0.25, 0.5, 0.75])
        codebook = np.array([np.mean(w[np.digitize(w, edges) == k]) for k in range(4)], np.float32)
        clustered[name] = codebook[np.digitize(w, edges)]
    student = ReplaceLayerWeights(clustered)(teacher)
    result, record = distill(student, teacher, _data(), DistillConfig(epochs=3, reconstruct_epochs=0,
                                                                      learning_rate=3e-3), target=TARGET,
                             tied=sorted(weights))
    assert record["tied_layers"] == sorted(weights)
    for name, w in _weights(result).items():
        assert len(np.unique(w)) <= 4
        assert not np.array_equal(w, clustered[name])
