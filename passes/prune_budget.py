"""Per-group pruning ratios from measured sensitivity: `--prune-budget POINTS --eval-data E.npz`.

    mod, record = prune_within_budget(mod, PruneConfig.parse("channel:0.75"), calibration, eval_data, 1.0)

Units are the channel groups of a `channel:R` step (named by their first source conv/matmul, as
`choose_channels` names them) and the conv/matmul layers of an `unstructured:S` step. Each unit has levels: the
spec's ratio (for a global unstructured step, the sparsity the global threshold gives that layer), half of it,
and 0 (whole); levels that keep the same number of channels / weights are merged.

1. Sensitivity: each unit pruned ALONE at its level (with reconstruction when there is calibration data), built
   for this machine with plain `tvm.compile` and run on the eval data: the metric drop, the output SQNR against
   the unpruned model, and what it saves (its share of the MACs for channels, of the weights for unstructured).
2. Allocation (`allocate`): every unit starts at the spec's ratio; while the COMBINED model (re-measured each
   step: per-unit losses do not add exactly) loses more than the budget, the unit that costs the most metric per
   saving, alone at its current level, goes down one level (ratio/2, then 0). Small eval sets tie many units at a
   drop of 0; the output noise per saving breaks the tie.

The metric is top-1 accuracy (%) when the eval data has `label`, else top-1 agreement (%) with the unpruned
model, as for `--accuracy-budget`. The chosen ratios become PruneConfig.overrides (so the manifest's config
rebuilds the same model) and the record gains `budget` {budget, metric, metric_dense, metric_uniform,
metric_final, within_budget, groups: [{step, name, spec_ratio, ratio, sensitivity}], trail}.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm

from ..errors import TvmcompressError
from .host_run import run_batches, sqnr_db, top1
from .prune_config import OVERRIDABLE, PruneConfig

log = logging.getLogger(__name__)

__all__ = ["Unit", "Sensitivity", "allocate", "budget_units", "prune_within_budget"]

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Unit:
    """One channel group or layer whose ratio the budget chooses. `levels`: ratios to try, the spec's first,
    strictly decreasing, ending at 0."""

    kind: str
    name: str
    levels: tuple[float, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.name


@dataclass(frozen=True)
class Sensitivity:
    """What pruning one unit alone at one ratio does. `drop`: metric points lost; `sqnr_db`: model output SQNR
    against the unpruned model; `saved`: the fraction of the step's MACs (channel) or weights (unstructured)
    it removes."""

    ratio: float
    drop: float
    sqnr_db: float
    saved: float

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "metric_drop": round(self.drop, 3), "output_sqnr_db": self.sqnr_db,
                "saved": round(self.saved, 4)}


def _priority(s: Sensitivity) -> tuple[float, float]:
    """Metric drop per saving, then output noise power per saving (higher: give this unit back first)."""
    saved = max(s.saved, 1e-12)
    return s.drop / saved, 10.0 ** (-s.sqnr_db / 10.0) / saved


def allocate(
    units: Sequence[Unit],
    measure_alone: Callable[[Unit, float], Sensitivity],
    measure_loss: Callable[[dict[tuple[str, str], float]], float],
    budget: float,
) -> tuple[dict[tuple[str, str], float], float, list[dict]]:
    """Greedy allocation (module docstring, step 2). `measure_alone(unit, ratio)`: the unit's sensitivity;
    `measure_loss(ratios)`: metric points the combined model with {unit key: ratio} loses.

    Returns (ratios, final loss, trail: one {step, name, ratio, loss} per level change)."""
    level = {u.key: 0 for u in units}
    known: dict[tuple[tuple[str, str], int], Sensitivity] = {}

    def sensitivity(unit: Unit) -> Sensitivity:
        at = (unit.key, level[unit.key])
        if at not in known:
            known[at] = measure_alone(unit, unit.levels[level[unit.key]])
        return known[at]

    def ratios() -> dict[tuple[str, str], float]:
        return {u.key: u.levels[level[u.key]] for u in units}

    loss = measure_loss(ratios())
    trail: list[dict] = []
    while loss > budget:
        active = [u for u in units if level[u.key] < len(u.levels) - 1]
        if not active:
            break
        unit = max(active, key=lambda u: _priority(sensitivity(u)))
        level[unit.key] += 1
        loss = measure_loss(ratios())
        trail.append({"step": unit.kind, "name": unit.name, "ratio": unit.levels[level[unit.key]],
                      "loss": round(loss, 3)})
        log.info("prune budget: %s %s -> %g: loss %.3f points (budget %.3g)", unit.kind, unit.name,
                 unit.levels[level[unit.key]], loss, budget)
    return ratios(), loss, trail


def _levels(ratio: float, count: Callable[[float], int]) -> tuple[float, ...]:
    """(ratio, ratio / 2, 0) without the levels that remove nothing or as many as the one before (channel counts
    round to SIMD multiples); () when the spec's ratio removes nothing. `count(r)`: channels / weights r removes."""
    levels: list[float] = []
    for candidate in (ratio, ratio / 2.0):
        removed = count(candidate)
        if removed > 0 and (not levels or removed != count(levels[-1])):
            levels.append(candidate)
    return (*levels, 0.0) if levels else ()


