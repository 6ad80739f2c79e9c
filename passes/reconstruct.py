"""Reconstruction: re-fit layer weights by least squares so that a pruned model's layer outputs match the
unpruned model's on calibration data (ThiNet / channel pruning by regression; the unpruned model is the teacher).

For each layer to re-fit, in program order (so that every fit sees the inputs that earlier fits produced):
X = the layer's input in the *pruned* model (im2col'ed for conv2d), Y = the layer's output in the *teacher*,
restricted to the channels the layer still produces. Solve min ||[X 1] [W; b] - Y||^2 + lambda ||W||^2
(ridge, lambda = ridge * mean diag(X^T X)). The intercept b absorbs the mean of what the removed inputs
contributed (ReLU outputs are not zero-mean); it is added to the per-channel constant add / subtract that
follows the layer (conv bias, BatchNorm's mean), and left out when there is none. With `masks` (unstructured
pruning) only the surviving weights of each output channel are re-fitted, so sparsity is kept.

`ReplaceLayerWeights` is the pass that installs the result. Pre: as channel_groups (bound constants, unique
binding names, static shapes; conv2d NCHW/OIHW).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .calibrate import ExposeObservationPoints
from .channel_groups import analyze_channels
from .host_run import host_target
from .quant_rules import rebind

log = logging.getLogger(__name__)

__all__ = ["collect_tensors", "ReplaceLayerWeights", "reconstruct_layers", "im2col", "MAX_ROWS"]

# Rows of the least-squares problem kept per layer (a seeded subsample beyond this): bounds memory and time on
# large feature maps while leaving many more equations than unknowns (at most 512 * 9 for a 3x3 conv).
MAX_ROWS = 32768


def collect_tensors(
    mod: tvm.IRModule, names: Sequence[str], data: Iterable[Mapping[str, np.ndarray]],
    target: tvm.target.Target | None = None,
) -> dict[str, np.ndarray]:
    """Run `mod` on every item of `data` and return the named bindings' values, concatenated on axis 0."""
    target = target or host_target()
    vm = relax.VirtualMachine(tvm.compile(_truncate_to(mod, names), target), tvm.cpu())
    params = [p.name for p in mod["main"].params]
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for item in data:
        results = vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(item[p])) for p in params))
        for name, value in zip(names, list(results)):
            values[name].append(value.numpy())
    return {name: np.concatenate(v, axis=0) for name, v in values.items()}


def _truncate_to(mod: tvm.IRModule, names: Sequence[str]) -> tvm.IRModule:
    """`main` returning only the named tensors, everything after them removed: reconstruction observes each
    layer's input in turn, and compiling only the model's prefix keeps that affordable."""
    mod = ExposeObservationPoints(names)(mod)
    func = mod["main"]
    outputs = func.body.body
    fields = relax.BlockBuilder().normalize(relax.Tuple(list(outputs.fields[1:])))
    new_func = relax.Function(func.params, relax.SeqExpr(func.body.blocks, fields), fields.ty, func.is_pure,
                              func.attrs)
    new_mod = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"}, attrs=mod.attrs)
    new_mod["main"] = new_func
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(new_mod))


