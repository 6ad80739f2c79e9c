"""Dense rule: register-blocked matmul on packed weights (see packed_compute.py).

Matches a PrimFunc with one block annotated `dense_packed` (A[..., M, K] x W[N/nb, K, nb]) plus any
chain of spatial epilogue blocks (bias, GELU, residual add). Schedule per tile of `mt` rows x `nb`
columns (nb = 1-2 SIMD registers, fixed by the packing):

    parallel(batch, n_outer, m_outer) / k / m_inner (unrolled) / n_inner (vectorized)

with the fused epilogue computed at the tile, so the accumulators stay in registers.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import blocks_before, find_annotated_block, fuse_epilogue, loop_extent, schedule_spatial_block
from .packed_compute import DENSE_PACKED, SYMBOLIC_ROWS
from .rule_base import CPURule
from .target_info import cpu_info
from .tiling import choose_register_tile


def schedule_register_tiled_gemm(sch, block, epilogue, rows_loop, cols_loop, reduce_loops, batch_loops, mt, nb, lanes):
    """Shared GEMM tiling: parallel(batch, cols_outer, rows_outer) / reduce / rows_inner / cols_inner."""
    ro, ri = sch.split(rows_loop, factors=[None, mt])
    co, ci = sch.split(cols_loop, factors=[None, nb])
    sch.reorder(*batch_loops, co, ro, *reduce_loops, ri, ci)
    outer = sch.fuse(*batch_loops, co, ro)
    sch.parallel(outer)
    sch.reverse_compute_at(epilogue, outer, preserve_unit_loops=True)
    # NOTE: vectorize before decompose_reduction (vectorize rejects the bare update block).
    sch.unroll(ri)
    sch.vectorize(ci)
    sch.decompose_reduction(block, reduce_loops[0])
    tile = sch.fuse(*sch.get_loops(epilogue)[1:])
    extent = loop_extent(sch, tile)
    if extent is not None and extent % lanes == 0:
        _, vec = sch.split(tile, factors=[None, lanes])
        sch.vectorize(vec)


class Dense(CPURule):
    """Register-blocked GEMM for `dense_packed` blocks."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        dense = find_annotated_block(sch, DENSE_PACKED)
        if dense is None:
            return None
        info = cpu_info(target)
        lanes = info.lanes(32)
        nb = int(sch.get(dense).reads[1].source.shape[-1])
        *batch, m, n, k = sch.get_loops(dense)
        rows = loop_extent(sch, m) or SYMBOLIC_ROWS  # a symbolic row count (dynamic shapes): see packed_compute
        mt = choose_register_tile(rows, nb, info, lanes, info.max_gemm_rows).rows
        epilogue = fuse_epilogue(sch, dense, lanes)
        if epilogue is None:
            epilogue = sch.cache_write(dense, 0, "global")
        producers = blocks_before(sch, dense)
        schedule_register_tiled_gemm(sch, dense, epilogue, m, n, [k], batch, mt, nb, lanes)
        for block in producers:
            schedule_spatial_block(sch, block, lanes)
        return sch
