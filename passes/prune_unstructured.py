"""PruneUnstructured: zero individual weights of conv2d / matmul layers (magnitude pruning).

`PruneUnstructured({layer binding: keep mask})` multiplies each named layer's constant weight by its boolean
mask (the weight's own layout: conv OIHW, matmul [K, N]). `choose_masks` picks the masks: the smallest
|w| (criterion l1/l2/bn) or |w| * mean |input activation| (criterion activation, as in Wanda) are zeroed, to
`sparsity` in each layer (scope "layer") or under one threshold for all layers (scope "global").

Zeros alone do not make a dense kernel faster; they make the weights compress (the artifact's entropy-coded
size) and they are what block / N:M sparse kernels exploit. Shapes never change.

Pre: weights are bound float32 constants; binding names are unique. Post: the named layers' weights are
exactly w * mask; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .channel_groups import analyze_channels
from .quant_rules import rebind

__all__ = ["PruneUnstructured", "choose_masks"]


def _scores(layer, activations: Mapping[str, np.ndarray] | None) -> np.ndarray:
    score = np.abs(layer.weight)
    if activations is not None and layer.input_var in activations:
        act = np.asarray(activations[layer.input_var], np.float32)  # mean |x| per input channel / feature
        if layer.op == "conv2d":
            score = score * act[None, :, None, None]
        elif layer.op == "matmul":
            score = score * act[:, None]
    return score


def _layer_mask(score: np.ndarray, sparsity: float) -> np.ndarray | None:
    """Exactly round(sparsity * size) zeros, ties broken by position (stable), so masks are deterministic."""
    count = int(round(sparsity * score.size))
    if count == 0:
        return None
    order = np.argsort(score.reshape(-1), kind="stable")
    mask = np.ones(score.size, bool)
    mask[order[:count]] = False
    return mask.reshape(score.shape)


def choose_masks(
    mod: tvm.IRModule,
    sparsity: float,
    scope: str = "layer",
    activations: Mapping[str, np.ndarray] | None = None,
    overrides: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """{layer binding: bool keep mask} zeroing `sparsity` of the conv2d/matmul weights. `activations`:
    {activation var name: mean |x| per channel} for the Wanda-style criterion. `overrides`: {layer binding:
    sparsity} for layers that take their own sparsity (per layer, whatever the scope; 0 leaves them whole)."""
    overrides = dict(overrides or {})
    layers = [l for l in analyze_channels(mod).layers.values() if l.weight.dtype == np.float32]
    scores = {l.binding: _scores(l, activations) for l in layers}
    masks = {}
    if scope == "global":
        flat = np.concatenate([s.reshape(-1) for s in scores.values()])
        count = int(round(sparsity * flat.size))
        threshold = np.partition(flat, count - 1)[count - 1] if count > 0 else -np.inf
        masks = {name: s > threshold for name, s in scores.items() if name not in overrides}
    for name, score in scores.items():
        if scope == "global" and name not in overrides:
            continue
        mask = _layer_mask(score, overrides.get(name, sparsity))
        if mask is not None:
            masks[name] = mask
    return masks


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PruneUnstructured")
class PruneUnstructured:
    def __init__(self, masks: Mapping[str, np.ndarray]):
        self.masks = {name: np.asarray(mask, bool) for name, mask in masks.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.masks:
            return mod
        layers = analyze_channels(mod).layers
        for name, mask in self.masks.items():
            if name not in layers:
                raise ValueError(f"PruneUnstructured: {name} is not a conv2d/matmul with a constant weight")
            if mask.shape != layers[name].weight.shape:
                raise ValueError(f"PruneUnstructured: mask of {name} has shape {mask.shape}, "
                                 f"the weight {layers[name].weight.shape}")
        rewriter = _MaskRewriter(mod, self.masks)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _MaskRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, masks: dict[str, np.ndarray]):
        super().__init__(mod)
        self.masks = masks

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        mask = self.masks.get(binding.var.name)
        if mask is None:
            return super().visit_var_binding_(binding)
        call = binding.value
        weight = call.args[1].value.numpy()
        args = [self.visit_expr(call.args[0]), relax.const(np.where(mask, weight, 0).astype(weight.dtype)),
                *call.args[2:]]
        rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
