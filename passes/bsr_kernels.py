"""BSR (block compressed sparse row) matmul kernels in TIR, and the numpy conversion of a weight to BSR.

y[M, N] = x[M, K] @ W[K, N] with W stored by output column blocks: block row j covers the C output columns
[j*C, (j+1)*C); its nonzero R x C tiles are `data[indptr[j]:indptr[j+1]]`, tile b lying on input rows
[indices[b]*R, (indices[b]+1)*R). (This is scipy's BSR of W.T, whose tiles are C x R, stored transposed so
that a tile row is C contiguous output columns.)

The kernel is written already scheduled, so the CPU pipeline leaves it alone (`tir.is_scheduled`; op_pattern
opaque so that FuseOps does not fuse it with its neighbours and FuseTIR does not rewrite it):
- parallel over the N/C block rows (each thread owns whole output columns: no reduction across threads);
- rows of x in tiles of MT, whose MT x C accumulators stay in registers (MT = 4 and C = 16 is 8 AVX2 ymm);
- the C columns of a tile vectorized; x[m, k] is a broadcast scalar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

__all__ = ["BsrWeight", "to_bsr", "bsr_matmul_kernel", "rows_per_tile"]

# TVM's relay.op.op.OpPattern.OPAQUE: never fused.
_OP_PATTERN_OPAQUE = 8


@dataclass(frozen=True)
class BsrWeight:
    """A [K, N] weight in BSR by output column blocks (see the module docstring)."""

    shape: tuple[int, int]  # (K, N)
    block: tuple[int, int]  # (R, C)
    data: np.ndarray  # [nnz_blocks, R, C]
    indices: np.ndarray  # int32 [nnz_blocks]: input row block of each tile
    indptr: np.ndarray  # int32 [N / C + 1]

    @property
    def nnz_blocks(self) -> int:
        return int(self.data.shape[0])

    def to_dense(self) -> np.ndarray:
        k, n = self.shape
        r, c = self.block
        dense = np.zeros((k, n), self.data.dtype)
        for j in range(n // c):
            for b in range(self.indptr[j], self.indptr[j + 1]):
                kb = self.indices[b]
                dense[kb * r : (kb + 1) * r, j * c : (j + 1) * c] = self.data[b]
        return dense


def to_bsr(weight: np.ndarray, block: tuple[int, int]) -> BsrWeight:
    """The BSR form of a [K, N] weight whose shape is a multiple of the block; all-zero tiles are dropped."""
    k, n = weight.shape
    r, c = block
    if k % r or n % c:
        raise ValueError(f"weight {weight.shape} is not a multiple of block {block}")
    # tiles[j, kb] is the R x C tile on input rows kb*R.. and output columns j*C..
    tiles = weight.reshape(k // r, r, n // c, c).transpose(2, 0, 1, 3)
    nonzero = np.any(tiles != 0, axis=(2, 3))  # [N/C, K/R]
    cols, rows = np.nonzero(nonzero)  # row-major over (j, kb): grouped by block row, kb ascending
    indptr = np.zeros(n // c + 1, np.int32)
    np.cumsum(nonzero.sum(axis=1), out=indptr[1:])
    data = np.ascontiguousarray(tiles[cols, rows])
    if data.shape[0] == 0:
        # A zero-size constant does not survive the build; one zero tile keeps shapes valid, indptr ignores it.
        data = np.zeros((1, r, c), weight.dtype)
        rows = np.zeros(1, np.int64)
    return BsrWeight((k, n), (r, c), data, rows.astype(np.int32), indptr)


def rows_per_tile(m: int) -> int:
    """MT: rows of x sharing one pass over the weight tiles (the largest of 4, 2, 1 dividing M)."""
    return next(t for t in (4, 2, 1) if m % t == 0)


def bsr_matmul_kernel(m: int, bsr: BsrWeight, dtype: str = "float32") -> tvm.tirx.PrimFunc:
    """The scheduled PrimFunc `(x[M, K], data, indices, indptr) -> y[M, N]` for a BSR weight's shapes."""
    k, n = bsr.shape
    r, c = bsr.block
    nnz, nb, mt = bsr.nnz_blocks, n // c, rows_per_tile(m)

    @T.prim_func(private=True)
    def bsr_matmul(
        x: T.Buffer((m, k), dtype),
        data: T.Buffer((nnz, r, c), dtype),
        indices: T.Buffer((nnz,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tir.noalias": True, "tir.is_scheduled": True, "op_pattern": _OP_PATTERN_OPAQUE})
        for j in T.parallel(nb):
            acc = T.alloc_buffer((mt, c), dtype, scope="local")
            for mo in T.serial(m // mt):
                for mi in T.unroll(mt):
                    for cc in T.vectorized(c):
                        acc[mi, cc] = T.cast(0, dtype)
                for b in T.serial(indptr[j + 1] - indptr[j]):
                    for rr in T.serial(r):
                        for mi in T.unroll(mt):
                            for cc in T.vectorized(c):
                                acc[mi, cc] = acc[mi, cc] + (
                                    x[mo * mt + mi, indices[indptr[j] + b] * r + rr] * data[indptr[j] + b, rr, cc]
                                )
                for mi in T.unroll(mt):
                    for cc in T.vectorized(c):
                        y[mo * mt + mi, j * c + cc] = acc[mi, cc]

    return bsr_matmul
