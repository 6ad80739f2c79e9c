"""Conv2D rule: register-blocked NHWC convolution on packed weights (see packed_compute.py).

Matches a PrimFunc with one block annotated `conv2d_nhwc_packed`: optional pad producer, the
convolution, and any chain of spatial epilogue blocks (bias, BN, ReLU, residual add) that FuseOps
put behind it. Schedule, per output tile of `owt` pixels x `ocb` channels (ocb = 1-2 SIMD registers):

    parallel(n, oc_outer, oh) / ow_outer / kh, kw, ic / ow_inner (unrolled) / oc_inner (vectorized)

The accumulator tile (owt x ocb floats) is the compacted conv buffer between the conv and the fused
epilogue, which is computed at ow_outer; after unrolling LLVM keeps it in registers. The pad block stays
a separate parallel, vectorized loop nest.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import blocks_before, find_annotated_block, fuse_epilogue, loop_extent, schedule_spatial_block
from .packed_compute import CONV2D_PACKED, SYMBOLIC_ROWS
from .rule_base import CPURule
from .target_info import cpu_info
from .tiling import choose_register_tile


class Conv2D(CPURule):
    """Register-blocked direct convolution for `conv2d_nhwc_packed` blocks."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        conv = find_annotated_block(sch, CONV2D_PACKED)
        if conv is None:
            return None
        info = cpu_info(target)
        lanes = info.lanes(32)
        wpacked = sch.get(conv).reads[1].source
        ocb = int(wpacked.shape[4])
        n, oh, ow, oc, kh, kw, ic = sch.get_loops(conv)
        out_w = loop_extent(sch, ow) or SYMBOLIC_ROWS  # a symbolic width (dynamic shapes): see packed_compute
        tile = choose_register_tile(out_w, int(wpacked.shape[0]) * ocb, info, lanes)
        # The packed weight fixed ocb; re-derive the pixel count for that width if they disagree.
        owt = tile.rows if tile.channels == ocb else choose_register_tile(out_w, ocb, info, lanes).rows

        epilogue = fuse_epilogue(sch, conv, lanes)
        if epilogue is None:
            epilogue = sch.cache_write(conv, 0, "global")
        producers = blocks_before(sch, conv)

        owo, owi = sch.split(ow, factors=[None, owt])
        oco, oci = sch.split(oc, factors=[None, ocb])
        sch.reorder(n, oco, oh, owo, kh, kw, ic, owi, oci)
        outer = sch.fuse(n, oco, oh)
        sch.parallel(outer)
        sch.reverse_compute_at(epilogue, owo, preserve_unit_loops=True)
        # NOTE: vectorize before decompose_reduction: the update block alone is not a "local
        # reduction block", which vectorize requires; decompose_reduction keeps the loop kinds.
        sch.unroll(owi)
        sch.vectorize(oci)
        sch.decompose_reduction(conv, kh)
        ep_loops = sch.get_loops(epilogue)[2:]  # below (outer, owo)
        tile = sch.fuse(*ep_loops)
        _, vec = sch.split(tile, factors=[None, lanes])
        sch.vectorize(vec)
        for block in producers:
            schedule_spatial_block(sch, block, lanes)
        return sch
