"""DepthwiseConv2D rule: NHWC depthwise convolution vectorized over channels.

Matches a PrimFunc with one block annotated `depthwise_conv2d_nhwc` (weights packed [KH, KW, C]),
an optional pad producer and spatial epilogue blocks. Schedule per tile of `owt` pixels x `cb`
channels: parallel(n, oh) / c_outer / ow_outer / kh, kw / ow_inner (unrolled) / c_inner (vectorized),
with the epilogue computed at the tile.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .common import blocks_before, find_annotated_block, fuse_epilogue, loop_extent, schedule_spatial_block
from .packed_compute import DEPTHWISE_PACKED
from .rule_base import CPURule
from .target_info import cpu_info
from .tiling import choose_register_tile


class DepthwiseConv2D(CPURule):
    """Channel-vectorized depthwise convolution for `depthwise_conv2d_nhwc` blocks."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        conv = find_annotated_block(sch, DEPTHWISE_PACKED)
        if conv is None:
            return None
        info = cpu_info(target)
        lanes = info.lanes(32)
        n, oh, ow, c, kh, kw = sch.get_loops(conv)
        channels, out_w = loop_extent(sch, c), loop_extent(sch, ow)
        if channels % lanes != 0:
            return None
        tile = choose_register_tile(out_w, channels, info, lanes)
        epilogue = fuse_epilogue(sch, conv, lanes)
        if epilogue is None:
            epilogue = sch.cache_write(conv, 0, "global")
        producers = blocks_before(sch, conv)
        owo, owi = sch.split(ow, factors=[None, tile.rows])
        co, ci = sch.split(c, factors=[None, tile.channels])
        sch.reorder(n, oh, co, owo, kh, kw, owi, ci)
        outer = sch.fuse(n, oh)
        sch.parallel(outer)
        sch.reverse_compute_at(epilogue, owo, preserve_unit_loops=True)
        sch.unroll(owi)
        sch.vectorize(ci)
        sch.decompose_reduction(conv, kh)
        ep_tile = sch.fuse(*sch.get_loops(epilogue)[3:])
        _, vec = sch.split(ep_tile, factors=[None, lanes])
        sch.vectorize(vec)
        for block in producers:
            schedule_spatial_block(sch, block, lanes)
        return sch
