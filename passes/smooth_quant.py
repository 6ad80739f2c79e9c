"""SmoothQuant: move activation outliers into the weights of the matmuls that read them.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models" (ICML
2023): a few channels of a transformer's LayerNorm output are 10-100x larger than the others, so one per-tensor
int8 scale spends almost all its levels on them and rounds the other channels to a handful of values. For
y = X W with W: [K, N] and any s > 0 in R^K, y = (X diag(s)^-1) (diag(s) W) exactly, and with

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)      (max|W_j|: row j of W, the weights input channel j meets)

the channel ranges of X / s move towards each other while the weights, quantized per output channel and so with
headroom, take the difference. alpha = 0.5 is the paper's default; a larger alpha moves more into the weights.

Three steps, as in calibrate.py (declare what to observe, observe, apply):
- `measure_channel_absmax`: max|X| per channel (the last axis, over all others) of each activation on the
  calibration data: one [K] vector per activation, whatever the amount of data (bounded memory).
- `smoothing_scales`: s per activation. Matmuls that read one activation (the Q, K and V projections) share one
  s, with max|W_j| taken over all their weights; they must, since X / s is computed once.
- `SmoothQuant(scales)`: the rewrite.

`SmoothQuant` pre: `main` is the prepared float module (`quantize.prepare_for_quantization`: constant weights,
unique binding names); keys of `scales` are parameters or bindings of `main` ([K] float vectors, positive).
Post: every matmul of `quant_rules.RULES` (float32 activation x constant [K, N] weight) whose activation is a key
reads X / s and has the weight diag(s) W. X / s comes from, in order of preference:
  - the producing `layer_norm` (last axis, constant gamma and beta): gamma / s, beta / s;
  - a producing `multiply` by a per-channel constant, or an `add` of a per-channel constant to such a multiply
    (a decomposed LayerNorm, as our frontend imports LayerNormalization, or an explicit affine): constants / s;
  - a producing linear layer `matmul(z, W') (+ b)`: the columns of W' and b divided by s (its weights are
    quantized per output channel, so this costs int8 nothing);
  looking through ops that keep channel j in channel j and commute with a positive scale: relu, a mean or sum
  over other axes (token pooling), attention's probs @ V (so 1/s lands in the V projection's columns);
  - otherwise an explicit `X_smoothed = multiply(X, 1/s)` before the first smoothed matmul of each block, which
    FuseOps fuses into X's producer.
Every var from X back to the absorber must have no other use (X: no use but the smoothed matmuls), or its values
would change for that other reader; then the explicit multiply is used. In a pre-LN block Q/K/V and the FFN-in
read a LayerNorm, the output projection reads probs @ V, the FFN-out reads relu(fc1): all absorbed. Float
outputs are unchanged up to float32 rounding (~1e-6 relative).

Runs on the float module before int8 calibration (api.compile applies it when `QuantizeConfig.smoothquant` is
set), so that calibration measures the smoothed ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .calibrate import run_instrumented
from .host_run import host_target
from .quant_rules import RULES, Layer, constant_value, find_quantizable_layers, rebind

log = logging.getLogger(__name__)

__all__ = ["SmoothQuant", "measure_channel_absmax", "smoothing_scales", "smooth_quant", "smoothed_layers"]

# The paper clamps s at 1e-5 from below; the upper clamp keeps X / s and diag(s) W within float32's comfortable
# range when a channel's weights are all but zero.
_MIN_SCALE, _MAX_SCALE = 1e-5, 1e5
_MATMUL_RULES = {"relax.matmul": RULES["relax.matmul"]}
_MAX_STEPS = 4  # ops looked through between an activation and the op that absorbs 1/s


def smoothed_layers(mod: tvm.IRModule, exclude: Iterable[str] = ()) -> list[Layer]:
    """The matmul layers SmoothQuant can smooth (float activation x constant [K, N] weight), minus `exclude`
    (op-and-index names such as `matmul_0`, or binding names), named as `find_quantizable_layers` names them."""
    skipped = set(exclude)
    return [
        layer for layer in find_quantizable_layers(mod, _MATMUL_RULES)
        if layer.name not in skipped and layer.binding not in skipped
    ]


def measure_channel_absmax(
    mod: tvm.IRModule,
    activations: Iterable[str],
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    target: tvm.target.Target | None = None,
) -> dict[str, np.ndarray]:
    """{activation -> max|X| per channel of its last axis} over every calibration call (float64 [K])."""
    points = list(dict.fromkeys(activations))
    if not points:
        return {}
    absmax: dict[str, np.ndarray] = {}
    for values in run_instrumented(mod, points, calibration_data, target or host_target(), what="smoothquant"):
        for name, x in zip(points, values):
            x = np.where(np.isfinite(x), np.abs(x), 0.0).reshape(-1, x.shape[-1])
            batch_max = x.max(axis=0).astype(np.float64)
            absmax[name] = batch_max if name not in absmax else np.maximum(absmax[name], batch_max)
    return absmax


def smoothing_scales(
    mod: tvm.IRModule, absmax: Mapping[str, np.ndarray], alpha: float, layers: Iterable[Layer] | None = None
) -> dict[str, np.ndarray]:
    """{activation -> s (float32 [K])}: s_j = max|X_j|^alpha / max|W_j|^(1-alpha), max|W_j| over every smoothed
    matmul that reads the activation. A channel never seen non-zero (or meeting only zero weights) keeps s_j = 1:
    dividing by a tiny s would turn a channel silent on the calibration data into an outlier on other data."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    layers = smoothed_layers(mod) if layers is None else list(layers)
    weights = _weights_by_binding(mod)
    weight_max: dict[str, np.ndarray] = {}
    for layer in layers:
        act = layer.activations[0]
        if act not in absmax:
            continue
        row_max = np.abs(weights[layer.binding]).max(axis=1).astype(np.float64)
        weight_max[act] = row_max if act not in weight_max else np.maximum(weight_max[act], row_max)
    scales = {}
    for act, w_max in weight_max.items():
        x_max = np.asarray(absmax[act], np.float64)
        if x_max.shape != w_max.shape:
            raise ValueError(f"{act}: {x_max.shape[0]} activation channels but weights with {w_max.shape[0]} rows")
        s = np.power(np.maximum(x_max, _MIN_SCALE), alpha) / np.power(np.maximum(w_max, _MIN_SCALE), 1.0 - alpha)
        s = np.where((x_max > 0) & (w_max > 0), np.clip(s, _MIN_SCALE, _MAX_SCALE), 1.0)
        scales[act] = s.astype(np.float32)
    return scales


