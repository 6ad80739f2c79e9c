"""ClusterWeights: weight sharing by per-layer k-means (Deep Compression, Han et al. 2016), `--cluster-bits B`.

Each Conv/Dense/MatMul constant weight is replaced by its nearest centroid, so that a layer holds at most 2^B
distinct values and can be stored as B-bit indices plus a 2^B-entry codebook. Zeros stay exactly zero and take
one codebook entry when the layer has any (pruning survives clustering; 2^B - 1 centroids for the nonzeros),
so `cluster:4` after 80% pruning still has 15 learned values.

k-means is 1-D Lloyd with linear initialization over [min, max] of the nonzero weights (the paper found
linear init best: it keeps centroids on the rare large weights that matter most); a centroid left empty (in
the gap that pruning leaves around zero) is moved onto the worst-fitted weight. All of it is deterministic.

Order with int8 (`for_int8=True`; measured on the digits CNN, tests/numerics/test_compression_accuracy.py):
cluster the float weights before quantization, in each output channel's int8 units (w / (max|w_c| / 127)),
with +-127 pinned and integer centroids. Quantizing per channel then finds the same scales and gives exactly
the shared codes: one int8 codebook per layer, so the int8 bytes entropy-code to the index entropy (about B
bits or less). Plain float clustering followed by per-channel int8 leaves up to 2^B values *per channel* (the
digits CNN's conv2: 372 distinct int8 values, 2865 coded bytes instead of 2092). Each value is weighted by
scale_c^2 so that k-means minimizes the real weights' error. `cluster_refit.fit_codebooks` then re-fits the
codebooks to the layer outputs on calibration data.

Pre: weights are bound float32 constants (FoldConstant has run); binding names are unique. Post: each selected
conv2d/matmul weight constant is replaced by its clustered copy (same shape and dtype); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..errors import TvmcompressError
from .quant_rules import RULES, constant_value, find_quantizable_layers, rebind

__all__ = ["ClusterWeights", "kmeans_1d", "cluster_weight", "ClusteredWeight"]

MAX_ITERATIONS = 50


@dataclass(frozen=True)
class ClusteredWeight:
    """A weight as codebook + indices: `codebook[indices]` (times `channel_scale` along `channel_axis` when
    clustered for int8) is the clustered weight. Index 0 is 0.0 when the layer has zeros."""

    codebook: np.ndarray  # float32 [<= 2^B]; integer codes in [-127, 127] when channel_scale is set
    indices: np.ndarray  # uint8/uint16, the weight's shape
    channel_scale: np.ndarray | None = None  # float32, the weight's shape with 1 off the channel axis

    def values(self) -> np.ndarray:
        values = self.codebook[self.indices]
        return values if self.channel_scale is None else (values * self.channel_scale).astype(np.float32)


def kmeans_1d(
    values: np.ndarray, k: int, iterations: int = MAX_ITERATIONS, fixed: tuple[float, ...] = (),
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted centroids (at most k, `fixed` ones included and never moved) of 1-D float data by Lloyd's
    algorithm from a linear initialization.

    1-D clusters are intervals, so each step is a sort-free bucketing with searchsorted on the midpoints."""
    values = np.asarray(values, np.float64).ravel()
    sample_weight = np.ones_like(values) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    if values.size == 0:
        return np.zeros(0, np.float32)
    low, high = float(values.min()), float(values.max())
    free = k - len(fixed)
    centroids = np.sort(np.concatenate([
        np.linspace(low, high, free) if free > 1 else np.array([values.mean()] * free), np.asarray(fixed, np.float64),
    ]))
    is_fixed = np.isin(centroids, fixed)
    for _ in range(iterations):
        assignment = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
        sums = np.bincount(assignment, weights=values * sample_weight, minlength=len(centroids))
        mass = np.bincount(assignment, weights=sample_weight, minlength=len(centroids))
        counts = np.bincount(assignment, minlength=len(centroids))
        updated = np.where((mass > 0) & ~is_fixed, sums / np.where(mass > 0, mass, 1), centroids)
        empty = np.flatnonzero((counts == 0) & ~is_fixed)
        if empty.size:
            # Pruned weights leave a gap around zero where linear init puts centroids that win no member:
            # move each empty one onto the worst-fitted value (deterministic: argmax), splitting its cluster.
            error = sample_weight * (values - updated[assignment]) ** 2
            for index in empty:
                worst = int(np.argmax(error))
                if error[worst] == 0:
                    break
                updated[index] = values[worst]
                error[values == values[worst]] = 0
            order = np.argsort(updated, kind="stable")
            updated, is_fixed = updated[order], is_fixed[order]
        elif np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = updated
    assignment = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    return np.sort(centroids[np.unique(assignment)]).astype(np.float32)


