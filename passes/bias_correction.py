"""Bias correction: remove the mean output error that int8 weights cause in each layer.

Rounding a layer's weights to int8 shifts the mean of its output: E[W x] - E[Wq x] per output channel is not
zero, and a downstream ReLU/softmax turns that bias into accuracy loss. `measure_bias_corrections` measures that
mean error on the calibration data (the same float input x for both, as in Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction", empirical variant), and `CorrectBias` adds it back.

`measure_bias_corrections`: pre: `mod` is the prepared float module (weights bound constants, unique binding
names). It runs a probe copy in which every listed layer `y = op(x, W)` also computes `op(x, dequantize(Wq))`
with the weights QuantizeWeights will use, and the per-channel mean of the difference.

`CorrectBias(corrections)`: pre: keys are binding names of conv2d/matmul layers, values [C] float vectors. Post:
a layer followed by `add(layer, constant bias)` has that constant replaced by bias + correction (so that
FoldQDQToInt8 still folds one bias into the int32 constant); any other layer gets `add(layer, correction)`
right after it, which FoldQDQToInt8 folds the same way. Layers not in `corrections` are left as they are.
Runs on the float module, before QuantizeWeights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .calibrate import ExposeObservationPoints
from .host_run import host_target
from .quant_rules import RULES, QuantRule, constant_value, find_quantizable_layers, rebind
from .quantize_weights import quantize_per_channel

log = logging.getLogger(__name__)

__all__ = ["CorrectBias", "measure_bias_corrections", "output_channel_axis"]

_ERROR_SUFFIX = "_bias_error"


def _shape(expr: relax.Expr) -> list[int]:
    return [int(d) for d in expr.ty.shape.values]


def output_channel_axis(call: relax.Call) -> int:
    """The axis of a conv2d/matmul output that indexes output channels (non-negative)."""
    ndim = len(_shape(call))
    if call.op.name == "relax.matmul":
        return ndim - 1
    layout = str(call.attrs.out_layout or call.attrs.data_layout)
    return layout.index("C")


def _broadcast_shape(call: relax.Call) -> list[int]:
    full = _shape(call)
    shape = [1] * len(full)
    axis = output_channel_axis(call)
    shape[axis] = full[axis]
    return shape


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.ProbeWeightError")
class _ProbeWeightError:
    """Add, after each listed layer, `<binding>_bias_error = mean(y - op(x, dequantize(Wq)))` per channel."""

    def __init__(self, bindings: Iterable[str], rules: Mapping[str, QuantRule], bits: int = 8):
        self.bindings = frozenset(bindings)
        self.rules = rules
        self.bits = bits

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Probe(mod, self.bindings, self.rules, self.bits)
        rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
        return rewriter.builder_.get()


@mutator
class _Probe(PyExprMutator):
    def __init__(self, mod, bindings, rules, bits):
        super().__init__(mod)
        self.bindings = bindings
        self.rules = rules
        self.bits = bits

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var.name not in self.bindings:
            return super().visit_var_binding_(binding)
        call = self.visit_expr(binding.value)
        rule = self.rules[call.op.name]
        y = rebind(self, binding.var, call)
        axis = rule.weight_channel_axis(call)
        weight_q, scale = quantize_per_channel(constant_value(call.args[rule.weight]), axis, self.bits)
        dequantized = relax.op.dequantize(
            relax.const(weight_q, "int8"), relax.const(scale, "float32"),
            relax.const(np.zeros(scale.shape, np.int8), "int8"), axis=axis, out_dtype="float32",
        )
        args = list(call.args)
        args[rule.weight] = dequantized
        y_q = self.builder_.emit(relax.Call(call.op, args, call.attrs))
        out_axis = output_channel_axis(binding.value)
        reduce_axes = [a for a in range(len(_shape(binding.value))) if a != out_axis]
        self.builder_.emit(relax.op.mean(relax.op.subtract(y, y_q), axis=reduce_axes),
                           name_hint=binding.var.name + _ERROR_SUFFIX)


def measure_bias_corrections(
    mod: tvm.IRModule,
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    bindings: Iterable[str],
    rules: Mapping[str, QuantRule] = RULES,
    target: tvm.target.Target | None = None,
    bits: int = 8,
) -> dict[str, np.ndarray]:
    """{layer binding -> mean over the calibration data of (op(x, W) - op(x, Wq)) per output channel}, Wq the
    `bits`-bit weights QuantizeWeights makes."""
    layers = [layer.binding for layer in find_quantizable_layers(mod, rules) if layer.binding in set(bindings)]
    if not layers:
        return {}
    probe = ExposeObservationPoints([b + _ERROR_SUFFIX for b in layers])(_ProbeWeightError(layers, rules, bits)(mod))
    target = target or host_target()
    log.info("bias correction: measuring the int8 weight error of %d layers", len(layers))
    vm = relax.VirtualMachine(tvm.compile(probe, target), tvm.cpu())
    names = [param.name for param in mod["main"].params]
    sums = {b: 0.0 for b in layers}
    count = 0
    for item in calibration_data:
        results = list(vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(item[n])) for n in names)))[1:]
        for binding, value in zip(layers, results):
            sums[binding] = sums[binding] + value.numpy().astype(np.float64)
        count += 1
    # Every calibration call has the same shape, so the mean of per-call means is the overall mean.
    return {b: np.asarray(total / max(count, 1)).astype(np.float32) for b, total in sums.items()}


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.CorrectBias")
class CorrectBias:
    def __init__(self, corrections: Mapping[str, np.ndarray]):
        self.corrections = {name: np.asarray(value, np.float32) for name, value in corrections.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.corrections:
            return mod
        bias_adds = set()
        for block in mod["main"].body.blocks:
            for binding in block.bindings:
                if _is_bias_add(binding.value, self.corrections):
                    bias_adds.add(binding.value.args[0].name)
        rewriter = _BiasCorrector(mod, self.corrections, bias_adds)
        rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
        return rewriter.builder_.get()


def _is_bias_add(value, corrections) -> bool:
    return (
        isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.add")
        and isinstance(value.args[0], relax.Var) and value.args[0].name in corrections
        and constant_value(value.args[1]) is not None
    )


@mutator
class _BiasCorrector(PyExprMutator):
    def __init__(self, mod, corrections, bias_adds):
        super().__init__(mod)
        self.corrections = corrections
        self.bias_adds = bias_adds  # layers whose bias add absorbs the correction
        self.shapes: dict[str, list[int]] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name = binding.var.name
        if _is_bias_add(binding.value, self.corrections):
            layer = binding.value.args[0].name
            bias = constant_value(binding.value.args[1])
            correction = self.corrections[layer].reshape(self.shapes[layer])
            new_bias = relax.const((bias + correction).astype(bias.dtype), str(bias.dtype))
            rebind(self, binding.var, relax.op.add(self.visit_expr(binding.value.args[0]), new_bias))
            return None
        if name not in self.corrections:
            return super().visit_var_binding_(binding)
        call = self.visit_expr(binding.value)
        self.shapes[name] = _broadcast_shape(binding.value)
        if name in self.bias_adds:
            rebind(self, binding.var, call)
            return None
        correction = relax.const(self.corrections[name].reshape(self.shapes[name]), "float32")
        y = self.builder_.emit(call, name_hint=name)
        if isinstance(binding.var, relax.DataflowVar) or not self.builder_.current_block_is_dataflow():
            corrected = self.builder_.emit(relax.op.add(y, correction), name_hint=name + "_corrected")
        else:  # the layer is a dataflow block's output: the corrected value must be the output
            corrected = self.builder_.emit_output(relax.op.add(y, correction), name_hint=name + "_corrected")
        self.set_var_remap(binding.var, corrected)
        return None
