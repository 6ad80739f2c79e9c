"""FoldChannelAffine: fold per-output-channel scales and shifts into the weight and one bias.

After DecomposeOpsForInference an exported conv + BatchNorm is `conv2d(x, W) + b - mean) / sqrt(var + eps)
* gamma + beta`: five per-channel constants next to W. Stored weights pay for each of them (they are most of a
small model's entropy-coded payload), and pruning by |W| ignores the BN scale that multiplies W. Folding gives
`conv2d(x, W * a) + b'` with a = gamma / sqrt(var + eps) per output channel.

Folded: a chain of single-use `add / subtract / multiply / divide` with a constant that varies along the output
channel axis only (or a scalar), starting at a conv2d/matmul with a constant float32 weight (the layers of
`quant_rules.RULES`). Not folded: `constant - y`, `constant / y`, chains through other ops or with a use
outside the chain.

Pre: weights are bound float32 constants (FoldConstant has run); binding names are unique.
Post: each folded chain is `y = R.add(op(x, W'), b')` bound to the chain's last var, with b' of shape
`[1, C, 1, 1]` for an NCHW conv, `[C]` for a matmul; other bindings are unchanged.
Numerics: float32 rounding of the folded products (~1e-7 relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .quant_rules import RULES, constant_value, rebind

__all__ = ["FoldChannelAffine"]

_AFFINE_OPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


@dataclass
class _Chain:
    layer: relax.VarBinding
    channel_axis: int  # of the output, non-negative
    scale: np.ndarray  # float64 [C]
    shift: np.ndarray  # float64 [C]
    bias_shape: tuple[int, ...]
    members: list[str]  # binding names folded away (the layer's included), the last one is the chain's end


def _channel_vector(value: np.ndarray, out_rank: int, axis: int, channels: int) -> np.ndarray | None:
    """The [C] vector of a constant that broadcasts along `axis` of the output only, else None."""
    if value.ndim == 0:
        return np.full(channels, float(value))
    if value.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,)).copy()


def _uses(func: relax.Function) -> dict[str, int]:
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Var):
            counts[expr.name] = counts.get(expr.name, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, visit)
    relax.analysis.post_order_visit(func.body.body, visit)
    return counts


def _find_chains(func: relax.Function) -> list[_Chain]:
    uses = _uses(func)
    bindings = [b for block in func.body.blocks for b in block.bindings]
    consumer: dict[str, relax.VarBinding] = {}
    for b in bindings:
        if isinstance(b.value, relax.Call):
            for arg in b.value.args:
                if isinstance(arg, relax.Var):
                    consumer[arg.name] = b
    chains = []
    for b in bindings:
        call = b.value
        rule = RULES.get(call.op.name) if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else None
        if rule is None or not rule.applies(call):
            continue
        # Only the channel dim must be static: a symbolic batch or spatial dim (dynamic shapes) does not change
        # the per-channel algebra.
        out_shape = list(b.var.ty.shape.values)
        axis = rule.output_channel_axis(call) % len(out_shape)
        if not isinstance(out_shape[axis], tvm.tirx.IntImm):
            continue
        channels = int(out_shape[axis])
        # [C] broadcasts along the last axis (matmul); a conv's NCHW output needs [1, C, 1, 1].
        bias_shape = (channels,) if axis == len(out_shape) - 1 else tuple(
            channels if i == axis else 1 for i in range(len(out_shape)))
        chain = _Chain(b, axis, np.ones(channels), np.zeros(channels), bias_shape, [b.var.name])
        current = b
        while uses.get(current.var.name, 0) == 1 and current.var.name in consumer:
            nxt = consumer[current.var.name]
            op = nxt.value.op
            if not isinstance(op, tvm.ir.Op) or op.name not in _AFFINE_OPS or len(nxt.value.args) != 2:
                break
            lhs, rhs = nxt.value.args
            const = constant_value(rhs) if isinstance(lhs, relax.Var) and lhs.name == current.var.name else None
            if const is None and op.name in ("relax.add", "relax.multiply"):
                const = constant_value(lhs) if isinstance(rhs, relax.Var) and rhs.name == current.var.name else None
            vector = None if const is None else _channel_vector(const, len(out_shape), axis, channels)
            # The op must keep the conv's shape (no broadcast): structurally, symbolic dims included.
            if vector is None or not tvm_ffi.structural_equal(list(nxt.var.ty.shape.values), out_shape):
                break
            if op.name == "relax.divide" and not np.all(vector):
                break  # x / 0 is inf or nan per element; a folded weight would spread that over whole sums
            if op.name == "relax.add":
                chain.shift = chain.shift + vector
            elif op.name == "relax.subtract":
                chain.shift = chain.shift - vector
            elif op.name == "relax.multiply":
                chain.scale, chain.shift = chain.scale * vector, chain.shift * vector
            else:
                chain.scale, chain.shift = chain.scale / vector, chain.shift / vector
            chain.members.append(nxt.var.name)
            current = nxt
        if len(chain.members) > 1:
            chains.append(chain)
    return chains


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.FoldChannelAffine")
class FoldChannelAffine:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = mod["main"] if "main" in [g.name_hint for g in mod.get_global_vars()] else None
        chains = _find_chains(func) if isinstance(func, relax.Function) else []
        if not chains:
            return mod
        rewriter = _AffineFolder(mod, chains)
        gvar = mod.get_global_var("main")
        rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _AffineFolder(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, chains: list[_Chain]):
        super().__init__(mod)
        self.ends = {c.members[-1]: c for c in chains}
        self.folded = {name for c in chains for name in c.members[:-1]}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name = binding.var.name
        if name in self.folded:
            return None  # re-emitted, folded, at the end of its chain
        chain = self.ends.get(name)
        if chain is None:
            return super().visit_var_binding_(binding)
        call = chain.layer.value
        rule = RULES[call.op.name]
        weight = constant_value(call.args[1])
        waxis = rule.weight_channel_axis(call) % weight.ndim
        shape = [1] * weight.ndim
        shape[waxis] = -1
        new_weight = (weight * chain.scale.reshape(shape)).astype(weight.dtype)
        args = [self.visit_expr(a) for a in call.args]
        args[1] = relax.const(new_weight, str(weight.dtype))
        layer = self.builder_.emit(relax.Call(call.op, args, call.attrs), name_hint=chain.layer.var.name)
        bias = chain.shift.astype(weight.dtype).reshape(chain.bias_shape)
        rebind(self, binding.var, relax.op.add(layer, relax.const(bias, str(weight.dtype))))
