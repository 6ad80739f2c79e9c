"""Which ops are quantized, and how: a declarative, greppable op -> rule table (onnxruntime's `registry.py`).

A rule says which call arguments are activations (quantized per tensor with calibrated parameters), which
argument is the weight (a bound constant, quantized symmetric per output channel), on which axis of the weight
and of the output the output channels lie, and when the rule applies at all. Passes read `RULES`; nothing
here mutates IR. Extend a table with `{**RULES, "relax.op": QuantRule(...)}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

__all__ = ["QuantRule", "RULES", "Layer", "find_quantizable_layers", "constant_value", "rebind"]


@dataclass(frozen=True)
class QuantRule:
    """How one op is quantized. `weight_channel_axis`/`output_channel_axis` are callables of the call because
    they depend on its layout attributes."""

    name: str  # short op name used in layer names ("conv2d_0")
    activations: tuple[int, ...]
    weight: int
    weight_channel_axis: Callable[[relax.Call], int]
    output_channel_axis: Callable[[relax.Call], int]
    applies: Callable[[relax.Call], bool]


def constant_value(expr: relax.Expr) -> np.ndarray | None:
    """The numpy value of a bound constant (0.27: `GenericConst.value`), else None."""
    if isinstance(expr, tvm.ir.expr.GenericConst):
        return expr.value.numpy()
    return None


def _dtype(expr: relax.Expr) -> str | None:
    ty = expr.ty if hasattr(expr, "ty") else None
    return getattr(ty, "dtype", None)


def _float_with_const_weight(call: relax.Call, rank: int | None) -> bool:
    weight = constant_value(call.args[1])
    if weight is None or weight.dtype != np.float32 or _dtype(call.args[0]) != "float32":
        return False
    return rank is None or weight.ndim == rank


def _conv2d_applies(call: relax.Call) -> bool:
    return _float_with_const_weight(call, 4) and str(call.attrs.out_dtype) in ("", "void", "float32", "None")


def _matmul_applies(call: relax.Call) -> bool:
    # Only activation x constant [K, N]; activation x activation matmuls (attention) stay float for now.
    return _float_with_const_weight(call, 2) and str(call.attrs.out_dtype) in ("", "void", "float32", "None")


RULES: Mapping[str, QuantRule] = {
    "relax.nn.conv2d": QuantRule(
        name="conv2d",
        activations=(0,),
        weight=1,
        weight_channel_axis=lambda call: str(call.attrs.kernel_layout).index("O"),
        output_channel_axis=lambda call: str(call.attrs.out_layout or call.attrs.data_layout).index("C"),
        applies=_conv2d_applies,
    ),
    "relax.matmul": QuantRule(
        name="matmul",
        activations=(0,),
        weight=1,
        weight_channel_axis=lambda call: 1,
        output_channel_axis=lambda call: -1,
        applies=_matmul_applies,
    ),
}


@dataclass(frozen=True)
class Layer:
    """One quantizable call: `binding` is its Relax binding name, `name` its op-and-index alias."""

    name: str
    binding: str
    op: str
    activations: tuple[str, ...]  # binding/parameter names of the activation inputs


def find_quantizable_layers(mod: tvm.IRModule, rules: Mapping[str, QuantRule] = RULES) -> list[Layer]:
    """The calls of `main` that a rule applies to, in program order, with activations that are Vars."""
    func = mod["main"]
    layers, counts = [], {}
    for block in func.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
                continue
            rule = rules.get(call.op.name)
            if rule is None or not rule.applies(call):
                continue
            acts = [call.args[i] for i in rule.activations]
            if not all(isinstance(a, relax.Var) for a in acts):
                continue
            index = counts.get(rule.name, 0)
            counts[rule.name] = index + 1
            layers.append(Layer(f"{rule.name}_{index}", binding.var.name, call.op.name, tuple(a.name for a in acts)))
    return layers


def rebind(mutator, old_var: relax.Var, value: relax.Expr) -> relax.Var:
    """Emit `value` in place of the binding of `old_var` in a PyExprMutator, keeping its name, and an output
    var staying an output var (a dataflow block's `R.output`)."""
    if isinstance(old_var, relax.DataflowVar) or not mutator.builder_.current_block_is_dataflow():
        new_var = mutator.builder_.emit(value, name_hint=old_var.name)
    else:
        new_var = mutator.builder_.emit_output(value, name_hint=old_var.name)
    mutator.set_var_remap(old_var, new_var)
    return new_var