def budget_units(mod: tvm.IRModule, config: PruneConfig, calibration: Sequence[Batch] | None) -> list[Unit]:
    """The units of `config`'s channel and unstructured steps on a module prepared for pruning."""
    from .channel_groups import analyze_channels
    from .prune_channels import kept_count, prunable_group_sizes
    from .prune_unstructured import choose_masks

    units = []
    step = config.step("channel")
    if step is not None:
        for name, size in prunable_group_sizes(mod).items():
            levels = _levels(step.amount, lambda r, size=size: size - kept_count(size, r, config.multiple_of))
            if levels:
                units.append(Unit("channel", name, levels))
    step = config.step("unstructured")
    if step is not None:
        layers = {l.binding: l.weight.size for l in analyze_channels(mod).layers.values()
                  if l.weight.dtype == np.float32}
        sparsity = {name: step.amount for name in layers}
        if step.scope == "global":
            # The sparsity the global threshold gives each layer becomes that layer's spec ratio.
            activations = None
            if config.criterion == "activation":
                from .prune import activation_means

                inputs = sorted({l.input_var for l in analyze_channels(mod).layers.values()})
                activations = activation_means(mod, inputs, calibration)
            masks = choose_masks(mod, step.amount, "global", activations)
            sparsity = {name: 1.0 - float(np.count_nonzero(masks[name])) / masks[name].size for name in masks}
        for name, size in layers.items():
            levels = _levels(sparsity.get(name, 0.0), lambda r, size=size: int(round(r * size)))
            if levels:
                units.append(Unit("unstructured", name, levels))
    return units


class _Evaluator:
    """The metric of pruned modules on the eval data, against the unpruned module's predictions."""

    def __init__(self, dense: tvm.IRModule, data):
        self.batches = list(data.batches)
        self.labels = None if data.labels is None else np.asarray(data.labels).reshape(-1)
        self.reference = run_batches(dense, self.batches)
        self.predictions = top1(self.reference)
        if self.labels is not None and self.labels.size != self.predictions.size:
            raise TvmcompressError(f"eval data has {self.labels.size} labels for {self.predictions.size} "
                                   "predictions: give one label per output row")
        self.metric_name = "top1_accuracy" if self.labels is not None else "top1_agreement"
        self.dense = self.metric(self.reference)[0]

    def metric(self, outputs: Sequence[np.ndarray]) -> tuple[float, float]:
        """(metric %, output SQNR dB against the unpruned model)."""
        predictions = top1(outputs)
        truth = self.labels if self.labels is not None else self.predictions
        return round(100.0 * float(np.mean(predictions == truth)), 3), sqnr_db(self.reference, outputs)

    def __call__(self, mod: tvm.IRModule) -> tuple[float, float]:
        return self.metric(run_batches(mod, self.batches))


def _saved(kind: str, record: dict) -> float:
    layers = record["layers"]
    if kind == "channel":
        return 1.0 - record["macs_after"] / max(record["macs_before"], 1)
    return sum(l["sparsity"] * l["weights"] for l in layers) / max(sum(l["weights"] for l in layers), 1)


def _with_ratios(config: PruneConfig, ratios: Mapping[tuple[str, str], float]) -> PruneConfig:
    return dataclasses.replace(config, overrides=tuple((kind, name, float(r)) for (kind, name), r in ratios.items()))