def _weights_by_binding(mod: tvm.IRModule) -> dict[str, np.ndarray]:
    return {
        b.var.name: constant_value(b.value.args[1])
        for block in mod["main"].body.blocks for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op) and b.value.op.name == "relax.matmul"
    }


@dataclass
class _Plan:
    """How one activation is smoothed: `absorb` maps producer bindings to {argument index: new constant}."""

    activation: str
    scale: np.ndarray  # float32 [K]
    matmuls: list[str]  # binding names of the smoothed matmuls
    absorb: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # producing matmul -> divide its W columns by s
    absorbed_into: str = "multiply"  # "layer_norm", "affine", "linear" or "multiply" (the explicit one)
    through: list[str] = field(default_factory=list)  # ops looked through on the way to the absorber

    @property
    def absorbed(self) -> bool:
        return bool(self.absorb or self.columns)


def _consumers(func: relax.Function) -> dict[str, set[str]]:
    """{var name -> names of the bindings that read it}; "" stands for the function's result."""
    users: dict[str, set[str]] = {}

    def reader(name: str):
        def visit(expr):
            if isinstance(expr, relax.Var):
                users.setdefault(expr.name, set()).add(name)
        return visit

    for block in func.body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, reader(binding.var.name))
    relax.analysis.post_order_visit(func.body.body, reader(""))
    return users


def _channel_constant(value: np.ndarray | None, channels: int, out_rank: int) -> np.ndarray | None:
    """A constant that varies along the last axis only (or a scalar), broadcast to that axis, else None."""
    if value is None or value.dtype != np.float32 or value.ndim > out_rank:
        return None
    if value.ndim == 0:
        return np.full((channels,), value, np.float32)
    if any(d != 1 for d in value.shape[:-1]) or value.shape[-1] not in (1, channels):
        return None
    return np.broadcast_to(value, value.shape[:-1] + (channels,)).astype(np.float32)


def _const_operand(call: relax.Call, channels: int, out_rank: int) -> tuple[int, relax.Var, np.ndarray] | None:
    """(index of the constant, the other operand, its per-channel value) of a binary op with one constant."""
    if len(call.args) != 2:
        return None
    for index in (1, 0):
        other = call.args[1 - index]
        value = _channel_constant(constant_value(call.args[index]), channels, out_rank)
        if value is not None and isinstance(other, relax.Var):
            return index, other, value
    return None


def _is_op(value, *names: str) -> bool:
    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and (not names or value.op.name in names)


