"""Quantization accuracy tools: per-layer sensitivity (`analyze_layers`) and the accuracy-budget fallback
(`quantize_within_budget`).

Sensitivity of a layer = what quantizing that layer ALONE does:
- `sqnr_db`: SQNR of the layer's output, int8 (weights per channel, calibrated activations) against fp32, on
  the eval data (the calibration data when no eval data is given), everything upstream in fp32;
- `metric`: the model's metric with only that layer quantized.
Both are measured on the fake-quantized float module (QuantizeWeights + InsertQDQ: what int8 computes, up to the
float32 rounding of the integer kernels' rescale), built for this machine with plain `tvm.compile`: a small model
builds in about a second, far quicker than our full pipeline, and the numbers are the same.

The metric is top-1 accuracy (%) when the eval data has `label`, otherwise top-1 agreement (%) with the fp32
model's predictions; `sqnr_db` of the model output against fp32 is reported alongside. A budget is in points of
that metric.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import tvm

from ..errors import TvmcompressError
from .bias_correction import CorrectBias, measure_bias_corrections
from .calibrate import ExposeObservationPoints, calibrate
from .host_run import build_for_host, first_output, run_batches, sqnr_db, sqnr_from_energies, top1
from .insert_qdq import InsertQDQ
from .quant_rules import RULES, Layer, find_quantizable_layers
from .quantize import equalize_conv_inputs, prepare_for_quantization, quantize
from .quantize_config import QuantizeConfig
from .quantize_weights import QuantizeWeights

log = logging.getLogger(__name__)

__all__ = [
    "EvalData", "Reference", "fp32_reference", "evaluate", "measure_quantized", "analyze_layers", "sensitivity_order",
    "quantize_within_budget", "sqnr_db", "format_analysis",
]

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class EvalData:
    """Model calls (one {input name: array} per call) and, optionally, one int label per predicted row."""

    batches: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None = None

    def __post_init__(self):
        if not self.batches:
            raise TvmcompressError("eval data is empty: give at least one sample")


def _call(vm, mod: tvm.IRModule, batch: Batch) -> list[np.ndarray]:
    """Every output of one call (the first tensor of each)."""
    names = [param.name for param in mod["main"].params]
    result = vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(batch[name])) for name in names))
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [first_output(item) for item in result]


@dataclass(frozen=True)
class Reference:
    """The fp32 model's outputs on the eval data, and its metric."""

    outputs: tuple[np.ndarray, ...]
    predictions: np.ndarray
    metric: dict


def _metric(outputs: Sequence[np.ndarray], data: EvalData, reference: Reference | None) -> dict:
    predictions = top1(outputs)
    if data.labels is not None:
        labels = np.asarray(data.labels).reshape(-1)
        if labels.size != predictions.size:
            raise TvmcompressError(
                f"eval data has {labels.size} labels for {predictions.size} predictions: give one label per output row"
            )
        value = {"name": "top1_accuracy", "value": round(100.0 * float(np.mean(predictions == labels)), 3)}
    elif reference is None:
        value = {"name": "top1_agreement", "value": 100.0}
    else:
        agreement = float(np.mean(predictions == reference.predictions))
        value = {"name": "top1_agreement", "value": round(100.0 * agreement, 3)}
    if reference is not None:
        value["sqnr_db"] = sqnr_db(np.concatenate([o.ravel() for o in reference.outputs]),
                                   np.concatenate([np.asarray(o).ravel() for o in outputs]))
    return value


def evaluate(mod: tvm.IRModule, data: EvalData, reference: "Reference | None" = None,
             target: tvm.target.Target | None = None) -> tuple[dict, list[np.ndarray]]:
    """(metric, outputs) of `mod` built for this machine, on every eval batch."""
    outputs = run_batches(mod, data.batches, target)
    return _metric(outputs, data, reference), outputs


def fp32_reference(mod: tvm.IRModule, data: EvalData, target: tvm.target.Target | None = None) -> Reference:
    """The float model's outputs, predictions and metric on `data`: what int8 is compared with."""
    metric, outputs = evaluate(mod, data, None, target)
    return Reference(tuple(outputs), top1(outputs), metric)


