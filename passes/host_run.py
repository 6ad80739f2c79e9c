"""Build a Relax module for this machine and run it on batches, and the metrics the drivers measure with.

Calibration, reconstruction, SmoothQuant, bias correction, the pruning budget, the int8 analysis and `debug` all
run modules on the host; this is the one place that says how (the host target, the VM, how a call's first output
is read) and what the accuracy metrics mean (top-1 of the first output's last axis, agreement with the float
model's top-1, and output SQNR).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from ..errors import TvmcompressError

__all__ = ["host_target", "build_for_host", "first_output", "run_batches", "top1", "sqnr_db", "sqnr_from_energies",
           "SQNR_LIMIT_DB"]

Batch = Mapping[str, np.ndarray]

# The SQNR floor: reported for outputs that are NaN/Inf where fp32's are finite (JSON has no -infinity either).
SQNR_LIMIT_DB = 300.0


def host_target() -> tvm.target.Target:
    """This machine's CPU, as LLVM names it."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def build_for_host(mod: tvm.IRModule, target: tvm.target.Target | None = None) -> relax.VirtualMachine:
    """`mod` compiled for `target` (default: this machine) in a VM on the CPU; a small model builds in about a
    second."""
    return relax.VirtualMachine(tvm.compile(mod, target or host_target()), tvm.cpu())


def first_output(value) -> np.ndarray:
    """The first tensor of what `main` returned: a model with several outputs returns a (nested) tuple, and the
    metrics read its first output."""
    while not isinstance(value, tvm.runtime.Tensor):
        value = value[0]
    return value.numpy()


def run_batches(mod: tvm.IRModule, batches: Sequence[Batch], target: tvm.target.Target | None = None,
                vm: relax.VirtualMachine | None = None) -> list[np.ndarray]:
    """The first output of `mod` on each batch ({input name: array}, one call of `main` each)."""
    vm = vm or build_for_host(mod, target)
    names = [param.name for param in mod["main"].params]
    return [first_output(vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(b[n])) for n in names)))
            for b in batches]


def top1(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The predicted class of every output row: argmax over the last axis of each batch's output."""
    return np.concatenate([np.asarray(o).reshape(-1, o.shape[-1]).argmax(-1) for o in outputs])


def sqnr_db(reference: np.ndarray | Sequence[np.ndarray], test: np.ndarray | Sequence[np.ndarray]) -> float:
    """10 log10(|ref|^2 / |ref - test|^2) over all elements (a list of batch outputs is flattened and joined),
    rounded to 0.01 dB; equal tensors give a large finite number and NaN/Inf outputs -SQNR_LIMIT_DB (JSON has
    no infinity)."""
    reference = _flat(reference)
    if not np.isfinite(reference).all():
        raise TvmcompressError(
            "the float model's outputs on the eval data are not finite (NaN/Inf): check the data and the weights"
        )
    noise = float(np.sum((reference - _flat(test)) ** 2))
    return sqnr_from_energies(float(np.sum(reference**2)), noise)


def sqnr_from_energies(signal: float, noise: float) -> float:
    """sqnr_db from the summed squares of the reference and of the error."""
    if not (math.isfinite(signal) and math.isfinite(noise)):  # NaN/Inf outputs: as bad as it gets, and JSON-safe
        return -SQNR_LIMIT_DB
    return max(-SQNR_LIMIT_DB, round(10.0 * math.log10((signal + 1e-30) / (noise + 1e-30)), 2))


def _flat(values: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return np.asarray(values, np.float64)
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in values])
