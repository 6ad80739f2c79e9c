"""PruneChannels: remove channels from conv2d / matmul layers and every tensor, weight and shape tied to them.

`PruneChannels({source binding: kept output channels})` rewrites `main` so that each named layer produces only
the kept channels; the decision is spread to its whole dependency group (`channel_groups`): every other source
of the group (residual adds tie them), depthwise convs, per-channel constants (bias, decomposed BatchNorm),
concats, flattens, and the input channels (rows) of every consumer layer. Shapes are re-inferred, so the
compiled graph has fewer MACs.

`choose_channels` makes the decision: rank each prunable group's channels by a criterion and keep the best
(1 - ratio), rounded to a multiple of `multiple_of`.

Pre: as `channel_groups` (static shapes, bound constants, unique binding names; BatchNorm decomposed).
Post: the kept channels compute exactly what they computed before; removed channels are gone from every weight.
Raises ValueError when a named layer is not a prunable source or two sources of one group disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .channel_groups import ChannelAnalysis, analyze_channels, kept_indices, space_leaves
from .quant_rules import rebind

__all__ = ["PruneChannels", "choose_channels", "channel_importance", "kept_count", "prunable_group_sizes"]


def kept_count(channels: int, ratio: float, multiple_of: int) -> int:
    """How many of `channels` survive pruning `ratio` of them: rounded to a multiple of `multiple_of` when the
    layer has at least 2 * multiple_of channels (a whole SIMD vector each), else to the nearest integer; >= 1."""
    keep = channels * (1.0 - ratio)
    if multiple_of > 1 and channels >= 2 * multiple_of:
        return int(min(channels, max(multiple_of, multiple_of * round(keep / multiple_of))))
    return int(min(channels, max(1, round(keep))))


def _filter_norms(layer, order: int) -> np.ndarray:
    weight = layer.weight
    per_channel = weight.reshape(weight.shape[0], -1) if layer.op == "conv2d" else weight.T
    if order == 1:
        return np.abs(per_channel).mean(axis=1)
    return np.sqrt((per_channel.astype(np.float64) ** 2).mean(axis=1))


def _bn_gamma(mod: tvm.IRModule, analysis: ChannelAnalysis, layer) -> np.ndarray:
    """|gamma| of the BatchNorm after a source: after DecomposeOpsForInference BN is
    (x - mean) / sqrt(var + eps) * gamma + beta, so gamma is the first per-channel constant multiply on the
    chain of single elementwise ops that follows the layer."""
    uses: dict[str, list[relax.Call]] = {}
    bindings = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            bindings[binding.var.name] = binding.value
            if isinstance(binding.value, relax.Call):
                for arg in binding.value.args:
                    if isinstance(arg, relax.Var):
                        uses.setdefault(arg.name, []).append(binding.var.name)
    current = layer.binding
    while len(uses.get(current, [])) == 1:
        nxt = uses[current][0]
        call = bindings[nxt]
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
            break
        if call.op.name == "relax.multiply" and nxt in analysis.consts:
            arg_index, position = analysis.consts[nxt][0]
            gamma = call.args[arg_index].value.numpy()
            return np.abs(np.moveaxis(gamma, position, 0).reshape(gamma.shape[position], -1)[:, 0])
        if call.op.name not in ("relax.add", "relax.subtract", "relax.divide"):
            break
        current = nxt
    raise ValueError(f"criterion 'bn': layer {layer.binding} is not followed by a BatchNormalization")


def channel_importance(
    mod: tvm.IRModule,
    analysis: ChannelAnalysis,
    root: int,
    criterion: str,
    activations: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """One score per channel of a group; higher is kept. Each source's scores are divided by their mean so that
    layers of different scale weigh alike, then summed over the group's sources (a residual group has several).
    `activations`: {source binding: mean |activation| per channel} for criterion 'activation'."""
    total = np.zeros(analysis.sizes[root], np.float64)
    for layer in analysis.sources(root):
        if criterion in ("l1", "l2"):
            score = _filter_norms(layer, 1 if criterion == "l1" else 2)
        elif criterion == "bn":
            try:
                score = _bn_gamma(mod, analysis, layer)
            except ValueError:
                score = _filter_norms(layer, 1)  # a source without BN (a residual group's other member)
        else:
            if activations is None or layer.binding not in activations:
                raise ValueError(f"criterion 'activation' needs calibration statistics of {layer.binding}")
            score = np.asarray(activations[layer.binding], np.float64)
        total += score / max(float(np.mean(score)), 1e-12)
    return total


def prunable_group_sizes(mod: tvm.IRModule) -> dict[str, int]:
    """{binding of the group's first source: channel count} of every prunable group: the names that
    `choose_channels` ratios and PruneConfig overrides use."""
    analysis = analyze_channels(mod)
    return {analysis.sources(root)[0].binding: int(analysis.sizes[root]) for root in analysis.prunable_groups()}


def choose_channels(
    mod: tvm.IRModule,
    ratio: float | Mapping[str, float],
    criterion: str = "l1",
    multiple_of: int = 8,
    activations: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """{source binding: sorted kept channel indices} for every prunable group. `ratio` is one fraction for all
    groups, or per group keyed by the binding of its first source (groups not named are left whole)."""
    analysis = analyze_channels(mod)
    decision = {}
    for root in analysis.prunable_groups():
        first = analysis.sources(root)[0].binding
        group_ratio = ratio.get(first, 0.0) if isinstance(ratio, Mapping) else ratio
        keep = kept_count(analysis.sizes[root], group_ratio, multiple_of)
        if keep >= analysis.sizes[root]:
            continue
        score = channel_importance(mod, analysis, root, criterion, activations)
        # Stable: ties keep the lower index, so decisions are deterministic.
        kept = np.sort(np.argsort(-score, kind="stable")[:keep])
        decision[first] = kept
    return decision


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PruneChannels")
class PruneChannels:
    def __init__(self, kept: Mapping[str, np.ndarray]):
        self.kept = {name: np.asarray(k, np.int64) for name, k in kept.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.kept:
            return mod
        analysis = analyze_channels(mod)
        by_root: dict[int, np.ndarray] = {}
        prunable = set(analysis.prunable_groups())
        for name, kept in self.kept.items():
            layer = analysis.layers.get(name)
            if layer is None or layer.op == "depthwise_conv2d" or not isinstance(layer.out_space, int):
                raise ValueError(f"PruneChannels: {name} is not a conv2d/matmul with a constant weight")
            root = analysis.find(layer.out_space)
            if root not in prunable:
                raise ValueError(f"PruneChannels: the channels of {name} cannot be pruned (they reach an output, "
                                 "a function input or an op that would compute differently)")
            size = analysis.sizes[root]
            if kept.size == 0 or len(np.unique(kept)) != kept.size or kept.min() < 0 or kept.max() >= size:
                raise ValueError(f"PruneChannels: kept channels of {name} must be distinct indices in [0, {size})")
            if root in by_root and not np.array_equal(by_root[root], np.sort(kept)):
                raise ValueError(f"PruneChannels: {name} is tied to another named layer with a different choice")
            by_root[root] = np.sort(kept)
        rewriter = _ChannelRewriter(mod, analysis, by_root)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return relax.transform.Normalize()(rewriter.builder_.get())


def _take(value: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    if indices.size == value.shape[axis] and np.array_equal(indices, np.arange(value.shape[axis])):
        return value
    return np.ascontiguousarray(np.take(value, indices, axis=axis))


@mutator
class _ChannelRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, analysis: ChannelAnalysis, kept: dict[int, np.ndarray]):
        super().__init__(mod)
        self.analysis = analysis
        self.kept = kept

    def indices(self, space) -> np.ndarray:
        return kept_indices(self.analysis, space, self.kept)

    def affected(self, space) -> bool:
        return space is not None and any(self.analysis.find(l) in self.kept for l in space_leaves(space))

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name, call = binding.var.name, binding.value
        layer = self.analysis.layers.get(name)
        if layer is not None and (self.affected(layer.out_space) or self.affected(layer.in_space)):
            rebind(self, binding.var, self.rewrite_layer(layer, call))
        elif name in self.analysis.consts and self.affected(self.analysis.spaces[name][0]):
            args = [self.visit_expr(a) for a in call.args]
            space = self.analysis.spaces[name][0]
            for arg_index, position in self.analysis.consts[name]:
                value = _take(call.args[arg_index].value.numpy(), self.indices(space), position)
                args[arg_index] = relax.const(value, value.dtype)
            rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
        elif name in self.analysis.reshapes and self.affected(self.analysis.reshapes[name]):
            data = self.visit_expr(call.args[0])
            rows = int(self.indices(self.analysis.reshapes[name]).size)
            batch = int(call.ty.shape.values[0])
            rebind(self, binding.var, relax.op.reshape(data, (batch, rows)))
        else:
            super().visit_var_binding_(binding)

    def rewrite_layer(self, layer, call: relax.Call) -> relax.Expr:
        data = self.visit_expr(call.args[0])
        weight = layer.weight
        out_idx = self.indices(layer.out_space)
        if layer.op == "matmul":
            weight = _take(_take(weight, self.indices(layer.in_space), 0), out_idx, 1)
            return relax.op.matmul(data, relax.const(weight, weight.dtype), out_dtype=call.attrs.out_dtype)
        attrs = call.attrs
        groups = int(attrs.groups)
        weight = _take(weight, out_idx, 0)
        if layer.op == "conv2d":
            weight = _take(weight, self.indices(layer.in_space), 1)
        else:
            groups = int(out_idx.size)
        return relax.op.nn.conv2d(
            data, relax.const(weight, weight.dtype), strides=attrs.strides, padding=attrs.padding,
            dilation=attrs.dilation, groups=groups, data_layout=attrs.data_layout, kernel_layout=attrs.kernel_layout,
            out_layout=attrs.out_layout, out_dtype=attrs.out_dtype,
        )