def measure_quantized(mod: tvm.IRModule, quantized: tvm.IRModule, data: EvalData,
                      target: tvm.target.Target | None = None) -> dict:
    """fp32 (`mod`) and int8 (`quantized`) metric on `data`, and the SQNR of int8's output against fp32."""
    reference = fp32_reference(prepare_for_quantization(mod), data, target)
    metric, _ = evaluate(quantized, data, reference, target)
    return {"metric": metric["name"], "samples": int(reference.predictions.size),
            "fp32_metric": reference.metric["value"], "int8_metric": metric["value"], "int8_sqnr_db": metric["sqnr_db"]}


def _fake_quantized(prepared: tvm.IRModule, table, corrections: Mapping[str, np.ndarray],
                    excluded: Iterable[str]) -> tvm.IRModule:
    """What `quantize` computes, in float: bias correction of the quantized layers, int8 weights, Q/DQ."""
    excluded = frozenset(excluded)
    corrections = {name: value for name, value in corrections.items() if name not in excluded}
    return tvm.transform.Sequential(
        [CorrectBias(corrections), QuantizeWeights(excluded, RULES), InsertQDQ(table, excluded, RULES)]
    )(prepared)


def analyze_layers(
    mod: tvm.IRModule,
    config: QuantizeConfig,
    calibration: Sequence[Batch],
    data: EvalData | None = None,
    target: tvm.target.Target | None = None,
) -> dict:
    """Per-layer SQNR and single-layer metric (see the module docstring), plus the fp32 and all-layers metric.

    `calibration`: a re-iterable sequence of model calls. `data`: eval data (default: the calibration data).
    """
    calibration = list(calibration)  # read by calibration and by bias correction
    data = data or EvalData(tuple(dict(b) for b in calibration))
    prepared = prepare_for_quantization(mod)
    if not find_quantizable_layers(prepared, RULES):
        raise TvmcompressError("the model has no conv2d/matmul layer that int8 quantizes: nothing to analyze")
    # As `quantize` does (exact in float: the fp32 reference is unchanged up to rounding), without exclusions.
    prepared, _ = equalize_conv_inputs(prepared, config, calibration, (), target)
    layers = find_quantizable_layers(prepared, RULES)
    # NOTE: calibrate without the config's exclusions, so that every layer can be measured quantized.
    table = calibrate(prepared, calibration, replace(config, exclude=()), RULES, target)
    corrections = {}
    if config.bias_correction:
        corrections = measure_bias_corrections(prepared, calibration, [l.binding for l in layers], RULES, target)
    reference = fp32_reference(prepared, data, target)
    fp32_layers = ExposeObservationPoints([layer.binding for layer in layers])(prepared)
    fp32_vm = build_for_host(fp32_layers, target)
    rows = []
    for index, layer in enumerate(layers):
        log.info("analyze: layer %d/%d %s (%s)", index + 1, len(layers), layer.name, layer.binding)
        rows.append(_analyze_layer(prepared, layers, layer, index, table, corrections, data, reference, fp32_layers,
                                   fp32_vm, target))
    all_int8, _ = evaluate(_fake_quantized(prepared, table, corrections, ()), data, reference, target)
    return {
        "metric": reference.metric["name"],
        "eval_samples": int(reference.predictions.size),
        "fp32_metric": reference.metric["value"],
        "int8_metric": all_int8["value"],
        "int8_sqnr_db": all_int8["sqnr_db"],
        "layers": rows,
    }


def _analyze_layer(prepared, layers: list[Layer], layer: Layer, index: int, table, corrections, data: EvalData,
                   reference: Reference, fp32_layers, fp32_vm, target) -> dict:
    others = [other.binding for other in layers if other.binding != layer.binding]
    # NOTE: the layer's output is read at its binding, i.e. before its bias correction: the SQNR is that of the
    # int8 conv/matmul itself (the correction shifts the mean, which SQNR barely sees).
    single = ExposeObservationPoints([layer.binding])(_fake_quantized(prepared, table, corrections, others))
    vm = build_for_host(single, target)
    outputs, signal, noise = [], 0.0, 0.0
    for batch in data.batches:
        model_out, layer_q = _call(vm, single, batch)
        layer_fp32 = _call(fp32_vm, fp32_layers, batch)[1 + index]
        outputs.append(model_out)
        diff = layer_fp32.astype(np.float64) - layer_q.astype(np.float64)
        signal += float(np.sum(layer_fp32.astype(np.float64) ** 2))
        noise += float(np.sum(diff**2))
    metric = _metric(outputs, data, reference)
    return {
        "name": layer.name,
        "binding": layer.binding,
        "op": layer.op,
        "sqnr_db": sqnr_from_energies(signal, noise),
        "metric": metric["value"],
        "metric_drop": round(reference.metric["value"] - metric["value"], 3),
        "output_sqnr_db": metric["sqnr_db"],
    }