def im2col(x: np.ndarray, kernel: tuple[int, int], strides, padding, dilation) -> np.ndarray:
    """[N, C, H, W] -> [N * OH * OW, C * KH * KW], columns in OIHW weight order (c, kh, kw)."""
    n, c, h, w = x.shape
    kh, kw = kernel
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def _rows(layer, call: relax.Call, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if layer.op == "conv2d":
        attrs = call.attrs
        kernel = tuple(int(k) for k in layer.weight.shape[2:])
        a = im2col(x, kernel, [int(s) for s in attrs.strides], [int(p) for p in attrs.padding],
                   [int(d) for d in attrs.dilation])
        b = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
    else:
        a, b = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if a.shape[0] > MAX_ROWS:
        pick = np.sort(np.random.default_rng(0).choice(a.shape[0], MAX_ROWS, replace=False))
        a, b = a[pick], b[pick]
    return a.astype(np.float64), b.astype(np.float64)


def _solve(a: np.ndarray, b: np.ndarray, ridge: float, intercept: bool, mask: np.ndarray | None):
    """(W [K, O], bias [O]) minimizing the ridge-regularized squared error; the intercept is not penalized.
    `mask` [K, O]: which weights may be non-zero (unstructured pruning)."""
    if intercept:
        a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    gram, rhs = a.T @ a, a.T @ b
    k = a.shape[1] - int(intercept)
    penalty = ridge * max(float(np.mean(np.diag(gram)[:k])), 1e-12)
    reg = np.full(a.shape[1], penalty)
    if intercept:
        reg[-1] = 0.0
    if mask is None:
        solution = np.linalg.solve(gram + np.diag(reg), rhs)
    else:
        solution = np.zeros_like(rhs)
        for o in range(rhs.shape[1]):
            active = np.concatenate([np.flatnonzero(mask[:, o]), [k]]) if intercept else np.flatnonzero(mask[:, o])
            sub = gram[np.ix_(active, active)] + np.diag(reg[active])
            solution[active, o] = np.linalg.solve(sub, rhs[active, o])
    if intercept:
        return solution[:-1], solution[-1]
    return solution, None


def _uses(func: relax.Function) -> tuple[dict[str, relax.Expr], dict[str, list[str]]]:
    values, uses = {}, {}
    for block in func.body.blocks:
        for binding in block.bindings:
            values[binding.var.name] = binding.value
            if isinstance(binding.value, relax.Call):
                for arg in binding.value.args:
                    if isinstance(arg, relax.Var):
                        uses.setdefault(arg.name, []).append(binding.var.name)
    return values, uses


def _bias_binding(mod: tvm.IRModule, name: str) -> str | None:
    """The add / subtract of a per-channel constant that alone consumes a layer's output (its bias)."""
    analysis = analyze_channels(mod)
    values, uses = _uses(mod["main"])
    if len(uses.get(name, [])) != 1:
        return None
    nxt = uses[name][0]
    call = values[nxt]
    if (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op)
            and call.op.name in ("relax.add", "relax.subtract") and nxt in analysis.consts
            and isinstance(call.args[0], relax.Var) and call.args[0].name == name):
        return nxt
    return None