def cluster_weight(weight: np.ndarray, bits: int, channel_axis: int | None = None) -> ClusteredWeight:
    """Cluster a weight's nonzero values into 2^bits (- 1 when it has zeros) centroids; zeros stay 0.

    channel_axis (for int8 per-channel quantization after clustering): cluster the weight divided by its
    per-channel int8 scale (max |w_c| / 127) with centroids rounded to integers and +-127 pinned. Each channel's
    largest weight stays at +-127 of its scale, so that quantizing the clustered weight per channel finds the
    same scales and gives exactly the shared integer codebook: a layer's int8 weights take at most 2^bits values
    (one codebook, quantized), which is what makes them entropy-code to about `bits` bits or less."""
    if channel_axis is None:
        scale, normalized, fixed, importance = None, weight, (), None
    else:
        axes = tuple(i for i in range(weight.ndim) if i != channel_axis % weight.ndim)
        absmax = np.abs(weight).max(axis=axes, keepdims=True)
        scale = np.where(absmax > 0, absmax / 127, 1.0).astype(np.float32)
        normalized, fixed = weight / scale, (-127.0, 127.0)
        # A code's error costs scale_c times more in channel c: weigh each value by scale_c^2, so that k-means
        # minimizes the squared error of the real weights, not of the normalized ones.
        importance = np.broadcast_to(scale.astype(np.float64) ** 2, weight.shape)[weight != 0]
    nonzero = normalized[weight != 0]
    has_zero = nonzero.size < weight.size
    centroids = kmeans_1d(nonzero, 2**bits - (1 if has_zero else 0), fixed=fixed, sample_weight=importance)
    if channel_axis is not None:
        centroids = np.unique(np.round(centroids))
        centroids = centroids[centroids != 0]  # a nonzero weight rounding to code 0 keeps the nearest nonzero code
    codebook = np.concatenate([[0.0], centroids]).astype(np.float32) if has_zero else centroids.astype(np.float32)
    # Nearest codebook entry for the nonzeros (the zero entry is not a candidate for them: pruning decides
    # which weights are zero, not clustering).
    indices = np.zeros(weight.shape, np.uint16 if len(codebook) > 256 else np.uint8)
    if nonzero.size:
        nearest = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, nonzero)
        indices[weight != 0] = nearest + (1 if has_zero else 0)
    return ClusteredWeight(codebook, indices, scale)


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise TvmcompressError(f"--cluster-bits must be an integer from 1 to 8, got {bits!r}")
    return bits


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.ClusterWeights")
class ClusterWeights:
    """Cluster the constant weights of every conv2d/matmul (or the `layers` named, by layer or binding name)
    to 2^bits shared values per layer."""

    def __init__(
        self, bits: int, layers: Iterable[str] | None = None, for_int8: bool = False,
        codebooks: Mapping[str, np.ndarray] | None = None,
    ):
        self.bits = _check_bits(bits)
        self.layers = None if layers is None else frozenset(layers)
        self.for_int8 = for_int8
        # {binding: codebook} replacing k-means' centroids (same length and order), e.g. re-fitted on data
        # by `cluster_refit.fit_codebooks`; the assignment of weights to entries stays k-means'.
        self.codebooks = dict(codebooks or {})

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        found = find_quantizable_layers(mod, RULES)
        selected = {l.binding for l in found
                    if self.layers is None or l.name in self.layers or l.binding in self.layers}
        if not selected:
            return mod
        axes = {l.binding: RULES[l.op] for l in found} if self.for_int8 else {}
        rewriter = _WeightClusterer(mod, selected, self.bits, axes, self.codebooks)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _WeightClusterer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, selected: set[str], bits: int, rules: dict, codebooks: dict):
        super().__init__(mod)
        self.codebooks = codebooks
        self.selected = selected
        self.bits = bits
        self.rules = rules  # binding -> QuantRule, when clustering for int8 per-channel weights

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if binding.var.name not in self.selected or not isinstance(call, relax.Call):
            return super().visit_var_binding_(binding)
        weight = constant_value(call.args[1])
        rule = self.rules.get(binding.var.name)
        axis = rule.weight_channel_axis(call) if rule is not None else None
        clustered = cluster_weight(weight, self.bits, axis)
        codebook = self.codebooks.get(binding.var.name)
        if codebook is not None:
            clustered = ClusteredWeight(np.asarray(codebook, np.float32), clustered.indices, clustered.channel_scale)
        values = clustered.values().astype(weight.dtype)
        args = [self.visit_expr(a) for a in call.args]
        args[1] = relax.const(values, str(values.dtype))
        rebind(self, binding.var, relax.Call(call.op, args, call.attrs))

