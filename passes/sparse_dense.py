"""SparseDense: run block-sparse Dense/MatMul layers as BSR kernels (`bsr_kernels.py`).

Which layers: `find_block_sparse_matmuls` proposes each matmul whose constant [K, N] weight has at least
`min_sparsity` of its R x C tiles all zero, for the candidate block (R, C) that drops the most weights; whether
the sparse kernel is really faster is measured per layer by `tvmcompress.passes.sparse_decision`, and SparseDense
rewrites the layers it is given.

Pre: weights are bound float32 constants (FoldConstant has run); binding names are unique. Post: each selected
`y = R.matmul(x, W)` with x [..., K] becomes
    x2 = R.reshape(x, (M, K)); y2 = R.call_tir(bsr_matmul, (x2, data, indices, indptr), [M, N]);
    y = R.reshape(y2, y's shape)
with data/indices/indptr constants and `bsr_matmul` a scheduled, opaque PrimFunc added to the module (one per
layer). Other bindings are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .bsr_kernels import bsr_matmul_kernel, to_bsr
from .prune_block import block_sparsity, prunable_matmuls
from .quant_rules import constant_value, rebind

__all__ = ["SparseDense", "SparseCandidate", "find_block_sparse_matmuls", "DEFAULT_BLOCKS"]

# Blocks the kernel runs well: C a multiple of the AVX2/NEON vector (8 / 4 floats), R amortizing the index
# loads. Listed largest first, so that among equally sparse blocks the one with the fewest tiles wins.
DEFAULT_BLOCKS: tuple[tuple[int, int], ...] = ((8, 16), (4, 16), (2, 16), (1, 16), (4, 8), (1, 8))


@dataclass(frozen=True)
class SparseCandidate:
    layer: str  # `matmul_3`
    binding: str
    shape: tuple[int, int]  # weight [K, N]
    rows: int  # M: product of x's leading dims
    block: tuple[int, int]
    block_sparsity: float  # fraction of all-zero R x C tiles


def _rows(call: relax.Call) -> int | None:
    shape = getattr(call.args[0].ty, "shape", None)
    dims = list(shape.values) if isinstance(shape, relax.ShapeExpr) else None
    if not dims or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None  # dynamic: the kernel is generated for static shapes
    return int(np.prod([int(d) for d in dims[:-1]]))


def find_block_sparse_matmuls(
    mod: tvm.IRModule, min_sparsity: float = 0.5, blocks: Sequence[tuple[int, int]] = DEFAULT_BLOCKS
) -> list[SparseCandidate]:
    """Matmuls of `main` with a constant weight at least `min_sparsity` block sparse, in program order."""
    by_binding = {b: name for name, b in prunable_matmuls(mod).items()}
    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            layer = by_binding.get(binding.var.name)
            if layer is None:
                continue
            weight = constant_value(binding.value.args[1])
            rows = _rows(binding.value)
            if rows is None:
                continue
            fits = [b for b in blocks if weight.shape[0] % b[0] == 0 and weight.shape[1] % b[1] == 0]
            scored = [(block_sparsity(weight, b), b[0] * b[1], b) for b in fits]
            if not scored:
                continue
            sparsity, _, best = max(scored, key=lambda s: (round(s[0], 6), s[1]))
            if sparsity >= min_sparsity:
                found.append(SparseCandidate(layer, binding.var.name, tuple(weight.shape), rows, best, sparsity))
    return found


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.SparseDense")
class SparseDense:
    """Rewrite the matmuls named in `layers` ({binding name: (R, C) block}) into BSR kernel calls."""

    def __init__(self, layers: Mapping[str, tuple[int, int]]):
        self.layers = {name: (int(b[0]), int(b[1])) for name, b in layers.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.layers:
            return mod
        rewriter = _BsrRewriter(mod, self.layers)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and gvar.name_hint == "main":
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _BsrRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, layers: dict[str, tuple[int, int]]):
        super().__init__(mod)
        self.layers = layers

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        block = self.layers.get(binding.var.name)
        weight = constant_value(call.args[1]) if block is not None and isinstance(call, relax.Call) else None
        if weight is None:
            return super().visit_var_binding_(binding)
        k, n = weight.shape
        m = _rows(call)
        bsr = to_bsr(weight, block)
        kernel = self.builder_.add_func(bsr_matmul_kernel(m, bsr, str(weight.dtype)), f"bsr_matmul_{binding.var.name}")
        x = self.visit_expr(call.args[0])
        x2 = self.builder_.emit(relax.op.reshape(x, (m, k)), name_hint=f"{binding.var.name}_rows")
        y2 = self.builder_.emit(
            relax.call_tir(
                kernel,
                [x2, relax.const(bsr.data), relax.const(bsr.indices), relax.const(bsr.indptr)],
                relax.TensorType((m, n), str(weight.dtype)),
            ),
            name_hint=f"{binding.var.name}_bsr",
        )
        rebind(self, binding.var, relax.op.reshape(y2, binding.var.ty.shape))
