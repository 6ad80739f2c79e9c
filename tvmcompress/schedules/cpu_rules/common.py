"""Schedule helpers shared by the CPU rules: block lookup, epilogue fusion, loop vectorization."""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from .packed_compute import SCHEDULE_KEY

# Below this many output elements a loop nest is not worth a parallel launch.
PARALLEL_MIN_ELEMENTS = 4096
# Outer iterations a parallel loop needs to share among the threads without one finishing far behind.
_PARALLEL_MIN_OUTER = 64


def loop_extent(sch: s_tir.Schedule, loop: LoopRV) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def root_blocks(sch: s_tir.Schedule) -> list[SBlockRV]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def find_annotated_block(sch: s_tir.Schedule, kind: str) -> SBlockRV | None:
    """The single root-level block whose `tvmcompress.schedule` annotation equals kind."""
    found = None
    for block in root_blocks(sch):
        value = sch.get(block).annotations.get(SCHEDULE_KEY)
        if value is not None and str(value) == kind:
            if found is not None:
                return None
            found = block
    return found


def is_opaque_block(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """A block that declares neither reads nor writes: its buffer accesses are hidden from the schedule."""
    stmt = sch.get(block)
    return not stmt.reads and not stmt.writes


def is_spatial_block(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    stmt = sch.get(block)
    return stmt.init is None and all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars)


def blocks_before(sch: s_tir.Schedule, block: SBlockRV) -> list[SBlockRV]:
    """The root blocks ahead of `block` in program order (its producers: pads, inlined-away casts, ...).
    Blocks are compared by name: the block RVs of two get() calls are different objects."""
    blocks = root_blocks(sch)
    return blocks[: [sch.get(b).name_hint for b in blocks].index(sch.get(block).name_hint)]


def fuse_epilogue(sch: s_tir.Schedule, main: SBlockRV, lanes: int) -> SBlockRV | None:
    """Inline every spatial block after `main` into one final consumer block and return it, ready to be computed
    per tile of `main` (reverse_compute_at) or to absorb `main` (compute_inline).

    Blocks are walked in program order; each spatial block that feeds later blocks is inlined into them
    (compute_inline). Returns None when there is no epilogue, when it cannot be reduced to a single block, or when
    that block does not read `main`'s output at a permutation of its own iteration point (see
    `reads_as_permutation`); in the last case the epilogue is scheduled as its own loop nest here and `main`
    writes its whole output first. Callers treat None as "no epilogue to fuse".
    """
    blocks = root_blocks(sch)
    after = blocks[len(blocks_before(sch, main)) + 1:]
    for block in after[:-1]:
        if not is_spatial_block(sch, block):
            return None
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            return None
    if not after:
        return None
    last = after[-1]
    if not is_spatial_block(sch, last):
        return None
    if reads_as_permutation(sch, last, sch.get(main).writes[0].source) is None:
        schedule_spatial_block(sch, last, lanes)
        return None
    return last


def reads_as_permutation(sch: s_tir.Schedule, block: SBlockRV, buffer: tirx.Buffer) -> tuple[int, ...] | None:
    """`perm` such that `block` reads `buffer[v[perm[0]], v[perm[1]], ...]` at its iteration point v, with each
    v[perm[d]] ranging over all of buffer dimension d (elementwise: the identity; a transpose: a permutation); or
    None when it reads `buffer` any other way.

    NOTE: this is what makes computing the block per tile of `buffer`'s producer (reverse_compute_at) correct.
    TVM derives the iterations to run per tile from the read index alone, so a block whose domain is larger than
    what it reads (a Concat of `buffer` with other tensors, a pad, a broadcast) would silently skip the iterations
    that read something else (issue 17: a YOLOv8 C2f Concat fused with a Winograd output transform left all but
    one input's channels unwritten), and a reshape's div/mod index is over-approximated into reads of elements
    not yet computed."""
    stmt = sch.get(block)
    iter_vars = [iv.var for iv in stmt.iter_vars]
    extents = [iv.dom.extent for iv in stmt.iter_vars]
    regions = [r for r in stmt.reads if r.source.same_as(buffer)]
    if len(regions) != 1 or len(regions[0].region) != len(iter_vars):
        return None
    perm = []
    for dim, rng in zip(buffer.shape, regions[0].region):
        if not (isinstance(rng.extent, tirx.IntImm) and int(rng.extent) == 1 and isinstance(rng.min, tirx.Var)):
            return None
        index = next((i for i, v in enumerate(iter_vars) if v.same_as(rng.min)), None)
        if index is None or index in perm:
            return None
        static = isinstance(extents[index], tirx.IntImm) and isinstance(dim, tirx.IntImm)
        if static and int(extents[index]) != int(dim):
            return None
        # Dynamic shapes: a symbolic extent must be the buffer's own symbolic dim.
        if not static and not tvm_ffi.structural_equal(extents[index], dim):
            return None
        perm.append(index)
    return tuple(perm)


def vectorize_innermost(sch: s_tir.Schedule, loop: LoopRV, lanes: int) -> None:
    """Vectorize `loop` when its extent is a multiple of the lanes (split first if larger)."""
    extent = loop_extent(sch, loop)
    if extent is None or extent < 2:
        return
    if extent <= lanes * 4 and extent % lanes == 0:
        sch.vectorize(loop)
    elif extent % lanes == 0:
        _, inner = sch.split(loop, factors=[None, lanes])
        sch.vectorize(inner)
    elif extent < lanes:
        sch.vectorize(loop)


def schedule_spatial_block(sch: s_tir.Schedule, block: SBlockRV, lanes: int, parallel: bool = True) -> None:
    """Injective treatment: fuse all loops, vectorize a SIMD-wide inner piece, parallelize the rest.

    `lanes`: 32-bit lanes per vector; a block writing 8- or 16-bit values (int8 padding, quantize) gets as many
    of those as fill the same register. A vector never straddles two rows of the innermost dimension: it is
    narrowed to divide that dimension (a vector across rows gathers per-channel operands and evaluates padding
    conditions lane by lane: int8 depthwise pads of 144 channels in 32-byte vectors ran 4x slower)."""
    loops = sch.get_loops(block)
    if not loops:
        return
    writes = sch.get(block).writes
    bits = tvm.DataType(str(writes[0].source.dtype)).bits if writes else 32
    if bits in (8, 16):
        lanes = lanes * 32 // bits
    extents = [loop_extent(sch, loop) for loop in loops]
    if None in extents:
        # Dynamic shapes: no split or fuse of a symbolic extent (TVM's affine analysis fails later on the
        # div/mod they leave, "padding factor ... not divisible"). The static loops before the first symbolic one
        # fuse and run in parallel (or the first loop alone); the innermost (channels, static) takes whole vectors.
        inner = loops[-1]
        if extents[-1] is not None and extents[-1] % lanes == 0:
            if extents[-1] > lanes:
                inner, vec = sch.split(inner, factors=[None, lanes])
                outer_loops = [*loops[:-1], inner]
            else:
                vec, outer_loops = inner, loops[:-1]
            sch.vectorize(vec)
        else:
            outer_loops = loops[:-1]
        if parallel and outer_loops:
            static = 0
            while static < len(outer_loops) and static < len(extents) and extents[static] is not None:
                static += 1
            prefix = outer_loops[:max(static, 1)]
            sch.parallel(sch.fuse(*prefix) if len(prefix) > 1 else prefix[0])
        return
    innermost = next((e for e in reversed(extents) if e != 1), 1)
    while lanes > 1 and innermost % lanes:
        lanes //= 2
    total = math.prod(extents)
    if parallel and len(loops) > 1 and lanes < 4 and total >= PARALLEL_MIN_ELEMENTS:
        # The innermost dimension takes no vector (e.g. an NCHW image to NHWC, 3 channels): parallel over
        # whole outer loops, the inner ones left as they are, so that indices are plain loop variables rather
        # than divisions and remainders of one fused index (3.8x faster on MobileNetV2's int8 input
        # transpose + quantize + pad).
        split = next(k for k in range(1, len(loops) + 1) if math.prod(extents[:k]) >= _PARALLEL_MIN_OUTER)
        if split < len(loops):
            sch.parallel(sch.fuse(*loops[:split]) if split > 1 else loops[0])
            return
    # `lanes` divides the innermost extent, so the fused loop splits into whole vectors.
    outer, inner = sch.split(sch.fuse(*loops) if len(loops) > 1 else loops[0], factors=[None, lanes])
    sch.vectorize(inner)
    if parallel and total >= PARALLEL_MIN_ELEMENTS and loop_extent(sch, outer) > 1:
        sch.parallel(outer)


def _loops_by_kind(sch: s_tir.Schedule, block: SBlockRV) -> tuple[list[LoopRV], list[LoopRV]] | None:
    """Spatial and reduction loops of an unscheduled block (one loop per block iter, same order)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars):
        return None
    spatial, reduce = [], []
    for loop, iv in zip(loops, stmt.iter_vars):
        if iv.iter_type == tirx.IterVar.DataPar:
            spatial.append(loop)
        elif iv.iter_type == tirx.IterVar.CommReduce:
            reduce.append(loop)
        else:
            return None
    return spatial, reduce


def innermost_output_is_last_spatial(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """Whether the output's innermost index is the block's last spatial iter (a unit-stride store)."""
    stmt = sch.get(block)
    spatial_vars = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    if not spatial_vars or not stmt.writes:
        return False
    last = stmt.writes[0].region[-1].min
    return isinstance(last, tirx.Var) and last.same_as(spatial_vars[-1])


def schedule_reduction_block(sch: s_tir.Schedule, block: SBlockRV, lanes: int) -> bool:
    """Generic reduction treatment; returns False when the loop nest is not a plain one.

    Channel-innermost reductions (pooling, mean over H and W in NHWC): spatial_outer / reduce /
    spatial_last (vectorized). Others: spatial (parallel) / reduce (serial).
    """
    kinds = _loops_by_kind(sch, block)
    if kinds is None:
        return False
    spatial, reduce = kinds
    if not reduce:
        schedule_spatial_block(sch, block, lanes)
        return True
    vector = None
    last_extent = loop_extent(sch, spatial[-1]) if spatial else None
    if spatial and innermost_output_is_last_spatial(sch, block) and last_extent and last_extent % lanes == 0:
        vector = spatial.pop()
        sch.reorder(*spatial, *reduce, vector)
        if last_extent > lanes:
            outer_c, vector = sch.split(vector, factors=[None, lanes])
            sch.reorder(*spatial, outer_c, *reduce, vector)
            spatial.append(outer_c)
    elif spatial:
        sch.reorder(*spatial, *reduce)
    total = 1
    for loop in spatial:
        total *= loop_extent(sch, loop) or PARALLEL_MIN_ELEMENTS
    if spatial:
        fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        if total * (lanes if vector is not None else 1) >= PARALLEL_MIN_ELEMENTS // 4 and total > 1:
            sch.parallel(fused)
    if vector is not None:
        sch.vectorize(vector)
    sch.decompose_reduction(block, reduce[0])
    return True
