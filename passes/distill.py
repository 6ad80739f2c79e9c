"""Knowledge distillation inside the compiler: the float teacher fine-tunes its compressed student on the
calibration (or training) inputs, with TVM's own autodiff (relax.transform.Gradient) and no PyTorch.

    student, record = distill(student, teacher, batches, DistillConfig(), grids, labels)

How: the student's float32 weight constants become parameters (`lift_trainable`); a loss function is appended
and inlined, `relax.transform.Gradient` differentiates it, and the result is compiled for the host and driven
by Adam in numpy. The trained values are "latent" floats; the student always runs on their projection:
pruned weights (exact zeros in the student) stay zero, and quantized layers' weights are rounded onto the grid
the later quantization pass stores (`WeightGrid`), with straight-through gradients (BinaryConnect's rule: the
gradient with respect to the projected weight updates the latent one). Two phases:

1. block-wise reconstruction: the MSE between each conv/matmul output of the student and of the teacher (each
   term divided by the teacher activation's variance), for layers whose output has the teacher's shape (not the
   narrowed layers of channel pruning); then
2. output distillation: KL divergence of temperature-softened logits (T^2-scaled, Hinton et al.) for classifier
   outputs ([N, classes]), MSE otherwise; plus cross-entropy against labels when the data has them.

Pre: `student` and `teacher` are float32 modules with bound weights (prepare_for_quantization form), same
inputs. Post: the student's weights are replaced by the trained projection: the same zeros, every grid layer's
weight exactly on its grid (the quantization pass that follows recovers the same integers), shapes unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from ..errors import TvmcompressError
from .distill_config import DistillConfig
from .distill_gradients import missing_gradients, register_gradients
from .quantize_weights import quantize_per_channel
from .ternary_weights import binarize, ternarize

log = logging.getLogger(__name__)

__all__ = ["WeightGrid", "distill", "lift_trainable", "build_training_module", "quantization_grids"]

_CONST = tvm.ir.expr.GenericConst  # 0.27's relax constant
_CONV = "relax.nn.conv2d"
_MATMUL = "relax.matmul"
# Progress lines at most this often: a line per step would flood the log of a many-thousand-step run.
_PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class WeightGrid:
    """Where a layer's weight must lie: `kind` "int" (symmetric per channel, `bits`), "ternary" or "binary",
    per output channel along `axis`."""

    kind: str
    axis: int
    bits: int = 8

    def project(self, weight: np.ndarray) -> np.ndarray:
        if self.kind == "int":
            q, scale = quantize_per_channel(weight, self.axis, self.bits)
            return (q * _along(scale, weight.ndim, self.axis)).astype(np.float32)
        codes, alpha = ternarize(weight, self.axis) if self.kind == "ternary" else binarize(weight, self.axis)
        return (codes * _along(alpha, weight.ndim, self.axis)).astype(np.float32)


def _along(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return values.reshape(shape)


def _layers(func: relax.Function) -> dict[str, relax.Call]:
    """{binding: call} of conv2d / matmul with a constant float32 weight."""
    found = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name in (_CONV, _MATMUL)
                    and isinstance(call.args[1], _CONST) and call.args[1].ty.dtype == "float32"):
                found[binding.var.name] = call
    return found


def quantization_grids(mod: tvm.IRModule, mode: str, exclude: Sequence[str] = (), weight_bits: int = 8
                       ) -> dict[str, WeightGrid]:
    """{layer binding: grid} of the layers that `--quantize mode` will store on a weight grid (the ones its pass
    rewrites; excluded layers stay float). Float-weight modes (fp16, bf16) have none."""
    from .quant_rules import RULES, find_quantizable_layers
    from .quantize_weight_only import supported

    if mode in ("fp16", "bf16"):
        return {}
    layers = [l for l in find_quantizable_layers(mod, RULES) if l.name not in exclude and l.binding not in exclude]
    calls = _layers(mod["main"])
    grids = {}
    for layer in layers:
        call = calls.get(layer.binding)
        if call is None:
            continue
        axis = 0 if call.op.name == _CONV else 1
        if mode in ("int8", "dynamic-int8"):
            grids[layer.binding] = WeightGrid("int", axis, weight_bits if mode == "int8" else 8)
        elif supported(call):  # weight-only, ternary and binary rewrite groups=1 NCHW convs and matmuls
            kind = {"int8-weight": ("int", 8), "int4-weight": ("int", 4), "ternary-weight": ("ternary", 2),
                    "binary-weight": ("binary", 1)}[mode]
            grids[layer.binding] = WeightGrid(kind[0], axis, kind[1])
    return grids


class _Lifted:
    """`main` with its float32 constants of rank >= 1 as parameters after the inputs."""

    def __init__(self, func: relax.Function, params: list[relax.Var], values: list[np.ndarray],
                 layer_of: dict[int, str]):
        self.func, self.params, self.values, self.layer_of = func, params, values, layer_of


def lift_trainable(mod: tvm.IRModule) -> _Lifted:
    """Replace every float32 constant of rank >= 1 in `main` by a new parameter (one per distinct constant);
    `layer_of[i]` names the conv/matmul whose weight parameter i is."""
    func = mod["main"]
    layer_weights = {name: call.args[1] for name, call in _layers(func).items()}
    constants: list[Any] = []  # relax constants (GenericConst: untyped for mypy)

    def index_of(const: Any) -> int:
        for i, seen in enumerate(constants):
            if seen.same_as(const):
                return i
        constants.append(const)
        return len(constants) - 1

    def collect(expr):
        if isinstance(expr, _CONST) and expr.ty.dtype == "float32" and len(expr.value.shape) >= 1:
            index_of(expr)

    relax.analysis.post_order_visit(func.body, collect)
    params = [relax.Var(f"distill_w{i}", relax.TensorType([int(d) for d in c.value.shape], "float32"))
              for i, c in enumerate(constants)]
    body = _substitute_constants(func.body, constants, params)
    lifted = relax.Function([*func.params, *params], body, func.ret_ty, func.is_pure)
    layer_of = {index_of(const): name for name, const in layer_weights.items()}
    return _Lifted(lifted, params, [c.value.numpy() for c in constants], layer_of)


def _substitute_constants(body: relax.Expr, constants: list[Any], params: list[relax.Var]):
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Replace(PyExprMutator):
        def visit_generic_const_(self, const: Any) -> relax.Expr:
            for seen, param in zip(constants, params):
                if seen.same_as(const):
                    return param
            return const

    return _Replace().visit_expr(body)


def _flatten(ty) -> int:
    return len(ty.fields) if isinstance(ty, relax.TupleType) else 1


def build_training_module(lifted: _Lifted, observed: Sequence[str], loss_builder, target_types) -> tvm.IRModule:
    """A module with `predict` (the lifted student) and `loss_adjoint` (loss and its gradient with respect to
    the lifted weights). `loss_builder(bb, outputs, targets)` emits the scalar loss from the student's outputs
    (the model outputs, then the `observed` bindings) and the target parameters of `target_types`."""
    from .calibrate import ExposeObservationPoints

    student = lifted.func
    if observed:
        student = ExposeObservationPoints(observed)(tvm.IRModule({"main": student}))["main"]
        student = relax.Function(student.params, student.body, student.ret_ty, student.is_pure)
    private = relax.Function(student.params, student.body, student.ret_ty, student.is_pure)
    bb = relax.BlockBuilder()
    gv_student = bb.add_func(private, "student")
    params = [relax.Var(p.name, p.ty) for p in student.params]
    targets = [relax.Var(f"target{i}", ty) for i, ty in enumerate(target_types)]
    with bb.function("loss", [*params, *targets]):
        with bb.dataflow():
            result = bb.emit(relax.Call(gv_student, params))
            outputs = []
            if isinstance(student.ret_ty, relax.TupleType):
                for i, field in enumerate(student.ret_ty.fields):
                    item = bb.emit(relax.TupleGetItem(result, i))
                    if isinstance(field, relax.TupleType):  # a multi-output model's outputs, then observed
                        outputs += [bb.emit(relax.TupleGetItem(item, j)) for j in range(len(field.fields))]
                    else:
                        outputs.append(item)
            else:
                outputs.append(result)
            loss = bb.emit_output(loss_builder(bb, outputs, targets))
        bb.emit_func_output(loss)
    mod = bb.get()
    register_gradients()
    mod = relax.transform.InlinePrivateFunctions()(mod)
    # Batch/layer norm become mean, variance, sqrt...: ops with gradient rules.
    mod = relax.transform.DecomposeOpsForTraining()(mod)
    mod = relax.transform.ToNonDataflow()(mod)
    mod = relax.transform.ConvertToDataflow(min_size=1)(mod)
    mod = relax.transform.CanonicalizeBindings()(relax.transform.Normalize()(mod))
    missing = missing_gradients(mod["loss"])
    if missing:
        raise TvmcompressError(f"--distill cannot differentiate this model: no gradient for {', '.join(missing)}; "
                               "compile it without --distill")
    n_inputs = len(student.params) - len(lifted.params)
    weights = [mod["loss"].params[n_inputs + i] for i in range(len(lifted.params))]
    mod = relax.transform.Gradient("loss", require_grads=weights)(mod)
    functions = {gv: f for gv, f in mod.functions_items() if gv.name_hint != "loss"}
    functions[relax.GlobalVar("predict")] = lifted.func.with_attr("global_symbol", "predict")
    return tvm.IRModule(functions)


def _host_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def _kl_and_labels(temperature: float, label_weight: float, with_labels: bool):
    """Loss builder: T^2 KL(teacher || student) on softened logits (+ label cross-entropy)."""

    def build(bb: relax.BlockBuilder, outputs, targets):
        logits = outputs[0]
        batch = float(int(logits.ty.shape[0]))
        soft = targets[0]
        scaled = bb.emit(relax.op.divide(logits, relax.const(temperature, "float32")))
        log_p = bb.emit(relax.op.nn.log_softmax(scaled, axis=-1))
        # KL = sum p_t (log p_t - log p_s); the p_t log p_t part is constant, so the cross-entropy has its gradient.
        cross = bb.emit(relax.op.sum(relax.op.multiply(soft, log_p)))
        kd_weight = (1.0 - label_weight) if with_labels else 1.0
        loss = bb.emit(relax.op.multiply(cross, relax.const(-kd_weight * temperature ** 2 / batch, "float32")))
        if with_labels:
            log_q = bb.emit(relax.op.nn.log_softmax(logits, axis=-1))
            ce = bb.emit(relax.op.sum(relax.op.multiply(targets[1], log_q)))
            loss = bb.emit(relax.op.add(loss, relax.op.multiply(ce, relax.const(-label_weight / batch, "float32"))))
        return loss

    return build


def _mse(weights: Sequence[float], first: int = 0):
    """Loss builder: sum_i weights[i] * mean((outputs[first + i] - targets[i])^2)."""

    def build(bb: relax.BlockBuilder, outputs, targets):
        total = None
        for weight, out, target in zip(weights, outputs[first:], targets):
            diff = bb.emit(relax.op.subtract(out, target))
            term = bb.emit(relax.op.multiply(relax.op.mean(relax.op.multiply(diff, diff)),
                                             relax.const(weight, "float32")))
            total = term if total is None else bb.emit(relax.op.add(total, term))
        return total

    return build


def _is_classifier(ty) -> bool:
    return isinstance(ty, relax.TensorType) and ty.ndim == 2 and int(ty.shape[1]) > 1


class _Adam:
    """Adam (Kingma & Ba) on the latent weights, float64 state for reproducible sums."""

    def __init__(self, values: list[np.ndarray], lr: float, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(v, np.float64) for v in values]
        self.v = [np.zeros_like(v, np.float64) for v in values]
        self.t = 0

    def step(self, values: list[np.ndarray], grads: list[np.ndarray], lr_scale: float = 1.0) -> None:
        self.t += 1
        c1, c2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        lr = self.lr * lr_scale
        for value, grad, m, v in zip(values, grads, self.m, self.v):
            m *= self.beta1
            m += (1 - self.beta1) * grad
            v *= self.beta2
            v += (1 - self.beta2) * grad * grad
            value -= (lr * (m / c1) / (np.sqrt(v / c2) + self.eps)).astype(value.dtype)


class _Student:
    """Latent weights, their projection (masks and grids) and the compiled train/predict functions."""

    def __init__(self, lifted: _Lifted, grids: Mapping[str, WeightGrid], tied: Sequence[str] = ()):
        self.lifted = lifted
        self.latent = [v.astype(np.float32).copy() for v in lifted.values]
        # Clustered layers (`tied`): weights that share a value keep sharing one (their mean), so the layer keeps
        # its 2^B values; their grid is left to the quantization pass that follows.
        self.groups = [np.unique(v, return_inverse=True)[1].reshape(-1) if lifted.layer_of.get(i) in tied else None
                       for i, v in enumerate(lifted.values)]
        self.grid = [grids.get(lifted.layer_of.get(i, ""), None) if self.groups[i] is None else None
                     for i in range(len(self.latent))]
        self.on_grid = any(g is not None for g in self.grid)
        # Exact zeros of a layer weight are pruning's (a trained float weight is never exactly 0): keep them.
        self.mask = [(v != 0) if i in lifted.layer_of and not np.all(v != 0) else None
                     for i, v in enumerate(lifted.values)]

    def projected(self) -> list[np.ndarray]:
        out = []
        for value, grid, mask, groups in zip(self.latent, self.grid, self.mask, self.groups):
            if mask is not None:
                value = value * mask
            if groups is not None:
                flat = value.reshape(-1).astype(np.float64)
                means = np.bincount(groups, flat) / np.maximum(np.bincount(groups), 1)
                value = means[groups].reshape(value.shape)
                if mask is not None:
                    value = value * mask
            if grid is not None:
                value = grid.project(value)
                if mask is not None:
                    value = value * mask
            out.append(np.ascontiguousarray(value, np.float32))
        return out

    def masked(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        return [g * m if m is not None else g for g, m in zip(grads, self.mask)]


def _run_phase(name: str, vm, student: _Student, inputs: list[list[np.ndarray]], targets: list[list[np.ndarray]],
               epochs: int, lr: float, rng: np.random.Generator, deadline: float, progress: dict,
               offsets: Sequence[float] | None = None) -> dict:
    """`epochs` of Adam over `inputs` in a seeded order; the loss curve is per epoch, minus `offsets[batch]` (the
    teacher's entropy term, so that the KL curve tends to 0)."""
    adam = _Adam(student.latent, lr)
    adjoint = vm["loss_adjoint"]
    curve, steps, stopped = [], 0, False
    total = epochs * len(inputs)
    start = last = time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for index in rng.permutation(len(inputs)):
            if time.perf_counter() > deadline:
                stopped = True
                break
            args = [*inputs[index], *student.projected(), *targets[index]]
            loss, grads = adjoint(*(tvm.runtime.tensor(a) for a in args))
            grads = student.masked([g.numpy().astype(np.float64) for g in grads])
            # Students on a weight grid: cosine decay to 0 over the phase, so that late steps settle the quantized
            # weights instead of flipping them across grid points (the straight-through estimator's noise).
            # Others keep the rate: measured on the digits CNN, ternary 97.78% -> 98.61% with the decay, but
            # channel:0.75 98.61% -> 97.78% (its float weights still had far to go).
            decay = 0.5 * (1.0 + np.cos(np.pi * steps / max(total, 1))) if student.on_grid else 1.0
            adam.step(student.latent, grads, decay)
            losses.append(float(loss.numpy()) - (offsets[index] if offsets is not None else 0.0))
            steps += 1
            now = time.perf_counter()
            if now - last >= _PROGRESS_SECONDS:
                last = now
                eta = (now - start) / steps * (total - steps)
                log.info("distill %s: step %d/%d (epoch %d/%d) loss %.5f, ETA %.0f s", name, steps, total, epoch + 1,
                         epochs, float(np.mean(losses)), eta)
        if losses:
            curve.append(round(float(np.mean(losses)), 6))
        if stopped:
            log.warning("distill %s: the --distill-minutes budget ran out after %d of %d steps (epoch %d of %d)",
                        name, steps, total, epoch + 1, epochs)
            break
    progress["steps"] += steps
    return {"name": name, "steps": steps, "epochs": epochs, "loss_curve": curve, "stopped_by_budget": stopped,
            "seconds": round(time.perf_counter() - start, 2)}


def _outputs(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]


def _metric(student_out: list[list[np.ndarray]], teacher_out: list[list[np.ndarray]], labels, classifier: bool
            ) -> dict:
    """Teacher agreement (classifiers), label accuracy (with labels), and output SQNR against the teacher."""
    s = np.concatenate([o[0] for o in student_out])
    t = np.concatenate([o[0] for o in teacher_out])
    noise = float(np.sum((s.astype(np.float64) - t) ** 2))
    record = {"sqnr_db": round(float(10 * np.log10(float(np.sum(t.astype(np.float64) ** 2)) / max(noise, 1e-30))), 3)}
    if classifier:
        record["teacher_agreement_percent"] = round(100.0 * float(np.mean(s.argmax(-1) == t.argmax(-1))), 3)
        if labels is not None:
            record["label_accuracy_percent"] = round(100.0 * float(np.mean(s.argmax(-1) == labels[: len(s)])), 3)
    return record


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = x.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def distill(
    student: tvm.IRModule,
    teacher: tvm.IRModule,
    data: Sequence[Mapping[str, np.ndarray]],
    config: DistillConfig,
    grids: Mapping[str, WeightGrid] | None = None,
    labels: np.ndarray | None = None,
    target: tvm.target.Target | None = None,
    tied: Sequence[str] = (),
) -> tuple[tvm.IRModule, dict]:
    """Fine-tune `student` to `teacher` on `data` (one model call per item); `labels`: class per row (optional).
    Returns the student with trained weights (pruning's zeros kept, `grids` layers on their grid, `tied` layers
    (clustered) with no more distinct values than they had) and the record (manifest's `distillation`)."""
    from .reconstruct import collect_tensors

    start = time.perf_counter()
    deadline = start + 60.0 * config.minutes
    target = target or _host_target()
    grids = dict(grids or {})
    rng = np.random.default_rng(config.seed)
    names = [p.name for p in student["main"].params]
    inputs = [[np.ascontiguousarray(item[n]) for n in names] for item in data]
    lifted = lift_trainable(student)
    state = _Student(lifted, grids, tied)
    out_ty = lifted.func.ret_ty
    classifier = _is_classifier(out_ty) and not isinstance(out_ty, relax.TupleType)
    n_outputs = _flatten(out_ty)

    teacher_vm = relax.VirtualMachine(tvm.compile(teacher, target), tvm.cpu())
    teacher_out = [_outputs(teacher_vm["main"](*(tvm.runtime.tensor(a) for a in item))) for item in inputs]
    progress = {"steps": 0}
    phases = []

    # Phase 1: block-wise reconstruction on the layers whose output shape the teacher shares.
    student_layers = _layers(student["main"])
    teacher_shapes = {b.var.name: b.var.ty for blk in teacher["main"].body.blocks for b in blk.bindings}
    observed = [name for name, call in student_layers.items()
                if name in teacher_shapes and str(teacher_shapes[name]) == str(call.ty)]
    record_layers = []
    if config.reconstruct_epochs and observed:
        teacher_acts = collect_tensors(teacher, observed, data, target)
        variances = [max(float(np.var(teacher_acts[n])), 1e-12) for n in observed]
        # collect_tensors concatenates the calls on axis 0: each call's rows are an equal share of it.
        rows = {n: teacher_acts[n].shape[0] // len(inputs) for n in observed}
        act_targets = [[np.ascontiguousarray(teacher_acts[n][i * rows[n]:(i + 1) * rows[n]]) for n in observed]
                       for i in range(len(inputs))]
        types = [student_layers[n].ty for n in observed]
        mod = build_training_module(lifted, observed, _mse([1.0 / (v * len(observed)) for v in variances],
                                                           n_outputs), types)
        vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
        phases.append(_run_phase("reconstruct", vm, state, inputs, act_targets, config.reconstruct_epochs,
                                 config.learning_rate, rng, deadline, progress))
        record_layers = observed

    # Phase 2: output distillation.
    with_labels = classifier and labels is not None and config.label_weight > 0
    if classifier:
        classes = int(out_ty.shape[1])
        rows = int(out_ty.shape[0])
        targets = []
        for i, out in enumerate(teacher_out):
            item = [_softmax(out[0], config.temperature)]
            if with_labels:
                onehot = np.zeros((rows, classes), np.float32)
                onehot[np.arange(rows), labels[i * rows:(i + 1) * rows]] = 1.0
                item.append(onehot)
            targets.append(item)
        types = [out_ty] * (2 if with_labels else 1)
        kd_scale = (1.0 - config.label_weight if with_labels else 1.0) * config.temperature ** 2 / rows
        offsets = [-kd_scale * float(np.sum(t[0] * np.log(np.maximum(t[0], 1e-30)))) for t in targets]
        builder = _kl_and_labels(config.temperature, config.label_weight, with_labels)
    else:
        targets = [list(out) for out in teacher_out]
        types = list(out_ty.fields) if isinstance(out_ty, relax.TupleType) else [out_ty]
        variances = [max(float(np.var(np.concatenate([o[k] for o in teacher_out]))), 1e-12) for k in range(n_outputs)]
        builder = _mse([1.0 / v for v in variances])
        offsets = None
    mod = build_training_module(lifted, [], builder, types)
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    before = _metric([_outputs(vm["predict"](*(tvm.runtime.tensor(a) for a in item),
                                             *(tvm.runtime.tensor(w) for w in _Student(lifted, grids, tied).projected())))
                      for item in inputs], teacher_out, labels, classifier)
    if config.epochs:
        phases.append(_run_phase("output", vm, state, inputs, targets, config.epochs, config.learning_rate, rng,
                                 deadline, progress, offsets))
    final = state.projected()
    weights = [tvm.runtime.tensor(w) for w in final]
    after = _metric([_outputs(vm["predict"](*(tvm.runtime.tensor(a) for a in item), *weights)) for item in inputs],
                    teacher_out, labels, classifier)
    key = "teacher_agreement_percent" if classifier else "sqnr_db"
    kept = after[key] < before[key]
    if kept:  # never hand back a student that matches the teacher worse than the one we were given
        log.warning("distill: the trained model matches the float model worse (%s %.3f -> %.3f); kept the "
                    "compressed model as it was", key, before[key], after[key])
        final = _Student(lifted, grids, tied).projected()
    bound = relax.Function(lifted.func.params, lifted.func.body, lifted.func.ret_ty, lifted.func.is_pure)
    result = _replace_main(student, _bind(bound, lifted.params, final))
    seconds = round(time.perf_counter() - start, 2)
    log.info("distill: %d steps in %.1f s; %s -> %s", progress["steps"], seconds, before, after)
    record = {
        "config": config.to_json(),
        "loss": "kl" if classifier else "mse",
        "labels": bool(with_labels),
        "batches": len(inputs),
        "reconstructed_layers": record_layers,
        "grid_layers": sorted(set(grids) - set(tied)),
        "tied_layers": sorted(tied),
        "masked_layers": sorted(lifted.layer_of[i] for i, m in enumerate(state.mask) if m is not None),
        "phases": phases,
        "steps": progress["steps"],
        "metric_before": before,
        "metric_after": after,
        "kept_untrained": kept,
        "seconds": seconds,
    }
    return result, record


def _bind(func: relax.Function, params, values) -> relax.Function:
    from tvm.relax.expr_functor import PyExprMutator, mutator

    table = {p: relax.const(v, "float32") for p, v in zip(params, values)}

    @mutator
    class _Bind(PyExprMutator):
        def visit_var_(self, var: relax.Var) -> relax.Expr:
            for p, c in table.items():
                if p.same_as(var):
                    return c
            return var

    body = _Bind().visit_expr(func.body)
    kept = [p for p in func.params if not any(p.same_as(q) for q in params)]
    return relax.Function(kept, body, func.ret_ty, func.is_pure)


def _replace_main(mod: tvm.IRModule, func: relax.Function) -> tvm.IRModule:
    functions = {gv: (relax.Function(func.params, func.body, func.ret_ty, func.is_pure, f.attrs)
                      if gv.name_hint == "main" else f) for gv, f in mod.functions_items()}
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def read_training_data(path: str, inputs) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """The .npz at `path` as model calls and its optional 'label' array (class per row)."""
    from ..data import LABEL_KEY, iterate_batches, load_npz, validate_inputs, validate_values

    arrays = load_npz(path)
    validate_inputs(arrays, inputs, source=f"training data file {path}")
    validate_values(arrays, inputs, source=f"training data file {path}")
    labels = arrays.pop(LABEL_KEY, None)
    return list(iterate_batches(arrays, inputs)), labels


def compare_projected(mod: tvm.IRModule, grids: Mapping[str, WeightGrid], data, labels=None,
                      target: tvm.target.Target | None = None) -> tuple[dict, dict]:
    """(metric of the float model, metric of the model with its grid layers projected) against the float model's
    outputs on `data`: what a ternary/binary build without --distill loses, measured before it is built."""
    from .reconstruct import ReplaceLayerWeights

    target = target or _host_target()
    calls = _layers(mod["main"])
    projected = ReplaceLayerWeights({name: grid.project(calls[name].args[1].value.numpy())
                                     for name, grid in grids.items() if name in calls})(mod)
    names = [p.name for p in mod["main"].params]
    outs = []
    for module in (mod, projected):
        vm = relax.VirtualMachine(tvm.compile(module, target), tvm.cpu())
        outs.append([_outputs(vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(item[n])) for n in names)))
                     for item in data])
    classifier = _is_classifier(mod["main"].ret_ty)
    return _metric(outs[0], outs[0], labels, classifier), _metric(outs[1], outs[0], labels, classifier)