def _channelwise_input(value: relax.Expr) -> relax.Var | None:
    """The input of `value` whose channel j (last axis) alone makes channel j of the output, linearly and
    positively homogeneously, so that dividing that input's channel j by s_j divides the output's by s_j:
    relu(x) (s > 0), mean/sum over axes other than the last, and matmul(A, V) with a non-constant V (attention's
    probs @ V)."""
    if _is_op(value, "relax.nn.relu"):
        inner = value.args[0]
    elif _is_op(value, "relax.mean", "relax.sum") and value.attrs.axis is not None:
        rank = len(value.args[0].ty.shape.values)
        inner = value.args[0] if rank - 1 not in [int(a) % rank for a in value.attrs.axis] else None
    elif _is_op(value, "relax.matmul") and constant_value(value.args[1]) is None:
        # Not matmul(V, V): scaling V's channels would scale the contraction too. (A cannot depend on V otherwise:
        # the caller requires V to have no other reader.)
        same = value.args[0].same_as(value.args[1])
        inner = value.args[1] if len(value.args[1].ty.shape.values) >= 2 and not same else None
    else:
        inner = None
    return inner if isinstance(inner, relax.Var) else None


def _plan_absorption(plan: _Plan, bindings: dict[str, relax.Expr], users: dict[str, set[str]]) -> None:
    """Fill `plan.absorb`/`plan.columns` when X's producer can divide by s itself (looking through relu, a mean
    over tokens, attention's probs @ V); leave the explicit multiply otherwise."""
    act = plan.activation
    if act not in bindings or users.get(act, set()) - set(plan.matmuls):
        return  # a parameter, or X is also read elsewhere and must keep its values
    node, value = act, bindings[act]
    for _ in range(_MAX_STEPS):
        inner = _channelwise_input(value)
        if inner is None or inner.name not in bindings or users.get(inner.name) != {node}:
            break
        plan.through.append(value.op.name.removeprefix("relax.").removeprefix("nn."))
        node, value = inner.name, bindings[inner.name]
    if not _is_op(value):
        return
    s = plan.scale
    channels, out_rank = s.shape[0], len(value.ty.shape.values)
    op = value.op.name
    if op == "relax.nn.layer_norm":
        gamma, beta = constant_value(value.args[1]), constant_value(value.args[2])
        axes = [int(a) % out_rank for a in value.attrs.axes]
        if (axes == [out_rank - 1] and bool(value.attrs.scale) and bool(value.attrs.center)
                and gamma is not None and beta is not None and gamma.shape == beta.shape == (channels,)
                and gamma.dtype == beta.dtype == np.float32):
            plan.absorb = {node: {1: (gamma / s).astype(np.float32), 2: (beta / s).astype(np.float32)}}
            plan.absorbed_into = "layer_norm"
        return
    if op == "relax.add":  # affine: multiply(z, g) + b; linear: matmul(z, W) + b
        shift = _const_operand(value, channels, out_rank)
        if shift is None:
            return
        index, inner, b = shift
        inner_value = bindings.get(inner.name)
        if users.get(inner.name) != {node}:
            return
        if _is_op(inner_value, "relax.multiply"):
            scale = _const_operand(inner_value, channels, out_rank)
            if scale is not None:
                plan.absorb = {inner.name: {scale[0]: scale[2] / s}, node: {index: b / s}}
                plan.absorbed_into = "affine"
        elif _is_linear(inner_value, channels):
            plan.absorb = {node: {index: b / s}}
            plan.columns = {inner.name: s}
            plan.absorbed_into = "linear"
        return
    if op == "relax.multiply":
        scale = _const_operand(value, channels, out_rank)
        if scale is not None:
            plan.absorb = {node: {scale[0]: scale[2] / s}}
            plan.absorbed_into = "affine"
        return
    if _is_linear(value, channels):
        plan.columns = {node: s}
        plan.absorbed_into = "linear"


def _is_linear(value, channels: int) -> bool:
    """A matmul with a constant [K', channels] float32 weight, whose output channels can be divided by s in W."""
    return (_is_op(value, "relax.matmul") and RULES["relax.matmul"].applies(value)
            and constant_value(value.args[1]).shape[1] == channels)