def reconstruct_layers(
    student: tvm.IRModule,
    teacher: tvm.IRModule,
    layers: Sequence[str],
    data: Sequence[Mapping[str, np.ndarray]],
    teacher_channels: Mapping[str, np.ndarray] | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    ridge: float = 1e-3,
    reselect: bool = False,
) -> tuple[tvm.IRModule, dict[str, dict]]:
    """Re-fit `layers` (bindings of conv2d / matmul in both modules) of `student` to `teacher`.

    `teacher_channels[layer]`: the teacher output channels the student layer still produces (default all).
    `masks[layer]`: keep mask of the student weight (unstructured: zeros stay zero). Returns the new module and,
    per layer, the relative output error before and after the fit on the calibration data.
    `reselect`: choose each masked layer's surviving weights again, as many as its mask keeps, by the
    Optimal-Brain-Damage saliency w^2 * E[x_k^2] of the teacher's (unpruned) weight on the inputs the layer now
    sees, instead of by magnitude alone; only for layers whose weight shape the teacher shares."""
    teacher_out = collect_tensors(teacher, list(layers), data)
    teacher_layers = analyze_channels(teacher).layers if reselect else {}
    record = {}
    for name in layers:
        layer = analyze_channels(student).layers[name]
        if layer.op == "depthwise_conv2d":
            continue  # one 1-channel filter per channel: nothing to re-fit across channels
        call = next(b.value for blk in student["main"].body.blocks for b in blk.bindings if b.var.name == name)
        x = collect_tensors(student, [layer.input_var], data)[layer.input_var]
        y = teacher_out[name]
        if teacher_channels is not None and name in teacher_channels:
            y = np.take(y, teacher_channels[name], axis=1 if layer.op == "conv2d" else -1)
        a, b = _rows(layer, call, x, y)
        weight = layer.weight
        flat = weight.reshape(weight.shape[0], -1).T if layer.op == "conv2d" else weight  # [K, O]
        mask = None
        if masks is not None and name in masks:
            m = masks[name]
            mask = m.reshape(m.shape[0], -1).T if layer.op == "conv2d" else m
            dense = teacher_layers[name].weight if name in teacher_layers else None
            if dense is not None and dense.shape == weight.shape:
                dense = dense.reshape(dense.shape[0], -1).T if layer.op == "conv2d" else dense
                saliency = dense.astype(np.float64) ** 2 * np.einsum("mk,mk->k", a, a)[:, None]
                keep = np.argsort(-saliency.reshape(-1), kind="stable")[: int(mask.sum())]
                mask = np.zeros(mask.size, bool)
                mask[keep] = True
                mask = mask.reshape(flat.shape)
        bias_at = _bias_binding(student, name)
        fitted, bias = _solve(a, b, ridge, bias_at is not None, mask)
        before = float(np.linalg.norm(a @ flat - b) / max(np.linalg.norm(b), 1e-12))
        after = float(np.linalg.norm(a @ fitted + (bias if bias is not None else 0.0) - b)
                      / max(np.linalg.norm(b), 1e-12))
        if after >= before:
            log.info("reconstruct %s: the fit does not help (%.4f -> %.4f); kept as is", name, before, after)
            record[name] = {"relative_error_before": round(before, 6), "relative_error_after": round(before, 6)}
            continue
        new_weight = (fitted.T.reshape(weight.shape) if layer.op == "conv2d" else fitted).astype(weight.dtype)
        student = ReplaceLayerWeights({name: new_weight}, {bias_at: bias} if bias_at else {})(student)
        log.info("reconstruct %s: relative output error %.4f -> %.4f", name, before, after)
        record[name] = {"relative_error_before": round(before, 6), "relative_error_after": round(after, 6)}
    return student, record


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.ReplaceLayerWeights")
class ReplaceLayerWeights:
    """Set the constant weight of layers (`weights`: binding -> array of the same shape), and add `offsets`
    (binding of a per-channel add / subtract -> one value per channel) to the channel constant of that op."""

    def __init__(self, weights: Mapping[str, np.ndarray], offsets: Mapping[str, np.ndarray] | None = None):
        self.weights = dict(weights)
        self.offsets = dict(offsets or {})

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        analysis = analyze_channels(mod)
        rewriter = _WeightSetter(mod, self.weights, self.offsets, analysis)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _WeightSetter(PyExprMutator):
    def __init__(self, mod, weights, offsets, analysis):
        super().__init__(mod)
        self.weights, self.offsets, self.analysis = weights, offsets, analysis

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name, call = binding.var.name, binding.value
        if name in self.weights:
            old = call.args[1].value.numpy()
            if self.weights[name].shape != old.shape:
                raise ValueError(f"ReplaceLayerWeights: {name} weight shape {old.shape}, "
                                 f"got {self.weights[name].shape}")
            args = [self.visit_expr(call.args[0]), relax.const(self.weights[name]), *call.args[2:]]
            rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
        elif name in self.offsets:
            arg_index, position = self.analysis.consts[name][0]
            const = call.args[arg_index].value.numpy()
            shape = [1] * const.ndim
            shape[position] = const.shape[position]
            offset = np.asarray(self.offsets[name], np.float64).reshape(shape)
            sign = 1.0 if call.op.name == "relax.add" else -1.0
            new = (const + sign * offset).astype(const.dtype)
            args = [self.visit_expr(a) for a in call.args]
            args[arg_index] = relax.const(new)
            rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
        else:
            super().visit_var_binding_(binding)