def sensitivity_order(analysis: dict) -> list[str]:
    """Layer names, most sensitive first: the larger single-layer metric drop, then the lower output SQNR
    (on a few hundred samples many layers tie on the metric; SQNR still orders them)."""
    rows = sorted(analysis["layers"], key=lambda row: (-row["metric_drop"], row["output_sqnr_db"], row["sqnr_db"]))
    return [row["name"] for row in rows]


def quantize_within_budget(
    mod: tvm.IRModule,
    config: QuantizeConfig,
    calibration: Sequence[Batch],
    data: EvalData,
    budget: float,
    target: tvm.target.Target | None = None,
    analysis: dict | None = None,
) -> tuple[tvm.IRModule, dict]:
    """`quantize`, then while the int8 metric is more than `budget` points below fp32, return the next most
    sensitive layer to float and quantize again. The metric is measured on the real int8 module each time.

    `analysis`: an `analyze_layers` result for the same model, config and data (computed here only when the
    fallback is needed). The record gains `accuracy_budget` {budget, metric, fp32_metric, int8_metric_before,
    final_metric, final_sqnr_db, excluded_layers (in order), within_budget}, and `analysis` when there is one."""
    if budget < 0:
        raise TvmcompressError(f"--accuracy-budget must be >= 0 points, got {budget}")
    calibration = list(calibration)  # quantized again after each fallback step
    reference = fp32_reference(prepare_for_quantization(mod), data, target)
    quantized, record = quantize(mod, config, calibration, target)
    metric, _ = evaluate(quantized, data, reference, target)
    before = metric
    log.info("accuracy budget: fp32 %s %.3f, int8 %.3f (budget %.3g points)",
             reference.metric["name"], reference.metric["value"], metric["value"], budget)
    added: list[str] = []
    if reference.metric["value"] - metric["value"] > budget:
        analysis = analysis or analyze_layers(mod, config, calibration, data, target)
        candidates = [name for name in sensitivity_order(analysis) if name not in _excluded_names(config, analysis)]
        for name in candidates:
            if reference.metric["value"] - metric["value"] <= budget:
                break
            added.append(name)
            config = replace(config, exclude=config.exclude + (name,))
            quantized, record = quantize(mod, config, calibration, target)
            metric, _ = evaluate(quantized, data, reference, target)
            log.info("accuracy budget: %s back to float -> int8 %s %.3f", name, metric["name"], metric["value"])
    if analysis is not None:
        record["analysis"] = analysis
    record["accuracy_budget"] = {
        "budget": budget,
        "metric": reference.metric["name"],
        "fp32_metric": reference.metric["value"],
        "int8_metric_before": before["value"],
        "final_metric": metric["value"],
        "final_sqnr_db": metric.get("sqnr_db"),
        "excluded_layers": added,
        "within_budget": reference.metric["value"] - metric["value"] <= budget,
    }
    if not record["accuracy_budget"]["within_budget"]:
        log.warning("accuracy budget: %.3g points not met with every layer in float", budget)
    return quantized, record


def _excluded_names(config: QuantizeConfig, analysis: dict) -> set[str]:
    excluded = set(config.exclude)
    return {row["name"] for row in analysis["layers"] if row["name"] in excluded or row["binding"] in excluded}


def format_analysis(analysis: dict) -> str:
    """The analysis as a text table, most sensitive layer first."""
    metric = analysis["metric"]
    lines = [
        f"{metric} on {analysis['eval_samples']} samples: fp32 {analysis['fp32_metric']:.2f}, "
        f"int8 (all layers) {analysis['int8_metric']:.2f} (output SQNR {analysis['int8_sqnr_db']:.1f} dB)",
        f"{'layer':<14}{'binding':<12}{'op':<16}{'SQNR dB':>9}{'alone: ' + metric:>26}{'drop':>8}",
    ]
    by_name = {row["name"]: row for row in analysis["layers"]}
    for name in sensitivity_order(analysis):
        row = by_name[name]
        lines.append(f"{row['name']:<14}{row['binding']:<12}{row['op']:<16}{row['sqnr_db']:>9.1f}"
                     f"{row['metric']:>26.2f}{row['metric_drop']:>8.2f}")
    return "\n".join(lines)
