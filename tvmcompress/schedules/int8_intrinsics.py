"""int8 dot-product tensor intrinsics for CPUs: C[i] += sum_k A[k] * B[i, k] over L int32 lanes x 4 bytes.

- x86 AVX-512 VNNI: vpdpbusd, u8 x s8, L = 16 (TVM's `dot_16x4_vnni` description).
- aarch64 dotprod: sdot, s8 x s8, L = 4 (TVM's `dot_4x4_i8i8s32_sdot` description).
- x86 AVX2 (no VNNI): vpmaddubsw (u8 x s8 -> pairwise sums saturated to int16), vpmaddwd with ones (int16
  pairs -> int32), vpaddd; L = 8. Exact only while no pair sum a0 * w0 + a1 * w1 leaves int16: with uint8
  activations that holds for weights in [-64, 63] (255 * 63 * 2 = 32130, 255 * -64 * 2 = -32640), which is why
  the quantizer stores 7-bit weights for such targets (QuantizeConfig.weight_bits; ONNX Runtime's `reduce_range`,
  older TVM's x86 QNN do the same). `pairs_fit_int16` checks a weight exactly before it is packed for it.

`dot_intrin_for(target)` picks the fastest one the target has, or None.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import codegen

__all__ = ["AVX2", "DotIntrin", "SDOT", "VNNI", "REDUCE", "dot_intrin_for", "pairs_fit_int16", "register_intrinsics"]

REDUCE = 4  # every supported instruction sums 4 byte products per int32 lane


@dataclass(frozen=True)
class DotIntrin:
    name: str  # TensorIntrin name (registered by register_intrinsics)
    lanes: int  # int32 outputs per instruction
    activation_dtype: str
    instruction: str  # what to look for in the assembly
    # Whether the instruction sums byte-product pairs in saturating int16 (AVX2's vpmaddubsw): weights must keep
    # each pair sum within int16 (7-bit weights do), see pairs_fit_int16.
    int16_pairs: bool = False
    # Vector registers one instruction needs besides accumulators and weights (broadcast operand, constants,
    # temporaries): the register tile leaves them free.
    scratch_registers: int = 1


# NOTE: the intrinsics are defined here rather than imported from tvm.s_tir.tensor_intrin: importing any module
# of that package imports all of it (CUDA, ROCm, Hexagon, ...), which parses hundreds of TVMScript functions and
# takes 2-3 minutes on two shared cores. The descriptions are the same as TVM's x86 / arm_cpu ones.
#
# TVM 0.27's own `dot_16x4_vnni` also passes vpdpbusd's byte operands as <16 x i32>, while the LLVM it ships (22)
# declares them <64 x i8> (changed in LLVM 21) and rejects the call ("Call parameter type does not match
# function signature"); the implementation below passes bytes.


def _definitions() -> dict[str, tvm.tirx.PrimFunc]:
    """The intrinsics' TVMScript, parsed when called (see register_intrinsics)."""

    @T.prim_func(s_tir=True)
    def _dot_16x4_u8i8i32_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


    @T.prim_func(s_tir=True)
    def _dot_16x4_u8i8i32_vnni(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )


    @T.prim_func(s_tir=True)
    def _dot_8x4_u8i8i32_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((8, 4), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


    @T.prim_func(s_tir=True)
    def _dot_8x4_u8i8i32_avx2(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((8, 4), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            # vpmaddubsw: u8 x s8 products summed in pairs, saturated to int16 (exact for 7-bit weights).
            pairs = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(T.broadcast(a_i32, 8), dtype="uint8x32"),
                B.vload([0, 0], dtype="int8x32"),
                dtype="int16x16",
            )
            # vpmaddwd with ones: adjacent int16 pairs -> int32, exact.
            quads = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                pairs,
                T.broadcast(T.int16(1), 16),
                dtype="int32x8",
            )
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + quads


    @T.prim_func(s_tir=True)
    def _dot_4x4_i8i8i32_desc(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((4, 4), "int8", offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            for i in T.serial(0, 4):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


    @T.prim_func(s_tir=True)
    def _dot_4x4_i8i8i32_sdot(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((4, 4), "int8", offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a_i32 = T.reinterpret(A.vload([0], "int8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([0], dtype="int32x4"),
                T.reinterpret(T.broadcast(a_i32, 4), dtype="int8x16"),
                B.vload([0, 0], dtype="int8x16"),
                dtype="int32x4",
            )

    return {f.__name__: f for f in (
        _dot_16x4_u8i8i32_desc,
        _dot_16x4_u8i8i32_vnni,
        _dot_8x4_u8i8i32_desc,
        _dot_8x4_u8i8i32_avx2,
        _dot_4x4_i8i8i32_desc,
        _dot_4x4_i8i8i32_sdot,
    )}


_VNNI_NAME = "tvmcompress_dot_16x4_u8i8i32_vnni"
_AVX2_NAME = "tvmcompress_dot_8x4_u8i8i32_avx2"
_SDOT_NAME = "tvmcompress_dot_4x4_i8i8i32_sdot"
_PAIRS = {
    _VNNI_NAME: ("_dot_16x4_u8i8i32_desc", "_dot_16x4_u8i8i32_vnni"),
    _AVX2_NAME: ("_dot_8x4_u8i8i32_desc", "_dot_8x4_u8i8i32_avx2"),
    _SDOT_NAME: ("_dot_4x4_i8i8i32_desc", "_dot_4x4_i8i8i32_sdot"),
}


@functools.cache
def register_intrinsics() -> None:
    """Parse the TVMScript functions above and register them as tensor intrinsics; call before `tensorize`.

    Lazy because parsing is slow: each `T.prim_func` walks the caller's stack with `inspect.stack()`, ~0.5-1 s per
    function when it runs inside a deep import chain. At module level that was 6 s added to every compile,
    int8 or not (measured in a MobileNetV2 fp32 build's profile)."""
    funcs = _definitions()
    for name, (desc, impl) in _PAIRS.items():
        TensorIntrin.register(name, funcs[desc], funcs[impl], override=True)

VNNI = DotIntrin(_VNNI_NAME, 16, "uint8", "vpdpbusd")
# Scratch: the broadcast activation, the int16 ones, the vpmaddubsw result.
AVX2 = DotIntrin(_AVX2_NAME, 8, "uint8", "vpmaddubsw", int16_pairs=True, scratch_registers=3)
SDOT = DotIntrin(_SDOT_NAME, 4, "int8", "sdot")


def _triple(target: tvm.target.Target) -> str:
    return str(target.attrs.get("mtriple", "") or "") or codegen.llvm_get_system_triple()


def dot_intrin_for(target: tvm.target.Target | None) -> DotIntrin | None:
    """The fastest dot-product intrinsic `target` has, if any."""
    if target is None or target.kind.name != "llvm":
        return None
    triple = _triple(target)
    if triple.startswith(("x86_64", "i686")):
        if codegen.target_has_features("avx512vnni", target):
            return VNNI
        if codegen.target_has_features("avx2", target):
            return AVX2
        return None
    if triple.startswith(("aarch64", "arm64")) and codegen.target_has_features("dotprod", target):
        return SDOT
    return None


def pairs_fit_int16(packed_weight: np.ndarray, activation_dtype: str = "uint8") -> bool:
    """Whether every pair sum a0 * w0 + a1 * w1 that vpmaddubsw forms stays within int16 for any activation.

    `packed_weight`: int8, last axis the 4 bytes of one lane (pairs are bytes 0-1 and 2-3). Exact, so that an
    8-bit weight whose pairs happen to fit (or a pre-quantized model's) still takes the fast path."""
    if activation_dtype != "uint8":
        return False
    w = packed_weight.astype(np.int32).reshape(-1, 2)
    high = 255 * np.maximum(w, 0).sum(axis=1)
    low = 255 * np.minimum(w, 0).sum(axis=1)
    return bool(high.max(initial=0) <= 32767 and low.min(initial=0) >= -32768)