def _plans(mod: tvm.IRModule, scales: Mapping[str, np.ndarray]) -> list[_Plan]:
    func = mod["main"]
    bindings = {b.var.name: b.value for block in func.body.blocks for b in block.bindings}
    users = _consumers(func)
    plans: dict[str, _Plan] = {}
    for layer in find_quantizable_layers(mod, _MATMUL_RULES):
        act = layer.activations[0]
        if act not in scales:
            continue
        scale = np.asarray(scales[act], np.float32)
        if scale.shape != (constant_value(bindings[layer.binding].args[1]).shape[0],) or not np.all(scale > 0):
            raise ValueError(f"smoothing scale of {act} must be positive with one value per input channel")
        plans.setdefault(act, _Plan(act, scale, [])).matmuls.append(layer.binding)
    for plan in plans.values():
        _plan_absorption(plan, bindings, users)
    return list(plans.values())


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.SmoothQuant")
class SmoothQuant:
    """Divide each keyed activation by its s (in its producer, or by an explicit multiply) and multiply the rows
    of the weights of the matmuls that read it by s."""

    def __init__(self, scales: Mapping[str, np.ndarray]):
        self.scales = {name: np.asarray(s, np.float32) for name, s in scales.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        plans = _plans(mod, self.scales) if self.scales else []
        if not plans:
            return mod
        rewriter = _Smoother(mod, plans)
        rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
        return rewriter.builder_.get()


@mutator
class _Smoother(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plans: list[_Plan]):
        super().__init__(mod)
        self.absorb = {binding: args for plan in plans for binding, args in plan.absorb.items()}
        self.matmuls = {binding: plan for plan in plans for binding in plan.matmuls}
        self.columns = {binding: s for plan in plans for binding, s in plan.columns.items()}
        self.smoothed: dict[str, relax.Var] = {}  # explicit X_smoothed of the current block, by activation

    def visit_dataflow_block_(self, block):
        self.smoothed = {}  # a dataflow var is not visible outside its block
        return super().visit_dataflow_block_(block)

    def visit_binding_block_(self, block):
        self.smoothed = {}
        return super().visit_binding_block_(block)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name = binding.var.name
        if name in self.absorb:
            call = binding.value
            args = [self.visit_expr(a) for a in call.args]
            for index, value in self.absorb[name].items():
                args[index] = relax.const(value, "float32")
            rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
            return None
        if name not in self.matmuls and name not in self.columns:
            return super().visit_var_binding_(binding)
        # A matmul can be both: a smoothed consumer (rows of W times its input's s) and the absorber of the next
        # activation's 1/s (columns of W divided by that s), as the V projection before probs @ V.
        call = binding.value
        x = self.visit_expr(call.args[0])
        weight = constant_value(call.args[1])
        plan = self.matmuls.get(name)
        if plan is not None:
            if not plan.absorbed:
                x = self._explicitly_smoothed(plan, x)
            weight = (weight * plan.scale[:, None]).astype(np.float32)
        if name in self.columns:
            weight = (weight / self.columns[name][None, :]).astype(np.float32)
        rebind(self, binding.var, relax.Call(call.op, [x, relax.const(weight, "float32")], call.attrs))
        return None

    def _explicitly_smoothed(self, plan: _Plan, x: relax.Expr) -> relax.Var:
        if plan.activation not in self.smoothed:
            inverse = relax.const((1.0 / plan.scale.astype(np.float64)).astype(np.float32), "float32")
            self.smoothed[plan.activation] = self.builder_.emit(
                relax.op.multiply(x, inverse), name_hint=f"{plan.activation}_smoothed"
            )
        return self.smoothed[plan.activation]


def smooth_quant(
    mod: tvm.IRModule,
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    alpha: float,
    exclude: Iterable[str] = (),
    target: tvm.target.Target | None = None,
) -> tuple[tvm.IRModule, dict]:
    """Measure, compute s and smooth every matmul of `mod` (prepared for quantization here) but the excluded.

    Returns the smoothed module and a JSON record: alpha, the number of smoothed matmuls, and per activation the
    layers sharing its s, what absorbed 1/s, and the ratio of its largest to its median channel max|X| before
    and after (the outlier spread that per-tensor int8 pays for)."""
    from .quantize import prepare_for_quantization  # local: quantize.py may import this module one day

    mod = prepare_for_quantization(mod)
    # An excluded layer that shares its activation with a smoothed one is smoothed too (X / s is computed once),
    # which float32 does not mind; its weights count in max|W_j| like the others'.
    activations = [layer.activations[0] for layer in smoothed_layers(mod, exclude)]
    absmax = measure_channel_absmax(mod, activations, calibration_data, target)
    scales = smoothing_scales(mod, absmax, alpha)
    plans = {plan.activation: plan for plan in _plans(mod, scales)}
    smoothed = SmoothQuant(scales)(mod)
    names = {layer.binding: layer.name for layer in smoothed_layers(mod)}
    groups = []
    for act, plan in plans.items():
        after = absmax[act] / plan.scale
        groups.append({
            "activation": act,
            "layers": [names[b] for b in plan.matmuls],
            "absorbed_into": plan.absorbed_into,
            "through": plan.through,
            "channels": int(plan.scale.size),
            "outlier_ratio_before": _spread(absmax[act]),
            "outlier_ratio_after": _spread(after),
        })
    record = {"alpha": float(alpha), "smoothed_layers": sum(len(p.matmuls) for p in plans.values()),
              "activations": groups}
    log.info("smoothquant: alpha %g, %d matmuls over %d activations (%d absorbed by their producer)",
             alpha, record["smoothed_layers"], len(groups), sum(1 for p in plans.values() if p.absorbed))
    return smoothed, record


def _spread(channel_max: np.ndarray) -> float:
    """max / median of the per-channel max|X| (1 = balanced channels)."""
    median = float(np.median(channel_max))
    return round(float(np.max(channel_max)) / median, 2) if median > 0 else 0.0
