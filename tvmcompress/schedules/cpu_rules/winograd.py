"""Winograd rules: the input and output transforms of winograd_compute.py (its GEMM is a `dense_packed` block, which
the Dense rule schedules).

Both transforms are chains of Select on the tile-element index; unrolling that index folds each Select to its one
branch, and loads shared between the unrolled elements are read once. Channels are innermost in every buffer, so
the channel loop is the vector loop:

    input:  parallel(tile, c_outer) / [rows: element (unrolled) / c_inner (vectorized)]
                                     / element (unrolled) / c_inner (vectorized)
    output: parallel(n, tile_row) / tile_col / k_outer / row, col in tile (unrolled) / k_inner (vectorized)

The output transform is inlined into the conv's fused epilogue when that is elementwise (bias, residual add, ReLU),
so Y is written once; an epilogue that changes the layout (the graph's closing NHWC -> NCHW transpose) is computed
per output tile instead. An epilogue that is not a per-element function of Y (a Concat of Y with other tensors,
which FuseOps fuses because the output transform is injective) runs after Y as a loop nest of its own: computed
per tile, its iterations that read the other inputs would never run (common.reads_as_permutation).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import (
    blocks_before,
    find_annotated_block,
    fuse_epilogue,
    is_spatial_block,
    reads_as_permutation,
    loop_extent,
    root_blocks,
    schedule_spatial_block,
)
from .rule_base import CPURule
from .target_info import cpu_info
from .winograd_compute import TILE_KEY, WINOGRAD_INPUT, WINOGRAD_OUTPUT


def _split_vector(sch: s_tir.Schedule, loop, lanes: int):
    extent = loop_extent(sch, loop)
    if extent is None or extent % lanes != 0:
        return None
    return sch.split(loop, factors=[None, lanes])


class WinogradInputTransform(CPURule):
    """V[e, p, c] = (B^T d_p B)[e], after the pad producer."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        block = find_annotated_block(sch, WINOGRAD_INPUT)
        if block is None or sch.get(root_blocks(sch)[-1]).name_hint != sch.get(block).name_hint:
            return None
        lanes = cpu_info(target).lanes(32)
        element, tile, channel = sch.get_loops(block)
        split = _split_vector(sch, channel, lanes)
        if split is None:
            return None
        c_outer, c_inner = split
        sch.reorder(tile, c_outer, element, c_inner)
        outer = sch.fuse(tile, c_outer)
        sch.parallel(outer)
        sch.unroll(element)
        sch.vectorize(c_inner)
        *producers, rows = blocks_before(sch, block)
        # B^T d for one tile and one vector of channels, computed where V needs it: alpha^2 vectors in L1.
        sch.compute_at(rows, outer)
        xi, j, *_, ch = sch.get_loops(rows)[1:]  # the tile loop (extent 1) is dropped
        sch.unroll(xi)
        sch.unroll(j)
        sch.vectorize(ch)
        for producer in producers:
            schedule_spatial_block(sch, producer, lanes)
        return sch


class WinogradOutputTransform(CPURule):
    """Y[n, h, w, k] = (A^T M_p A)[h mod m, w mod m], with the conv's epilogue fused (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        block = find_annotated_block(sch, WINOGRAD_OUTPUT)
        if block is None or blocks_before(sch, block):
            return None
        m = int(sch.get(block).annotations[TILE_KEY])
        lanes = cpu_info(target).lanes(32)
        epilogue = None
        if len(root_blocks(sch)) > 1:
            # None with blocks left after Y: an epilogue that is not a per-element function of Y (a Concat of Y
            # with other tensors) is now a loop nest of its own, after Y's (common.reads_as_permutation).
            epilogue = fuse_epilogue(sch, block, lanes)
            if epilogue is None and not _only_spatial_blocks_after(sch, block):
                return None
            output = sch.get(block).writes[0].source
            if epilogue is not None and reads_as_permutation(sch, epilogue, output) == tuple(range(len(output.shape))):
                # Bias, residual add, ReLU: Y is computed straight into the epilogue's output.
                sch.compute_inline(block)
                block, epilogue = epilogue, None
        loops = sch.get_loops(block)
        if len(loops) != 4:
            return None
        n, h, w, k = loops
        split = _split_vector(sch, k, lanes)
        if split is None:
            return None
        k_outer, k_inner = split
        h_outer, h_inner = sch.split(h, factors=[None, m])
        w_outer, w_inner = sch.split(w, factors=[None, m])
        sch.reorder(n, h_outer, w_outer, k_outer, h_inner, w_inner, k_inner)
        sch.parallel(sch.fuse(n, h_outer))
        sch.unroll(h_inner)
        sch.unroll(w_inner)
        sch.vectorize(k_inner)
        if epilogue is not None:
            # A layout change (the graph's NHWC -> NCHW output transpose) follows: it reads each m x m x lanes
            # tile of Y right after it is computed, so Y never leaves the cache.
            sch.reverse_compute_at(epilogue, k_outer, preserve_unit_loops=True)
        return sch


def _only_spatial_blocks_after(sch: s_tir.Schedule, block) -> bool:
    """Whether everything after `block` is one spatial block, already scheduled on its own by fuse_epilogue."""
    after = root_blocks(sch)[len(blocks_before(sch, block)) + 1:]
    return len(after) == 1 and is_spatial_block(sch, after[0])
