"""PruneBlock and PruneNM: structured magnitude pruning of the constant weights of Dense/MatMul layers.

Weights are seen as the matmul's [K, N] (rows = input features K, the reduction axis; columns = output
features N), which is how the ONNX importer binds MatMul weights and, after FoldConstant, Gemm(transB=1)
weights too. Two structures:

- block R x C (`--prune block:S:RxC`): the weight is cut into R-row x C-column tiles; the fraction S of tiles
  with the smallest L2 norm becomes zero (ties broken by position, so the result is deterministic). Edge tiles
  of a weight whose shape is not a multiple of the block are partial and compete by their own norm.
  Block 1xC over N is what the BSR kernel (`sparse_dense.py`) vectorizes: keep C a multiple of the SIMD width.
- N:M (`--prune 2:4`): in every group of M consecutive weights along K (per output column), the N of largest
  magnitude stay, the others become zero; the last group of a K that is not a multiple of M is pruned to
  ceil(N * len / M). This is the pattern of NVIDIA's sparse tensor cores (2:4 along the reduction axis).

The mask functions are pure numpy (`block_mask`, `nm_mask`); the passes apply them to a module.

Pre: weights are bound float32 constants (FoldConstant has run, e.g. `quantize.prepare_for_quantization`);
binding names are unique (UniqueBindingNames). Post: the [K, N] constant weight of each selected
`R.matmul(x, W)` has the pruned entries set to 0.0; nothing else changes (same shapes, same bindings). Layers
are named as in `quant_rules.find_quantizable_layers` (`matmul_0`, ...) and may also be given by binding name.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..errors import TvmcompressError
from .quant_rules import RULES, constant_value, find_quantizable_layers, rebind

__all__ = ["PruneBlock", "PruneNM", "block_mask", "nm_mask", "block_sparsity", "prunable_matmuls", "select_matmuls"]

_MATMUL_RULE = RULES["relax.matmul"]


def _check_fraction(sparsity: float) -> float:
    if not 0.0 <= sparsity < 1.0:
        raise TvmcompressError(f"block sparsity must be in [0, 1), got {sparsity}: e.g. block:0.9:1x16")
    return float(sparsity)


def _block_norms(weight: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """L2 norm of each R x C tile of a 2-D weight (partial edge tiles padded with zeros)."""
    r, c = block
    k, n = weight.shape
    kb, nb = -(-k // r), -(-n // c)
    padded = np.zeros((kb * r, nb * c), np.float64)
    padded[:k, :n] = weight
    return np.sqrt((padded.reshape(kb, r, nb, c) ** 2).sum(axis=(1, 3)))


def block_mask(weight: np.ndarray, sparsity: float, block: tuple[int, int]) -> np.ndarray:
    """Boolean keep-mask of a [K, N] weight: the `sparsity` fraction of R x C tiles (rounded down to whole
    tiles) with the smallest L2 norm are False."""
    sparsity = _check_fraction(sparsity)
    r, c = (int(b) for b in block)
    if weight.ndim != 2 or r < 1 or c < 1:
        raise TvmcompressError(f"block pruning needs a 2-D weight and a positive block, got {weight.shape} and {block}")
    norms = _block_norms(weight, (r, c))
    drop = int(np.floor(sparsity * norms.size))
    keep_blocks = np.ones(norms.size, bool)
    # stable argsort: equal norms are dropped in row-major order, so the mask is reproducible.
    keep_blocks[np.argsort(norms.ravel(), kind="stable")[:drop]] = False
    keep_blocks = keep_blocks.reshape(norms.shape)
    mask = np.repeat(np.repeat(keep_blocks, r, axis=0), c, axis=1)
    return mask[: weight.shape[0], : weight.shape[1]]


def nm_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Boolean keep-mask of a [K, N] weight: in each run of `m` consecutive rows (along K) of every column,
    the `n` largest |w| are True (ties: the earlier row wins)."""
    if not 0 < n < m:
        raise TvmcompressError(f"N:M pruning needs 0 < N < M, got {n}:{m}: e.g. 2:4")
    if weight.ndim != 2:
        raise TvmcompressError(f"N:M pruning needs a 2-D weight, got shape {weight.shape}")
    k, cols = weight.shape
    mask = np.zeros(weight.shape, bool)
    for start in range(0, k, m):
        group = np.abs(weight[start : start + m])  # [len, N]
        keep = -(-n * len(group) // m)
        # argsort of -|w| (stable) ranks the largest first, earlier rows first among equals.
        order = np.argsort(-group, axis=0, kind="stable")[:keep]
        np.put_along_axis(mask[start : start + m], order, True, axis=0)
    return mask


def block_sparsity(weight: np.ndarray, block: tuple[int, int]) -> float:
    """Fraction of R x C tiles of a [K, N] weight that are entirely zero."""
    norms = _block_norms(weight, block)
    return float(np.mean(norms == 0.0))


def prunable_matmuls(mod: tvm.IRModule) -> dict[str, str]:
    """{layer name (`matmul_0`) -> binding name} of the `main` matmuls with a constant float32 [K, N] weight."""
    return {l.name: l.binding for l in find_quantizable_layers(mod, {"relax.matmul": _MATMUL_RULE})}


def select_matmuls(mod: tvm.IRModule, layers: Iterable[str] | None) -> set[str]:
    """Binding names of the prunable matmuls named in `layers` (layer or binding names; None: all of them).

    Raises TvmcompressError for a name that is not a prunable matmul. Call it before running a pass to get
    that error as such: inside a pass, TVM's FFI turns every exception into a RuntimeError."""
    found = prunable_matmuls(mod)
    if layers is None:
        return set(found.values())
    layers = frozenset(layers)
    unknown = sorted(layers - set(found) - set(found.values()))
    if unknown:
        raise TvmcompressError(
            f"no Dense/MatMul layer with a constant weight named {', '.join(unknown)}; "
            f"prunable layers: {', '.join(found) or 'none'}"
        )
    return {b for name, b in found.items() if name in layers or b in layers}


class _MaskPass:
    """Shared driver: select layers, rewrite each selected matmul's weight with `self.mask(weight)`."""

    def __init__(self, layers: Iterable[str] | None):
        self.layers = None if layers is None else frozenset(layers)

    def mask(self, weight: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        selected = select_matmuls(mod, self.layers)
        if not selected:
            return mod
        rewriter = _WeightMasker(mod, selected, self.mask)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PruneBlock")
class PruneBlock(_MaskPass):
    """Zero the `sparsity` fraction of R x C weight tiles (smallest L2 norm) of each selected matmul.

    `block` is (R, C) = (rows along K, columns along N); `layers`: layer or binding names, None for every
    matmul with a constant weight. An unknown name raises TvmcompressError."""

    def __init__(self, sparsity: float, block: tuple[int, int], layers: Iterable[str] | None = None):
        super().__init__(layers)
        self.sparsity = _check_fraction(sparsity)
        self.block = (int(block[0]), int(block[1]))

    def mask(self, weight: np.ndarray) -> np.ndarray:
        return block_mask(weight, self.sparsity, self.block)


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.PruneNM")
class PruneNM(_MaskPass):
    """Keep the `n` largest of every `m` consecutive weights along K of each selected matmul (2:4 = n=2, m=4)."""

    def __init__(self, n: int, m: int, layers: Iterable[str] | None = None):
        super().__init__(layers)
        nm_mask(np.zeros((m, 1), np.float32), n, m)  # validates n and m now, not at the first layer
        self.n, self.m = int(n), int(m)

    def mask(self, weight: np.ndarray) -> np.ndarray:
        return nm_mask(weight, self.n, self.m)


@mutator
class _WeightMasker(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, selected: set[str], mask):
        super().__init__(mod)
        self.selected = selected
        self.mask = mask

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if binding.var.name not in self.selected or not isinstance(call, relax.Call):
            return super().visit_var_binding_(binding)
        weight = constant_value(call.args[1])
        pruned = np.where(self.mask(weight), weight, np.float32(0)).astype(weight.dtype)
        args = [self.visit_expr(call.args[0]), relax.const(pruned, str(pruned.dtype))]
        rebind(self, binding.var, relax.Call(call.op, args, call.attrs))
