"""Matmul rule: register-blocked (batch) matmul whose operands are both activations.

Matches a PrimFunc with exactly one reduction block C[..., i, j] += A[..., i, k] * B[..., k, j]
(B row-major in j, as TVM's legalization of R.matmul writes it; attention's Q @ K^T reads a
materialized transpose) plus spatial epilogue blocks (the attention scale). Same tiling as Dense,
reading B in place: its rows are contiguous in j, so the inner vector loads stay unit-stride.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import blocks_before, fuse_epilogue, is_spatial_block, loop_extent, root_blocks, schedule_spatial_block
from .dense import schedule_register_tiled_gemm
from .rule_base import CPURule
from .target_info import cpu_info
from .tiling import choose_register_tile


def _index_var(expr) -> tirx.Var | None:
    return expr if isinstance(expr, tirx.Var) else None


def match_matmul(sch: s_tir.Schedule, block) -> bool:
    """True for C[..., i, j] += A[..., i, k] * B[..., k, j] with the reduction var k last."""
    stmt = sch.get(block)
    iters = stmt.iter_vars
    if len(iters) < 3 or stmt.init is None or len(stmt.reads) < 2:
        return False
    kinds = [iv.iter_type for iv in iters]
    if kinds[-1] != tirx.IterVar.CommReduce or any(k != tirx.IterVar.DataPar for k in kinds[:-1]):
        return False
    i, j, k = (iv.var for iv in iters[-3:])
    write = stmt.writes[0]
    out_idx = [_index_var(r.min) for r in write.region]
    if len(out_idx) < 2 or not (out_idx[-2] is not None and out_idx[-2].same_as(i)) or not (out_idx[-1] is not None and out_idx[-1].same_as(j)):
        return False
    others = [r for r in stmt.reads if not r.source.same_as(write.source)]
    if len(others) != 2:
        return False
    a_idx = [_index_var(r.min) for r in others[0].region]
    b_idx = [_index_var(r.min) for r in others[1].region]
    return (
        len(a_idx) >= 2 and len(b_idx) >= 2
        and a_idx[-1] is not None and a_idx[-1].same_as(k) and a_idx[-2] is not None and a_idx[-2].same_as(i)
        and b_idx[-1] is not None and b_idx[-1].same_as(j) and b_idx[-2] is not None and b_idx[-2].same_as(k)
    )


class Matmul(CPURule):
    """Register-blocked (batch) matmul of two activations."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = root_blocks(sch)
        reductions = [b for b in blocks if not is_spatial_block(sch, b)]
        if len(reductions) != 1 or not match_matmul(sch, reductions[0]):
            return None
        block = reductions[0]
        if sch.get(block).writes[0].source.dtype != "float32":
            return None
        info = cpu_info(target)
        lanes = info.lanes(32)
        *batch, m, n, k = sch.get_loops(block)
        rows, cols = loop_extent(sch, m), loop_extent(sch, n)
        if rows is None or cols is None:
            return None
        # B is read in place (not packed and padded as Dense's weight is), so the vector must divide the columns:
        # narrow it to half a register or less where it does not (24 columns: 8 lanes on AVX-512, whose 16 did not
        # divide them and left the matmul unscheduled, issue 17), down to SSE/NEON's 4.
        while lanes > 4 and cols % lanes:
            lanes //= 2
        if cols % lanes:
            return None
        tile = choose_register_tile(rows, cols, info, lanes, info.max_gemm_rows)
        producers = blocks_before(sch, block)
        epilogue = fuse_epilogue(sch, block, lanes)
        if epilogue is None:
            epilogue = sch.cache_write(block, 0, "global")
        schedule_register_tiled_gemm(sch, block, epilogue, m, n, [k], batch, tile.rows, tile.channels, lanes)
        for producer in producers:
            schedule_spatial_block(sch, producer, lanes)
        return sch
