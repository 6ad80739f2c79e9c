"""Per-layer choice between the dense matmul and the BSR kernel, by measuring both on the target.

A block-sparse weight is only worth a sparse kernel where the kernel is faster: at moderate sparsity, or with
small blocks, the dense kernel's better vectorization wins. For each candidate layer (`find_block_sparse_matmuls`)
we build two one-layer modules with the build's own CPU pipeline, the dense `matmul(x, W)` and the BSR kernel,
and time them interleaved (medians of rounds), as the model's layer would run. Targets we cannot time here
(cross-compiled, CUDA) keep every layer dense, and each decision says why.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["SparseDecision", "decide_sparse_layers", "sparse_candidates", "DEFAULT_MIN_SPEEDUP"]

# Below ~1.2x a layer-level win is within the noise of a loaded machine and can turn into a loss in the model
# (the sparse kernel does not fuse the bias/activation epilogue that the dense one does).
DEFAULT_MIN_SPEEDUP = 1.2
ROUNDS = 15


@dataclass(frozen=True)
class SparseDecision:
    layer: str
    binding: str
    shape: list[int]  # weight [K, N]
    block: list[int]  # [R, C]
    block_sparsity: float
    sparse: bool
    dense_ms: float | None
    sparse_ms: float | None
    speedup: float | None
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


def _one_layer_modules(candidate, weight: np.ndarray):
    from tvm import relax

    from .sparse_dense import SparseDense

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((candidate.rows, weight.shape[0]), str(weight.dtype)))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.matmul(x, relax.const(weight)), name_hint="y"))
        bb.emit_func_output(y)
    dense = bb.get()
    name = dense["main"].body.blocks[0].bindings[0].var.name
    return dense, SparseDense({name: candidate.block})(dense)


def _time_pair(dense_ex, sparse_ex, rows: int, k: int, dtype: str) -> tuple[float, float]:
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal((rows, k)).astype(dtype))
    evaluators = []
    for ex in (dense_ex, sparse_ex):
        vm = relax.VirtualMachine(ex, dev)
        once = vm.time_evaluator("main", dev, number=1, repeat=1)
        # Enough calls per round for ~40 ms of work, so that one timer tick or one preemption does not decide.
        number = max(1, min(200, int(0.04 / max(once(x).mean, 1e-6))))
        evaluators.append(vm.time_evaluator("main", dev, number=number, repeat=1))
    samples = ([], [])
    for _ in range(ROUNDS):  # interleaved: both kernels see the same machine load
        for fn, out in zip(evaluators, samples):
            out.append(float(fn(x).mean) * 1e3)  # numpy float64 -> float: decisions go to JSON
    return statistics.median(samples[0]), statistics.median(samples[1])


def sparse_candidates(mod):
    """The module in prepare_for_quantization's form, on which the block-sparse matmuls are found and measured,
    or None when it has none (then nothing needs deciding). Cheap first: most models have no half-zero 2-D float
    constant, and then nothing is prepared."""
    from ..weight_sizes import module_constants
    from .quantize import prepare_for_quantization
    from .sparse_dense import find_block_sparse_matmuls

    if not any(c.ndim == 2 and c.dtype.kind == "f" and np.mean(c == 0) >= 0.5 for c in module_constants(mod)):
        return None
    prepared = prepare_for_quantization(mod)
    return prepared if find_block_sparse_matmuls(prepared) else None


def decide_sparse_layers(mod, preset, min_speedup: float = DEFAULT_MIN_SPEEDUP) -> list[SparseDecision]:
    """One decision per block-sparse candidate matmul of `mod` for the target preset."""
    import tvm

    from ..schedules.cpu_pipeline import cpu_pipeline
    from .quant_rules import constant_value
    from .sparse_dense import find_block_sparse_matmuls

    candidates = find_block_sparse_matmuls(mod)
    if not candidates:
        return []
    target = tvm.target.Target(preset.tvm_target)
    can_time = target.kind.name == "llvm" and preset.runner == "native"
    weights = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            weights[binding.var.name] = binding.value
    decisions = []
    for i, cand in enumerate(candidates):
        common = dict(layer=cand.layer, binding=cand.binding, shape=[int(d) for d in cand.shape],
                      block=[int(b) for b in cand.block], block_sparsity=round(float(cand.block_sparsity), 4))
        if not can_time:
            decisions.append(SparseDecision(**common, sparse=False, dense_ms=None, sparse_ms=None, speedup=None,
                                            reason=f"kept dense: cannot time kernels for {preset.name} on this machine"))
            continue
        log.info("timing dense vs BSR kernel for %s (%d/%d)", cand.layer, i + 1, len(candidates))
        weight = constant_value(weights[cand.binding].args[1])
        dense, sparse = _one_layer_modules(cand, weight)
        pipeline = cpu_pipeline(target)
        dense_ms, sparse_ms = _time_pair(
            tvm.compile(dense, target, relax_pipeline=pipeline), tvm.compile(sparse, target, relax_pipeline=pipeline),
            cand.rows, cand.shape[0], str(weight.dtype),
        )
        speedup = dense_ms / sparse_ms
        chosen = bool(speedup >= min_speedup)
        reason = (f"sparse kernel {speedup:.2f}x faster" if chosen
                  else f"kept dense: sparse kernel {speedup:.2f}x, below the {min_speedup}x threshold")
        decisions.append(SparseDecision(**common, sparse=chosen, dense_ms=round(dense_ms, 4),
                                        sparse_ms=round(sparse_ms, 4), speedup=round(speedup, 3), reason=reason))
    return decisions
