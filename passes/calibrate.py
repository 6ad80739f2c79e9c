"""Calibration: measure the activation ranges of a float Relax module on sample data.

Two phases, as in NNCF: `observation_points` declares which tensors are needed (the activation inputs of the
ops in `quant_rules.RULES`), then `calibrate` runs an instrumented copy of the module that also returns those
tensors, feeds them to bounded-memory histogram observers (`observers.py`) and reduces each to `QParams`.
Results are keyed by Relax binding name, read from the IR, never parsed out of tensor names.

Pre: `main` has static shapes, weights are bound constants (FoldConstant has run, so matmul weights are
constants). Calibration data: an iterable of {input name: array}, one model call per item.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import tvm
from tvm import relax

from ..errors import TvmcompressError
from ..progress import progress
from .host_run import host_target
from .observers import HistogramObserver
from .quant_rules import RULES, QuantRule, find_quantizable_layers
from .quantize_config import QParams, QuantizeConfig

log = logging.getLogger(__name__)

__all__ = ["ExposeObservationPoints", "observation_points", "calibrate", "collect_observers"]



def observation_points(
    mod: tvm.IRModule, rules: Mapping[str, QuantRule] = RULES, exclude: Iterable[str] = ()
) -> list[str]:
    """Names of the tensors whose ranges quantization needs, in program order, without duplicates."""
    skipped = set(exclude)
    points: list[str] = []
    for layer in find_quantizable_layers(mod, rules):
        if layer.name in skipped or layer.binding in skipped:
            continue
        points.extend(name for name in layer.activations if name not in points)
    return points


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.ExposeObservationPoints")
class ExposeObservationPoints:
    """Make `main` return `(original output, *observed tensors)`.

    Pre: every name in `points` is a parameter or binding of `main`. Post: `main`'s dataflow blocks are plain
    blocks (observed vars must be visible outside them); the original output is element 0 of the result.
    """

    def __init__(self, points: Iterable[str]):
        self.points = tuple(points)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = relax.transform.ToNonDataflow()(mod)
        func = mod["main"]
        by_name = {param.name: param for param in func.params}
        for block in func.body.blocks:
            for binding in block.bindings:
                by_name.setdefault(binding.var.name, binding.var)
        missing = [name for name in self.points if name not in by_name]
        if missing:
            raise ValueError(f"observation points not in main: {missing}")
        builder = relax.BlockBuilder()
        outputs = builder.normalize(relax.Tuple([func.body.body, *(by_name[name] for name in self.points)]))
        new_func = relax.Function(
            func.params, relax.SeqExpr(func.body.blocks, outputs), outputs.ty, func.is_pure, func.attrs
        )
        mod = mod.with_function("main", new_func) if hasattr(mod, "with_function") else _replace(mod, new_func)
        return relax.transform.Normalize()(mod)


def _replace(mod: tvm.IRModule, func: relax.Function) -> tvm.IRModule:
    new_mod = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"}, attrs=mod.attrs)
    new_mod["main"] = func
    return new_mod


def run_instrumented(
    mod: tvm.IRModule,
    points: list[str],
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    target: tvm.target.Target | None = None,
    what: str = "calibration",
) -> Iterator[list[np.ndarray]]:
    """Run `mod` with `points` exposed on every calibration item; yield the points' values (in `points` order)
    per item. Checks each item's inputs, logs progress as `what`, and refuses empty data."""
    target = target or host_target()
    instrumented = ExposeObservationPoints(points)(mod)
    log.info("%s: compiling the instrumented module (%d observation points)", what, len(points))
    vm = relax.VirtualMachine(tvm.compile(instrumented, target), tvm.cpu())
    input_names = [param.name for param in mod["main"].params]
    start = time.perf_counter()
    count = 0
    total = len(calibration_data) if hasattr(calibration_data, "__len__") else None
    # A bar with ETA on a terminal, a log line every few seconds otherwise (progress.py).
    with progress(what, total, unit="sample") as bar:
        for item in calibration_data:
            missing = [name for name in input_names if name not in item]
            if missing:
                raise TvmcompressError(
                    f"calibration item {count} lacks input(s) {', '.join(missing)}: each item maps every model input "
                    f"({', '.join(input_names)}) to an array"
                )
            args = [tvm.runtime.tensor(np.ascontiguousarray(item[name])) for name in input_names]
            results = vm["main"](*args)
            values = [value.numpy() for value in list(results)[1:]]
            # The float model's own activations on the data: finite inputs can still overflow (x1e15 squared in a
            # norm layer), and a NaN/Inf range would quantize every real activation to nothing.
            for name, value in zip(points, values):
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise TvmcompressError(
                        f"{what} sample {count}: the float model's activation '{name}' is not finite (NaN/Inf) on it: "
                        "the data is out of the range the model works in; check its scale"
                    )
            yield values
            count += 1
            bar.update(1)
    if count == 0:
        raise TvmcompressError("calibration data is empty: give at least one sample (about 100 is typical)")
    log.info("%s: %d samples done in %.1f s", what, count, time.perf_counter() - start)


def collect_observers(
    mod: tvm.IRModule,
    points: list[str],
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    num_bins: int = 2048,
    target: tvm.target.Target | None = None,
) -> dict[str, HistogramObserver]:
    """Run the instrumented module on every calibration item and return one filled observer per point."""
    observers = {name: HistogramObserver(num_bins) for name in points}
    for values in run_instrumented(mod, points, calibration_data, target):
        for name, value in zip(points, values):
            observers[name].update(value)
    return observers


def calibrate(
    mod: tvm.IRModule,
    calibration_data: Iterable[Mapping[str, np.ndarray]],
    config: QuantizeConfig = QuantizeConfig(),  # noqa: B008 - frozen: one shared default is safe
    rules: Mapping[str, QuantRule] = RULES,
    target: tvm.target.Target | None = None,
) -> dict[str, QParams]:
    """{binding name -> QParams} for every activation that a quantizable, non-excluded layer reads."""
    points = observation_points(mod, rules, config.exclude)
    if not points:
        return {}
    observers = collect_observers(mod, points, calibration_data, config.num_bins, target)
    table = {}
    for name, obs in observers.items():
        low, high = obs.range(config.calibration_method, config.percentile)
        table[name] = QParams.from_range(low, high, config.activation_dtype, config.symmetric_activations)
        log.debug("calibration: %s in [%g, %g] -> %s", name, low, high, table[name])
    return table
