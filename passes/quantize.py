"""quantize: the one entry point of the quantization passes.

    new_mod, record = quantize(mod, QuantizeConfig(mode="int8", calibration_method="entropy"), samples)

`record` is JSON-serializable, for the manifest and the report: the config, and per layer its activation
QParams, weight scheme and scale range, and whether it runs in integer arithmetic; excluded layers are listed.

The int8 pipeline, in order (each step is a pass in its own file):
1. prepare: DecomposeOpsForInference (BN -> elementwise) + FoldConstant, so that weights (also transposed
   matmul weights) are plain constants, which the rules require; UniqueBindingNames, so names are keys.
2. equalize (config.equalize_channels): convs whose input channels have very different ranges (depthwise nets
   with hard-swish) read X * (1/s) with weights W * s, so that one per-tensor scale fits every channel
   (equalize_conv_inputs.py). Layers that read a softmax (a DFL/GFL box integral) stay float
   (`probability_readers`).
   calibrate (float module, instrumented copy run on the samples) -> {activation binding -> QParams}.
   NOTE: before any rewrite, so that binding names are those of `find_quantizable_layers` and `exclude`.
3. bias correction (config.bias_correction): measure each layer's mean output error from int8 weights on the
   calibration data and add it back to its bias (bias_correction.py).
   QuantizeWeights -> InsertQDQ: a fake-quantized float module (valid on its own; the accuracy reference).
4. FoldQDQToInt8: int8 x int8 -> int32 conv2d/matmul with int32 bias and a float epilogue.
5. HoistQuantize: next layer's quantize moves up through relu/clip/max_pool2d/reshape into that epilogue.
6. FoldRequantizeScale: that quantize's division by its scale folds into the epilogue's multiply.
FuseOps (in the build pipeline) then makes each conv/matmul one kernel: int32 accumulation, int32 bias,
rescale, the float elementwise ops that follow (decomposed BN) and the next layer's quantize.

dynamic-int8 is step 1 and QuantizeDynamic; fp16/bf16 are step 1 and MixedPrecision.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping

import numpy as np
import tvm
from tvm import relax

from ..errors import TvmcompressError
from .bias_correction import CorrectBias, measure_bias_corrections
from .calibrate import calibrate
from .equalize_conv_inputs import EqualizeConvInputs, equalization_scales, measure_conv_input_ranges
from .fold_constants_numpy import fold_constants
from .fold_qdq_to_int8 import FoldQDQToInt8
from .fold_requantize_scale import FoldRequantizeScale
from .hoist_quantize import HoistQuantize
from .insert_qdq import InsertQDQ
from .mixed_precision import MixedPrecision
from .prepare_dequantized_weights import PrepareDequantizedWeights
from .quant_rules import RULES, Layer, find_quantizable_layers
from .quantize_config import IMPLEMENTED_MODES, QParams, QuantizeConfig
from .quantize_dynamic import QuantizeDynamic
from .quantize_weight_only import QuantizeWeightOnly
from .quantize_weight_only import supported as weight_only_supported
from .quantize_weights import QuantizeWeights, quantize_per_channel
from .unique_binding_names import UniqueBindingNames

log = logging.getLogger(__name__)

__all__ = [
    "quantize", "prepare_for_quantization", "fold_prequantized", "is_prequantized", "conv_matmul_dtypes",
    "RECORD_VERSION", "equalize_conv_inputs", "probability_readers",
]

RECORD_VERSION = 1


def prepare_for_quantization(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            fold_constants(),
            # NOTE: last: tables, exclusions and records are keyed by binding name, which must be unique.
            UniqueBindingNames(),
        ]
    )(mod)


def quantize(
    mod: tvm.IRModule,
    config: QuantizeConfig,
    calibration_data: Iterable[Mapping[str, np.ndarray]] | None = None,
    target: tvm.target.Target | None = None,
) -> tuple[tvm.IRModule, dict]:
    """Quantize `mod` (float32, weights bound as constants) as `config` says.

    `calibration_data` (static int8 only; dynamic-int8, fp16 and bf16 ignore it): items {input name: array},
    one call of `main` each. `target`: where calibration runs (default: this machine's CPU).
    """
    if config.mode not in IMPLEMENTED_MODES:
        raise TvmcompressError(
            f"quantization mode {config.mode!r} is not implemented yet: use one of {', '.join(IMPLEMENTED_MODES)}"
        )
    mod = prepare_for_quantization(mod)
    record: dict = {"version": RECORD_VERSION, "config": config.to_json()}
    if config.mode == "dynamic-int8":
        layers = find_quantizable_layers(mod, RULES)
        excluded = _resolve_exclude(layers, config.exclude)
        quantized = QuantizeDynamic(excluded, RULES)(mod)
        record["activations"] = "per tensor, symmetric int8, scale computed at run time"
        record["layers"] = [
            {"name": l.name, "binding": l.binding, "op": l.op, "excluded": l.binding in excluded} for l in layers
        ]
        record["excluded"] = sorted(l.name for l in layers if l.binding in excluded)
        record["integer_ops"] = _count_integer_ops(quantized)
        return quantized, record
    if config.mode in ("int8-weight", "int4-weight", "ternary-weight", "binary-weight"):
        return _quantize_weight_only(mod, config, record)
    if config.mode in ("fp16", "bf16"):
        dtype = "float16" if config.mode == "fp16" else "bfloat16"
        record["compute_dtype"] = dtype
        record["accumulate_dtype"] = "float32"
        return MixedPrecision(dtype)(mod), record
    return _quantize_int8(mod, config, calibration_data, target, record)


def _quantize_int8(mod, config, calibration_data, target, record):
    if calibration_data is None:
        raise TvmcompressError("int8 quantization needs calibration data: pass samples of the model's inputs")
    layers = find_quantizable_layers(mod, RULES)
    excluded = _resolve_exclude(layers, config.exclude)
    kept_float = [layer for layer in probability_readers(mod, layers) if layer.binding not in excluded]
    if kept_float:
        excluded = excluded | {layer.binding for layer in kept_float}
        config = dataclasses.replace(config, exclude=config.exclude + tuple(l.binding for l in kept_float))
    calibration_data = list(calibration_data)  # read up to three times: equalization, calibration, bias correction
    # NOTE: on the float module, before calibration, which then measures the equalized ranges.
    mod, equalized = equalize_conv_inputs(mod, config, calibration_data, excluded, target)
    layers = find_quantizable_layers(mod, RULES)  # same layers and bindings, reading the equalized inputs
    table = calibrate(mod, calibration_data, config, RULES, target)
    corrections = {}
    if config.bias_correction:
        quantized_layers = [layer.binding for layer in layers if layer.binding not in excluded]
        corrections = measure_bias_corrections(
            mod, calibration_data, quantized_layers, RULES, target, config.weight_bits
        )
    quantized = tvm.transform.Sequential(
        [
            # NOTE: on the float module, before QuantizeWeights: the correction lands in the layer's bias add (or
            # a new one), which FoldQDQToInt8 then folds into the int32 bias.
            CorrectBias(corrections),
            QuantizeWeights(excluded, RULES, config.weight_bits),
            InsertQDQ(table, excluded, RULES),
            FoldQDQToInt8(),
            HoistQuantize(),
            FoldRequantizeScale(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(),
        ]
    )(mod)
    integer_ops = _count_integer_ops(quantized)
    record["layers"] = [
        _layer_record(mod, layer, table, layer.binding in excluded, config.weight_bits) for layer in layers
    ]
    record["excluded"] = sorted(layer.name for layer in layers if layer.binding in excluded)
    record["integer_ops"] = integer_ops
    if kept_float:
        record["kept_float"] = {layer.name: "reads a softmax: a distribution's expectation (DFL box integral)"
                                for layer in kept_float}
    if equalized:  # per equalized activation, the spread of its channels' max|X| that the rewrite removed
        record["equalized_inputs"] = {
            name: round(float(s.max() / s[s > 0].min()), 3) for name, s in sorted(equalized.items())
        }
    if config.bias_correction:
        names = {layer.binding: layer.name for layer in layers}
        record["bias_correction"] = {  # per layer, the largest per-channel correction (output units)
            names[binding]: round(float(np.max(np.abs(value))), 6) for binding, value in corrections.items()
        }
    log.info(
        "int8: %d of %d layers quantized (%d integer conv/matmul), %d excluded",
        len(layers) - len(record["excluded"]), len(layers), integer_ops, len(record["excluded"]),
    )
    return quantized, record


_PROBABILITIES = ("relax.nn.softmax",)
_SAME_VALUES = ("relax.permute_dims", "relax.reshape")  # move values, change none: a softmax output stays one


def probability_readers(mod: tvm.IRModule, layers: list[Layer]) -> list[Layer]:
    """The layers whose activation is a softmax output (looking through transposes and reshapes): GFL/DFL box
    heads' integral sum_k k * p_k, a conv or matmul with weights [0, 1, ..., R] that turns bin probabilities into
    a distance, which the decode then multiplies by the stride. int8 weights cannot hold [0..R] exactly (7-bit
    weights on AVX2: scale R/63, so 1 of [0..15] becomes 0.952, errors up to 0.095 bins, 2 % rms of the
    distance: a 34 dB ceiling on box sizes whatever the backbone does), and the layer is one output channel
    per side: in float it costs nothing. Kept float by `quantize` and listed in the record's `kept_float`."""
    values = {b.var.name: b.value for block in mod["main"].body.blocks for b in block.bindings}

    def is_probability(name: str) -> bool:
        value = values.get(name)
        while isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _SAME_VALUES:
            source = value.args[0]
            value = values.get(source.name) if isinstance(source, relax.Var) else None
        return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _PROBABILITIES

    return [layer for layer in layers if all(is_probability(name) for name in layer.activations)]


def equalize_conv_inputs(
    mod: tvm.IRModule,
    config: QuantizeConfig,
    calibration_data: list,
    excluded: Iterable[str] = (),
    target: tvm.target.Target | None = None,
) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Step 2's equalization of the prepared module (when `config.equalize_channels`): the module and the
    scales {activation -> s}, empty when no conv input is spread."""
    if not config.equalize_channels:
        return mod, {}
    absmax = measure_conv_input_ranges(mod, calibration_data, excluded, target)
    scales = equalization_scales(mod, absmax, excluded)
    return EqualizeConvInputs(scales, excluded)(mod), scales


def _quantize_weight_only(mod, config, record):
    bits = {"int8-weight": 8, "int4-weight": 4, "ternary-weight": 2, "binary-weight": 1}[config.mode]
    if bits <= 2:
        # NOTE: per-channel scales and shifts (decomposed BatchNorm) folded into the weights and one bias first:
        # at 1-2 bits per weight, five float32 constants per channel would outweigh the weights. Exact for the
        # grid: a per-output-channel factor only rescales each channel's alpha.
        from .fold_channel_affine import FoldChannelAffine

        mod = FoldChannelAffine()(mod)
    layers = find_quantizable_layers(mod, RULES)
    excluded = _resolve_exclude(layers, config.exclude)
    calls = {b.var.name: b.value for block in mod["main"].body.blocks for b in block.bindings}
    quantized = QuantizeWeightOnly(bits, excluded, RULES)(mod)
    record["weights"] = {2: "ternary {-a, 0, +a} (TWN), 2-bit codes", 1: "binary {-a, +a}, 1-bit codes"}.get(
        bits, f"int{bits}, symmetric") + " per output channel, dequantized inside the conv/matmul kernel"
    record["layers"] = [
        {"name": l.name, "binding": l.binding, "op": l.op, "excluded": l.binding in excluded,
         "weight_only": l.binding not in excluded and weight_only_supported(calls[l.binding])}
        for l in layers
    ]
    record["excluded"] = sorted(l.name for l in layers if l.binding in excluded)
    record["weight_only_ops"] = sum(1 for layer in record["layers"] if layer["weight_only"])
    log.info("%s: %d of %d layers", config.mode, record["weight_only_ops"], len(layers))
    return quantized, record


def is_prequantized(mod: tvm.IRModule) -> bool:
    """Whether `main` already quantizes or dequantizes (an imported QDQ / QOperator model)."""
    found = False

    def visit(expr):
        nonlocal found
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            found = found or expr.op.name in ("relax.quantize", "relax.dequantize")

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def fold_prequantized(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict]:
    """Turn the quantize/dequantize of an imported pre-quantized model into integer compute, keeping its
    quantization parameters (no calibration, no requantization of weights): the int8 pipeline's steps 4-5 on
    the model's own Q/DQ, after PrepareDequantizedWeights has put its int8 weights where FoldQDQToInt8 looks.
    The result computes what the model specifies up to the rounding of float32 rescaling (one step at ties).
    Returns the module and a record for the manifest (integer conv/matmul count)."""
    folded = tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            PrepareDequantizedWeights(),
            FoldQDQToInt8(),
            HoistQuantize(),
            FoldRequantizeScale(),
            # NOTE: after the folding, so that only what FoldQDQToInt8 left in float (batch-norm parameters,
            # weights it cannot fold) becomes float constants.
            fold_constants(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(),
        ]
    )(mod)
    kernels = conv_matmul_dtypes(folded)
    integer = sum(1 for _, inputs, out in kernels if out == "int32" and all(d in ("int8", "uint8") for d in inputs))
    record = {"version": RECORD_VERSION, "source": "pre-quantized model", "integer_ops": integer,
              "float_ops": len(kernels) - integer}
    log.info("pre-quantized model: %d of %d conv/matmul in integer arithmetic", integer, len(kernels))
    return folded, record


def conv_matmul_dtypes(mod: tvm.IRModule) -> list[tuple[str, tuple[str, ...], str]]:
    """(op, input dtypes, output dtype) of each conv2d/matmul of `main`, in program order: what says whether a
    layer computes in integers (8-bit inputs, int32 accumulation) or in float."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in RULES:
            inputs = tuple(str(arg.ty.dtype) for arg in expr.args[:2])
            found.append((expr.op.name, inputs, str(expr.ty.dtype)))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _resolve_exclude(layers: list[Layer], names: tuple[str, ...]) -> frozenset[str]:
    """Binding names of the excluded layers; an unknown name is a user error naming the valid ones."""
    by_name = {layer.name: layer.binding for layer in layers} | {layer.binding: layer.binding for layer in layers}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        valid = ", ".join(f"{layer.name} ({layer.binding})" for layer in layers) or "none"
        raise TvmcompressError(f"--exclude names unknown layer(s) {', '.join(unknown)}: quantizable layers are {valid}")
    return frozenset(by_name[name] for name in names)


def _layer_record(
    mod: tvm.IRModule, layer: Layer, table: dict[str, QParams], excluded: bool, bits: int = 8
) -> dict:
    entry = {"name": layer.name, "binding": layer.binding, "op": layer.op, "excluded": excluded}
    if excluded:
        return entry
    entry["activations"] = {name: table[name].to_json() for name in layer.activations if name in table}
    call = _binding_value(mod, layer.binding)
    rule = RULES[layer.op]
    _, scale = quantize_per_channel(call.args[rule.weight].value.numpy(), rule.weight_channel_axis(call), bits)
    entry["weight"] = {
        "dtype": "int8",
        "bits": bits,
        "scheme": "symmetric per output channel",
        "channels": int(scale.size),
        "scale_min": float(scale.min()),
        "scale_max": float(scale.max()),
    }
    return entry


def _binding_value(mod: tvm.IRModule, name: str) -> relax.Call:
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            if binding.var.name == name:
                return binding.value
    raise KeyError(name)


def _count_integer_ops(mod: tvm.IRModule) -> int:
    count = 0

    def visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in RULES:
            if str(expr.attrs.out_dtype) == "int32":
                count += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return count
