"""What the CPU rules need to know about an LLVM target: SIMD width, register count, cores.

`tvm.target.codegen.llvm_get_vector_width` reports 512 bits for AVX2-only x86 CPUs in TVM 0.27
(haswell, znver3), so for x86 the width is read from the target's features instead.
"""

from __future__ import annotations

import dataclasses

import tvm
from tvm.target import Target
from tvm.target import codegen


@dataclasses.dataclass(frozen=True)
class CPUInfo:
    """SIMD and core facts of one LLVM target, as the rules use them."""

    vector_bits: int
    vector_registers: int
    num_cores: int
    # Most rows of a GEMM register tile (Dense, MatMul; tiling.choose_register_tile). 7 was measured on AVX2
    # (16 registers). NEON has 32 registers of 4 floats: counted under qemu with the aarch64 lab
    # (bench/bench_aarch64.py), the encoder's 4-row x 2-vector dense tile ran 18 instructions per 8 FMAs
    # (4 broadcasts, 2 weight loads, loop control); with 8 rows the encoder executes 16% fewer instructions and
    # an estimated 3% (A72) to 18% (Neoverse-N1) fewer cycles. Convolutions keep 7: 8 rows made MobileNetV2's
    # convolutions 6% slower on the same estimate.
    max_gemm_rows: int = 7

    def lanes(self, dtype_bits: int = 32) -> int:
        return max(self.vector_bits // dtype_bits, 1)


def _is_x86(target: Target) -> bool:
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple:
        return triple.startswith(("x86_64", "i386", "i686"))
    return codegen.llvm_get_system_triple().startswith("x86_64")


def _is_aarch64(target: Target) -> bool:
    triple = str(target.attrs.get("mtriple", "") or "") or codegen.llvm_get_system_triple()
    return triple.startswith(("aarch64", "arm64"))


def cpu_info(target: Target) -> CPUInfo:
    """Read SIMD width, vector register count and core count from an LLVM target."""
    num_cores = int(target.attrs.get("num-cores", 0) or 0) or 1
    if _is_x86(target):
        if codegen.target_has_features("avx512f", target):
            return CPUInfo(512, 32, num_cores)
        if codegen.target_has_features("avx", target):
            return CPUInfo(256, 16, num_cores)
        return CPUInfo(128, 16, num_cores)
    if _is_aarch64(target):
        return CPUInfo(128, 32, num_cores, max_gemm_rows=8)  # NEON (SVE is not used by these rules)
    bits = codegen.llvm_get_vector_width(target)
    return CPUInfo(bits if bits and bits > 0 else 128, 16, num_cores)


def current_cpu_info() -> CPUInfo:
    return cpu_info(Target.current(allow_none=False))


__all__ = ["CPUInfo", "cpu_info", "current_cpu_info", "tvm"]
