"""int8 dot-product kernels for CPUs: int8/uint8 x int8 -> int32 matmuls and NHWC conv2ds on the target's dot
instruction (int8_intrinsics.py: AVX-512 VNNI vpdpbusd, AVX2 vpmaddubsw + vpmaddwd, aarch64 sdot).

Two pieces, used together:
- `make_int8_legalize_map(fallback)`: a `LegalizeOps` customization for
  - `relax.matmul` whose activation has the intrinsic's dtype, whose weight is an int8 constant [K, N] and whose
    out_dtype is int32: the weight is packed with numpy into [N/L, K/4, L, 4] (zero-padded to whole L-lane
    groups) and the compute block `int8_dot_product` is C[..., j] = sum_{ko, ki} A[..., 4 ko + ki] *
    Wp[j / L, ko, j % L, ki];
  - `relax.nn.conv2d` likewise with NHWC data (int8_conv.py: weight packed [O/L, KH, KW, C/4, L, 4]).
  On AVX2 a weight whose byte pairs could saturate vpmaddubsw (8-bit weights; the quantizer makes 7-bit ones
  for such targets) is not packed: it takes the exact fallback path. Anything else goes to `fallback` (or TVM's
  own legalization).
- `Int8DotProduct`: a dlight rule that finds those blocks and schedules them as register-tiled micro-kernels:

      parallel(batch, channel blocks, row/pixel blocks) / reduction (kh, kw, k/4) / rows (unrolled)
        / channel vectors (unrolled) / L lanes x 4 bytes (tensorized)

  with the fused epilogue (int32 bias, rescale, the next layer's requantize to 8 bits) computed per tile, so the
  int32 accumulators stay in registers and only 8-bit values reach memory. Apply it before the float rules.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import numpy as np
import tvm
from tvm import relax, s_tir, te
from tvm.s_tir import Schedule
from tvm.s_tir.dlight.base import ScheduleRule

from .cpu_rules.common import blocks_before, fuse_epilogue, loop_extent, root_blocks, schedule_spatial_block
from .cpu_rules.packed_compute import SCHEDULE_KEY
from .cpu_rules.target_info import cpu_info
from .int8_conv import INT8_CONV2D, legalize_int8_conv2d, legalize_int8_depthwise
from .int8_intrinsics import (
    AVX2, REDUCE, SDOT, VNNI, DotIntrin, dot_intrin_for, pairs_fit_int16, register_intrinsics,
)

__all__ = [
    "AVX2", "BLOCK_NAME", "DotIntrin", "Int8DotProduct", "VNNI", "SDOT", "dot_intrin_for", "make_int8_legalize_map",
    "pack_weight", "int8_scheme",
]

log = logging.getLogger(__name__)

BLOCK_NAME = "int8_dot_product"


def int8_scheme(config, preset):
    """The QuantizeConfig (passes/quantize_config.py) whose integer types the target's int8 dot product takes:
    uint8 activations on x86 (vpdpbusd / vpmaddubsw multiply uint8 by int8), int8 on ARM (sdot: int8 by int8);
    7-bit weights where the dot product sums byte pairs in saturating int16 (AVX2 without VNNI). Other modes and
    targets keep `config`. `preset` is a targets.presets.TargetPreset."""
    if config.mode not in ("int8", "dynamic-int8"):
        return config
    x86 = str(preset.tvm_target.get("mtriple", "x86_64")).startswith("x86_64")
    config = dataclasses.replace(config, activation_dtype="uint8" if x86 else "int8")
    is_llvm = preset.tvm_target.get("kind") == "llvm"
    intrin = dot_intrin_for(tvm.target.Target(preset.tvm_target)) if is_llvm else None
    if intrin is not None and intrin.int16_pairs and config.mode == "int8":
        # AVX2's vpmaddubsw saturates byte-pair sums to int16: 7-bit weights never do (int8_intrinsics.py).
        config = dataclasses.replace(config, weight_bits=7)
    if is_llvm and intrin is None:
        log.warning(
            "target %s has no fast int8 dot product (AVX2, AVX512-VNNI, or ARM dotprod): int8 layers will "
            "run on widening multiplies and may not beat float32; consider %s",
            preset.name, "x86-64-avx512" if x86 else "aarch64-dotprod",
        )
    return config
_MAX_TILE_ROWS = 8


def _packed_dot(a: te.Tensor, packed: te.Tensor, n: int, lanes: int) -> te.Tensor:
    *lead, k = (int(d) for d in a.shape)
    ko = te.reduce_axis((0, k // REDUCE), "ko")
    ki = te.reduce_axis((0, REDUCE), "ki")
    padded_n = int(packed.shape[0]) * lanes

    def dot(*index):
        *batch, j = index
        return te.sum(
            a[(*batch, ko * REDUCE + ki)].astype("int32")
            * packed[j // lanes, ko, j % lanes, ki].astype("int32"),
            axis=[ko, ki],
        )

    out = te.compute((*lead, padded_n), dot, name=BLOCK_NAME, attrs={SCHEDULE_KEY: BLOCK_NAME})
    if padded_n == n:
        return out
    return te.compute((*lead, n), lambda *index: out[index], name=f"{BLOCK_NAME}_slice")


def pack_weight(weight: np.ndarray, lanes: int) -> np.ndarray:
    """[K, N] int8 -> [ceil(N / lanes), K / 4, lanes, 4], padded with zero output channels."""
    k, n = weight.shape
    padded_n = -(-n // lanes) * lanes
    padded = np.zeros((k, padded_n), np.int8)
    padded[:, :n] = weight
    return np.ascontiguousarray(padded.T.reshape(padded_n // lanes, lanes, k // REDUCE, REDUCE).transpose(0, 2, 1, 3))


def make_int8_legalize_map(
    fallback: Mapping[str, Callable] | None = None, intrin: DotIntrin | None = None
) -> dict[str, Callable[[relax.BlockBuilder, relax.Call], relax.Expr]]:
    """A `customize_legalize_map` for LegalizeOps (run it under `with target:`).

    `fallback`: the map used for everything this one does not handle (e.g. packed_compute.legalize_map()).
    `intrin`: pack for this intrinsic whatever the target (tests use it to run the packed compute on a host
    without the instruction); by default the current target's intrinsic, and no packing if it has none.
    """
    fallback = dict(fallback or {})

    def chosen() -> DotIntrin | None:
        return intrin or dot_intrin_for(tvm.target.Target.current(allow_none=True))

    def otherwise(op_name: str, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if op_name in fallback:
            return fallback[op_name](bb, call)
        return tvm.ir.Op.get(op_name).get_attr("FLegalize")(bb, call)

    def legalize_matmul(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        dot = chosen()
        if dot is not None and _is_packable(call, dot):
            w = call.args[1].value.numpy()
            packed = pack_weight(w, dot.lanes)
            if not dot.int16_pairs or pairs_fit_int16(packed, dot.activation_dtype):
                return bb.call_te(
                    _packed_dot, call.args[0], relax.const(packed, "int8"), int(w.shape[1]), dot.lanes,
                    primfunc_name_hint="int8_dense",
                )
        return otherwise("relax.matmul", bb, call)

    def legalize_conv2d(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        dot = chosen()
        legalized = legalize_int8_conv2d(bb, call, dot) if dot is not None else None
        if legalized is None:  # depthwise: no channel reduction to dot; DepthwiseConv2D schedules it
            legalized = legalize_int8_depthwise(bb, call)
        return legalized if legalized is not None else otherwise("relax.nn.conv2d", bb, call)

    return {**fallback, "relax.matmul": legalize_matmul, "relax.nn.conv2d": legalize_conv2d}


def _is_packable(call: relax.Call, intrin: DotIntrin) -> bool:
    weight = call.args[1]
    if not isinstance(weight, tvm.ir.expr.Constant) or str(call.attrs.out_dtype) != "int32":
        return False
    w_ty, a_ty = weight.ty, call.args[0].ty
    if str(w_ty.dtype) != "int8" or len(w_ty.shape) != 2 or str(a_ty.dtype) != intrin.activation_dtype:
        return False
    shape = getattr(a_ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return False
    return int(w_ty.shape[0]) % REDUCE == 0


def choose_int8_tile(rows_extent: int, channel_vectors: int, intrin: DotIntrin, registers: int) -> tuple[int, int]:
    """(rows, vectors): rows dividing `rows_extent` x vectors (of L lanes) dividing `channel_vectors`, whose
    rows * vectors int32 accumulators, `vectors` weight registers and the intrinsic's scratch fit in `registers`
    (a spill in the inner loop costs more than a smaller tile).

    Per reduction step a tile loads `rows` broadcast activations and `vectors` weights for rows * vectors dot
    instructions: the most instructions per load wins, then the most accumulators. (4 x 2 ran 1.35x faster than
    8 x 1, and 2 x 2 1.4x faster than 7 x 1, on MobileNetV2's 1x1 convolutions with AVX2.)"""
    best = (0.0, 0, 1, 1)
    for vectors in (3, 2, 1):
        if channel_vectors % vectors:
            continue
        for rows in range(1, min(_MAX_TILE_ROWS, rows_extent) + 1):
            if rows_extent % rows == 0 and rows * vectors + vectors + intrin.scratch_registers <= registers:
                best = max(best, (rows * vectors / (rows + vectors), rows * vectors, rows, vectors))
    return best[2], best[3]


def _find_block(sch: Schedule, kind: str):
    found = [b for b in root_blocks(sch) if str(sch.get(b).annotations.get(SCHEDULE_KEY, "")) == kind]
    return found[0] if len(found) == 1 else None


def _inline_epilogue_inputs(sch: Schedule, block) -> None:
    """Inline the spatial blocks before `block` that it does not read itself (e.g. the float ReLU of a residual
    input that the epilogue adds): the epilogue computed per tile needs its producers inlined (reverse_compute_at
    requires them under the tile loop). `block`'s own inputs stay buffers, which tensorize needs."""
    own = [region.source for region in sch.get(block).reads]
    for producer in blocks_before(sch, block):
        if any(region.source.same_as(buffer) for region in sch.get(producer).writes for buffer in own):
            continue
        try:
            sch.compute_inline(producer)
        except s_tir.ScheduleError:
            pass  # stays a root loop nest; the rule then fails on it and the PrimFunc falls through


class Int8DotProduct(ScheduleRule):
    """Register-tiled, parallel int8 dense and conv2d on the target's dot instruction, epilogue fused per tile."""

    def apply(self, func, target: tvm.target.Target, _tunable: bool):
        intrin = dot_intrin_for(target)
        if intrin is None or not isinstance(func, tvm.tirx.PrimFunc):
            return None
        sch = Schedule(func)
        dense, conv = _find_block(sch, BLOCK_NAME), _find_block(sch, INT8_CONV2D)
        if (dense is None) == (conv is None):
            return None
        block = dense if dense is not None else conv
        lanes = int(sch.get(block).reads[1].source.shape[-2])
        if lanes != intrin.lanes:
            return None  # packed for another instruction (tests force a packing on a host without it)
        _inline_epilogue_inputs(sch, block)
        producers = blocks_before(sch, block)
        epilogue = fuse_epilogue(sch, block, cpu_info(target).lanes(32))
        if epilogue is None:
            epilogue = sch.cache_write(block, 0, "global")
        registers = cpu_info(target).vector_registers
        if dense is not None:
            *batch, rows, cols, ko, ki = sch.get_loops(block)
            reduce_loops = [ko]
        else:
            # NOTE: the tile runs along ow only (not a fused oh*ow): reverse_compute_at needs the tile's output
            # region to be a box, which a div/mod of a fused pixel index is not.
            n, oh, rows, cols, kh, kw, ko, ki = sch.get_loops(block)
            batch, reduce_loops = [n, oh], [kh, kw, ko]
        mt, vectors = choose_int8_tile(loop_extent(sch, rows), loop_extent(sch, cols) // lanes, intrin, registers)
        ro, ri = sch.split(rows, factors=[None, mt])
        co, cv, cl = sch.split(cols, factors=[None, vectors, lanes])
        if dense is not None:
            sch.reorder(*batch, co, ro, *reduce_loops, ri, cv, cl, ki)
            outer = tile_at = sch.fuse(*batch, co, ro)
            depth = 1  # loops down to tile_at
        else:
            sch.reorder(batch[0], co, batch[1], ro, *reduce_loops, ri, cv, cl, ki)
            outer, tile_at = sch.fuse(batch[0], co, batch[1]), ro
            depth = 2
        sch.parallel(outer)
        sch.reverse_compute_at(epilogue, tile_at, preserve_unit_loops=True)
        sch.unroll(ri)
        sch.unroll(cv)
        init = sch.decompose_reduction(block, reduce_loops[0])
        sch.vectorize(sch.get_loops(init)[-1])
        # NOTE: tensorize last: `parallel` rejects a loop nest holding the opaque block tensorize leaves.
        register_intrinsics()
        sch.tensorize(cl, intrin.name)
        f32_lanes = cpu_info(target).lanes(32)
        tile = sch.fuse(*sch.get_loops(epilogue)[depth:])
        extent = loop_extent(sch, tile)
        if extent is not None and extent % f32_lanes == 0:
            _, vec = sch.split(tile, factors=[None, f32_lanes])
            sch.vectorize(vec)
        for producer in producers:
            schedule_spatial_block(sch, producer, f32_lanes)
        return sch