def prune_within_budget(
    mod: tvm.IRModule,
    config: PruneConfig,
    calibration: Sequence[Batch] | None,
    data,
    budget: float,
) -> tuple[tvm.IRModule, dict[str, Any]]:
    """`prune` with per-unit ratios chosen so that the eval metric loses at most `budget` points (module
    docstring). `data`: eval data with `.batches` (model calls) and `.labels` (None or one int per row)."""
    from .prune import prepare_for_pruning, prune

    if not budget >= 0:
        raise TvmcompressError(f"--prune-budget must be >= 0 points, got {budget}")
    if not any(config.step(kind) is not None for kind in OVERRIDABLE):
        raise TvmcompressError("--prune-budget needs --prune with a channel:R or unstructured:S step, such as "
                               "--prune channel:0.5")
    calibration = list(calibration) if calibration is not None else None
    prepared = prepare_for_pruning(mod)
    evaluate = _Evaluator(prepared, data)
    units = budget_units(prepared, config, calibration)
    log.info("prune budget: %d unit(s); dense %s %.3f; budget %.3g points", len(units), evaluate.metric_name,
             evaluate.dense, budget)
    # Sensitivity is of the budgeted steps alone: layer removal and block / N:M sparsity are not in it.
    alone_config = dataclasses.replace(config, steps=tuple(s for s in config.steps if s.kind in OVERRIDABLE))
    zeros = {u.key: 0.0 for u in units}
    measured: list[tuple[Unit, Sensitivity]] = []
    # (record, metric, SQNR) per config: a spec of channel groups only, with one group left, makes the same config
    # alone and combined. Only the latest module is kept: a large model's copies would fill memory.
    results: dict[PruneConfig, tuple] = {}
    latest: dict[PruneConfig, tvm.IRModule] = {}

    def run(pruning: PruneConfig) -> tuple:
        if pruning not in results:
            pruned, record = prune(prepared, pruning, calibration)
            latest.clear()
            latest[pruning] = pruned
            results[pruning] = (record, *evaluate(pruned))
        return results[pruning]

    def measure_alone(unit: Unit, ratio: float) -> Sensitivity:
        record, metric, sqnr = run(_with_ratios(alone_config, {**zeros, unit.key: ratio}))
        result = Sensitivity(ratio, evaluate.dense - metric, sqnr, _saved(unit.kind, record))
        measured.append((unit, result))
        log.info("prune budget: %s %s alone at %g: %s %.3f (drop %.3f), output SQNR %.1f dB", unit.kind,
                 unit.name, ratio, evaluate.metric_name, metric, result.drop, sqnr)
        return result

    last: dict[str, Any] = {}

    def measure_loss(ratios: dict[tuple[str, str], float]) -> float:
        final = _with_ratios(config, ratios)
        record, metric, sqnr = run(final)
        last.update(config=final, record=record, metric=metric, sqnr=sqnr)
        last.setdefault("uniform", metric)
        log.info("prune budget: combined model %s %.3f (loss %.3f)", evaluate.metric_name, metric,
                 evaluate.dense - metric)
        return evaluate.dense - metric

    ratios, loss, trail = allocate(units, measure_alone, measure_loss, budget)
    record = last["record"]
    within = loss <= budget
    if not within:
        log.warning("prune budget: %.3g points not met even with every group/layer whole (loss %.3f)", budget, loss)
    sensitivities: dict[tuple[str, str], list[dict]] = {}
    for unit, result in measured:
        sensitivities.setdefault(unit.key, []).append(result.to_json())
    record["budget"] = {
        "budget": budget,
        "metric": evaluate.metric_name,
        "eval_samples": int(evaluate.predictions.size),
        "metric_dense": evaluate.dense,
        "metric_uniform": last["uniform"],
        "metric_final": last["metric"],
        "output_sqnr_db": last["sqnr"],
        "within_budget": within,
        "groups": [{"step": u.kind, "name": u.name, "spec_ratio": u.levels[0], "ratio": ratios[u.key],
                    "sensitivity": sensitivities.get(u.key, [])} for u in units],
        "trail": trail,
    }
    pruned = latest.get(last["config"])
    if pruned is None:  # measured earlier, then alone configs ran: prune again (deterministic: the same module)
        pruned = prune(prepared, last["config"], calibration)[0]
    return pruned, record
