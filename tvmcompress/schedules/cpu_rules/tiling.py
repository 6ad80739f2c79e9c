"""Register-tile choices shared by the packed legalization (which fixes the weight block) and the
Conv2D / Dense rules (which tile the loops to match).

A micro-kernel tile is `rows` outputs (pixels, or matrix rows) x `vectors` SIMD registers of output
channels. It keeps rows*vectors accumulators, `vectors` weight registers and one broadcast register
live, and must not spill: measured on znver3 (AVX2, 16 registers), a 7x2 tile that spills one
register ran at 36 GFLOPS against 81-85 GFLOPS for the spill-free 4x2 and 7x1 tiles.
"""

from __future__ import annotations

import dataclasses

from .target_info import CPUInfo

# Fewer accumulators than this leave the FMA pipes waiting on latency (2 pipes x 4 cycles).
MIN_ACCUMULATORS = 7
MAX_ROWS = 7  # measured on AVX2; the GEMM rules pass CPUInfo.max_gemm_rows (8 on NEON)


@dataclasses.dataclass(frozen=True)
class RegisterTile:
    rows: int
    vectors: int
    lanes: int

    @property
    def channels(self) -> int:
        return self.vectors * self.lanes


def _fits(rows: int, vectors: int, info: CPUInfo) -> bool:
    return rows * vectors + vectors + 1 <= info.vector_registers


def choose_register_tile(rows_extent: int, channels: int, info: CPUInfo, lanes: int,
                         max_rows: int = MAX_ROWS) -> RegisterTile:
    """Pick (rows dividing rows_extent, at most max_rows) x (vectors dividing channels) without spilling."""
    candidates = []
    for vectors in (2, 1):
        if channels % (vectors * lanes) != 0 and vectors != 1:
            continue
        for rows in range(min(max_rows, rows_extent), 0, -1):
            if rows_extent % rows == 0 and _fits(rows, vectors, info):
                candidates.append((rows * vectors >= MIN_ACCUMULATORS, vectors, rows))
                break
    # Enough accumulators first, then two vectors (fewer broadcasts per FMA), then more rows.
    enough, vectors, rows = max(candidates)
    return RegisterTile(rows=rows, vectors=vectors, lanes=lanes)
