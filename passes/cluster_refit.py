"""fit_codebooks: re-fit each clustered layer's codebook on calibration data (Deep Compression's centroid
fine-tuning, done by least squares instead of gradient steps).

k-means minimizes the weights' error; what matters is the layer's output. With the assignment of weights to
codebook entries fixed, a layer's output is linear in its codebook c:  X W(c) = sum_i c_i X (M_i * s), with M_i
the 0/1 mask of the weights on entry i and s the per-channel scale (1 without int8). So for each layer, in
program order (each fit sees the inputs that the earlier, already clustered, layers produce), we solve the
least-squares problem min ||sum_i c_i F_i - Y||^2 (+ a small ridge towards k-means' c) for the entries that may
move, Y being the unclustered model's output of that layer. Entry 0.0 (pruned weights) never moves; for int8
the pinned +-127 entries stay (they fix each channel's scale) and the others are rounded to integer codes.

What the codebook cannot absorb of the mean output shift per channel goes into the layer's bias (the per-channel
add after it, via reconstruct.ReplaceLayerWeights), as bias correction does after quantization.

Pre: `teacher` is the float module ClusterWeights would cluster (bound constants, unique binding names).
Returns codebooks and bias offsets for `apply_codebooks`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import tvm

from .cluster_weights import ClusterWeights, cluster_weight
from .quant_rules import RULES, constant_value, find_quantizable_layers
from .reconstruct import ReplaceLayerWeights, _bias_binding, collect_tensors, im2col

log = logging.getLogger(__name__)

__all__ = ["fit_codebooks", "apply_codebooks"]

MAX_ROWS = 8192  # rows of the least-squares problem per layer (sampled, seeded): ~16 codes need few
RIDGE = 1e-4  # relative to the mean diagonal of the Gram matrix: keeps rarely used entries near k-means'


def _design(call, weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rows A [rows, K] with the weight flattened to [K, O] (conv: im2col in OIHW order)."""
    if weight.ndim == 4:
        attrs = call.attrs
        return im2col(x, tuple(weight.shape[2:]), [int(v) for v in attrs.strides], [int(v) for v in attrs.padding],
                      [int(v) for v in attrs.dilation])
    return x.reshape(-1, x.shape[-1])


def _outputs(weight: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1]) if weight.ndim == 4 else y.reshape(-1, y.shape[-1])


def _flat(array: np.ndarray) -> np.ndarray:
    """[O, ...] conv / [K, O] matmul -> [K, O]."""
    return array.reshape(array.shape[0], -1).T if array.ndim == 4 else array


def apply_codebooks(
    teacher: tvm.IRModule, bits: int, codebooks: Mapping[str, np.ndarray], offsets: Mapping[str, np.ndarray],
    for_int8: bool = False,
) -> tvm.IRModule:
    """ClusterWeights with the fitted codebooks, then the bias corrections added to the layers' bias constants."""
    mod = ClusterWeights(bits, for_int8=for_int8, codebooks=codebooks)(teacher)
    return ReplaceLayerWeights({}, offsets)(mod) if offsets else mod


def fit_codebooks(
    teacher: tvm.IRModule, bits: int, data: Iterable[Mapping[str, np.ndarray]], for_int8: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({layer binding: codebook}, {bias binding: per-channel correction}) for `apply_codebooks`. The correction
    is the mean output error per channel left after the fit, added to the add / subtract of a per-channel
    constant that follows the layer (its bias), where there is one."""
    data = list(data)
    offsets: dict[str, np.ndarray] = {}
    layers = find_quantizable_layers(teacher, RULES)
    calls = {b.var.name: b.value for blk in teacher["main"].body.blocks for b in blk.bindings}
    targets = collect_tensors(teacher, [l.binding for l in layers], data)
    codebooks: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for layer in layers:
        call = calls[layer.binding]
        weight = constant_value(call.args[1])
        axis = RULES[layer.op].weight_channel_axis(call) if for_int8 else None
        clustered = cluster_weight(weight, bits, axis)
        student = apply_codebooks(teacher, bits, codebooks, offsets, for_int8)
        x = collect_tensors(student, [layer.activations[0]], data)[layer.activations[0]]
        a, y = _design(call, weight, x).astype(np.float64), _outputs(weight, targets[layer.binding]).astype(np.float64)
        if a.shape[0] > MAX_ROWS:
            pick = np.sort(rng.choice(a.shape[0], MAX_ROWS, replace=False))
            a, y = a[pick], y[pick]
        indices = _flat(clustered.indices)
        scale = np.ones(indices.shape[1]) if clustered.channel_scale is None else clustered.channel_scale.reshape(-1)
        codebook = clustered.codebook.astype(np.float64)
        movable = np.array([c != 0 and not (for_int8 and abs(c) == 127) for c in codebook])
        if not movable.any():
            continue
        # F[r, o, i] = scale_o * sum_k a[r, k] [indices[k, o] == i]
        onehot = (indices[:, :, None] == np.arange(len(codebook))).astype(np.float64)  # [K, O, n]
        features = np.einsum("rk,kon->ron", a, onehot) * scale[None, :, None]
        fixed = features[:, :, ~movable] @ codebook[~movable]
        free = features[:, :, movable].reshape(-1, int(movable.sum()))
        gram, rhs = free.T @ free, free.T @ (y - fixed).reshape(-1)
        ridge = RIDGE * max(float(np.mean(np.diag(gram))), 1e-12)
        fitted = np.linalg.solve(gram + ridge * np.eye(len(gram)), rhs + ridge * codebook[movable])
        if for_int8:
            # Integer codes strictly inside the pinned +-127, and never 0: the zero entry is pruning's.
            fitted = np.clip(np.round(fitted), -126, 126)
            fitted = np.where(fitted == 0, np.sign(codebook[movable]), fitted)
        new = codebook.copy()
        new[movable] = fitted
        before = np.linalg.norm(features @ codebook - y) / max(np.linalg.norm(y), 1e-12)
        after = np.linalg.norm(features @ new - y) / max(np.linalg.norm(y), 1e-12)
        if after < before:
            codebooks[layer.binding] = new.astype(np.float32)
        else:
            new = codebook
        bias_at = _bias_binding(teacher, layer.binding)
        if bias_at is not None:
            offsets[bias_at] = (y - features @ new).mean(axis=0)  # per output channel
        log.info("codebook refit %s: relative output error %.4f -> %.4f", layer.name, before, min(before, after))
    return codebooks, offsets