def distill_step(student: tvm.IRModule, teacher: tvm.IRModule, options, inputs, read_calibration
                 ) -> tuple[tvm.IRModule, dict | None]:
    """The compile step (api.compile): `--distill` on `--train-data` (default `--calibration`), with the grid
    of `--quantize`. Without --distill, ternary and binary weights are measured on the calibration data and the
    loss is logged as a warning: untrained, they lose most of a model's accuracy."""
    from .quantize import prepare_for_quantization

    quantize = options.quantize
    if options.distill is None:
        if quantize is not None and quantize.mode in ("ternary-weight", "binary-weight") and options.calibration:
            student = prepare_for_quantization(student)
            data = read_calibration()
            grids = quantization_grids(student, quantize.mode, quantize.exclude)
            _, low = compare_projected(student, grids, data)
            agreement = low.get("teacher_agreement_percent")
            detail = f"top-1 agreement with the float model {agreement:.2f}%, " if agreement is not None else ""
            log.warning("--quantize %s without --distill: %soutput SQNR %.1f dB against the float model on the "
                        "calibration data; add --distill to train the weights for their grid",
                        quantize.mode, detail, low["sqnr_db"])
        elif quantize is not None and quantize.mode in ("ternary-weight", "binary-weight"):
            log.warning("--quantize %s without --distill usually destroys accuracy (not measured: no --calibration); "
                        "add --distill with --train-data or --calibration", quantize.mode)
        return student, None
    if options.train_data:
        data, labels = read_training_data(options.train_data, inputs)
    else:
        data, labels = read_calibration(), None
    student = prepare_for_quantization(student)
    teacher = prepare_for_quantization(teacher)
    grids = {}
    if quantize is not None:
        grids = quantization_grids(student, quantize.mode, quantize.exclude, quantize.weight_bits)
    tied = sorted(_layers(student["main"])) if options.cluster_bits is not None else []
    log.info("distill: %d batches, %d layers on a weight grid, %d clustered, budget %.1f min", len(data),
             len(set(grids) - set(tied)), len(tied), options.distill.minutes)
    return distill(student, teacher, data, options.distill, grids, labels, tied=tied)
