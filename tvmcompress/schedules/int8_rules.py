"""int8 dot-product kernels for CPUs: int8/uint8 x int8 -> int32 matmuls on the target's dot instructions.

Two pieces, used together:
- `make_int8_legalize_map(fallback)`: a `LegalizeOps` customization for `relax.matmul` whose activation is
  int8/uint8, whose weight is an int8 constant [K, N] and whose out_dtype is int32. It packs the weight with
  numpy into [N/L, K/4, L, 4] (zero-padded to whole L-lane groups) and emits a compute block named
  `int8_dot_product`: C[..., j] = sum_{ko, ki} A[..., 4 ko + ki] * Wp[j / L, ko, j % L, ki]. Anything else goes to
  `fallback` (or TVM's own legalization).
- `Int8DotProduct`: a dlight rule that finds that block and tensorizes it with TVM's registered intrinsic:
  x86 AVX-512 VNNI (vpdpbusd, u8 x s8, L = 16) or aarch64 dotprod (sdot, s8 x s8, L = 4), with the descriptions
  of TVM's `dot_16x4_vnni` / `dot_4x4_i8i8s32_sdot`. Apply it before rules that match generic matmuls.

Conv2d needs no rule for the instructions to appear: LLVM already turns the legalized int8 conv2d (u8 x s8
on x86-avx512vnni, s8 x s8 on aarch64-dotprod) into vpdpbusd / sdot by itself (checked on TVM 0.27 / its LLVM),
in both TVM's default CPU pipeline and tvmcompress.cpu_pipeline. The plain int8 matmul it turns into vpmaddwd
on x86, hence this rule.

The activation dtype must be the one the instruction takes (QuantizeConfig.activation_dtype: "uint8" for VNNI,
"int8" for sdot); otherwise the matmul stays on the fallback path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te
from tvm.s_tir import Schedule, TensorIntrin
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.script import tirx as T
from tvm.target import codegen

__all__ = [
    "BLOCK_NAME", "DotIntrin", "Int8DotProduct", "VNNI", "SDOT", "dot_intrin_for", "make_int8_legalize_map",
    "pack_weight",
]

BLOCK_NAME = "int8_dot_product"
_REDUCE = 4  # every supported instruction sums 4 products per lane


@dataclass(frozen=True)
class DotIntrin:
    name: str  # TensorIntrin name (registered below)
    lanes: int  # int32 outputs per instruction
    activation_dtype: str
    instruction: str  # what to look for in the assembly


# NOTE: the intrinsics are defined here rather than imported from tvm.s_tir.tensor_intrin: importing any module
# of that package imports all of it (CUDA, ROCm, Hexagon, ...), which parses hundreds of TVMScript functions and
# takes 2-3 minutes on two shared cores. The descriptions are the same as TVM's x86 / arm_cpu ones.
#
# TVM 0.27's own `dot_16x4_vnni` also passes vpdpbusd's byte operands as <16 x i32>, while the LLVM it ships (22)
# declares them <64 x i8> (changed in LLVM 21) and rejects the call ("Call parameter type does not match
# function signature"); the implementation below passes bytes.


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


_VNNI_NAME = "tvmcompress_dot_16x4_u8i8i32_vnni"
_SDOT_NAME = "tvmcompress_dot_4x4_i8i8i32_sdot"
TensorIntrin.register(_VNNI_NAME, _dot_16x4_u8i8i32_desc, _dot_16x4_u8i8i32_vnni, override=True)
TensorIntrin.register(_SDOT_NAME, _dot_4x4_i8i8i32_desc, _dot_4x4_i8i8i32_sdot, override=True)

VNNI = DotIntrin(_VNNI_NAME, 16, "uint8", "vpdpbusd")
SDOT = DotIntrin(_SDOT_NAME, 4, "int8", "sdot")


def _triple(target: tvm.target.Target) -> str:
    return str(target.attrs.get("mtriple", "") or "") or codegen.llvm_get_system_triple()


def dot_intrin_for(target: tvm.target.Target | None) -> DotIntrin | None:
    """The dot-product intrinsic `target` has, if any."""
    if target is None or target.kind.name != "llvm":
        return None
    triple = _triple(target)
    if triple.startswith(("x86_64", "i686")) and codegen.target_has_features("avx512vnni", target):
        return VNNI
    if triple.startswith(("aarch64", "arm64")) and codegen.target_has_features("dotprod", target):
        return SDOT
    return None


def _packed_dot(a: te.Tensor, packed: te.Tensor, n: int, lanes: int) -> te.Tensor:
    *lead, k = (int(d) for d in a.shape)
    ko = te.reduce_axis((0, k // _REDUCE), "ko")
    ki = te.reduce_axis((0, _REDUCE), "ki")
    padded_n = int(packed.shape[0]) * lanes

    def dot(*index):
        *batch, j = index
        return te.sum(
            a[(*batch, ko * _REDUCE + ki)].astype("int32")
            * packed[j // lanes, ko, j % lanes, ki].astype("int32"),
            axis=[ko, ki],
        )

    out = te.compute((*lead, padded_n), dot, name=BLOCK_NAME)
    if padded_n == n:
        return out
    return te.compute((*lead, n), lambda *index: out[index], name=f"{BLOCK_NAME}_slice")


def pack_weight(weight: np.ndarray, lanes: int) -> np.ndarray:
    """[K, N] int8 -> [ceil(N / lanes), K / 4, lanes, 4], padded with zero output channels."""
    k, n = weight.shape
    padded_n = -(-n // lanes) * lanes
    padded = np.zeros((k, padded_n), np.int8)
    padded[:, :n] = weight
    return np.ascontiguousarray(padded.T.reshape(padded_n // lanes, lanes, k // _REDUCE, _REDUCE).transpose(0, 2, 1, 3))


def make_int8_legalize_map(
    fallback: Mapping[str, Callable] | None = None, intrin: DotIntrin | None = None
) -> dict[str, Callable[[relax.BlockBuilder, relax.Call], relax.Expr]]:
    """A `customize_legalize_map` for LegalizeOps (run it under `with target:`).

    `fallback`: the map used for everything this one does not handle (e.g. cpu_rules' LEGALIZE_MAP).
    `intrin`: pack for this intrinsic whatever the target (tests use it to run the packed compute on a host
    without the instruction); by default the current target's intrinsic, and no packing if it has none.
    """
    fallback = dict(fallback or {})

    def legalize_matmul(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        chosen = intrin or dot_intrin_for(tvm.target.Target.current(allow_none=True))
        weight = call.args[1]
        if chosen is not None and _is_packable(call, chosen):
            w = weight.value.numpy()
            packed = relax.const(pack_weight(w, chosen.lanes), "int8")
            return bb.call_te(
                _packed_dot, call.args[0], packed, int(w.shape[1]), chosen.lanes, primfunc_name_hint="int8_dense"
            )
        if "relax.matmul" in fallback:
            return fallback["relax.matmul"](bb, call)
        return tvm.ir.Op.get("relax.matmul").get_attr("FLegalize")(bb, call)

    return {**fallback, "relax.matmul": legalize_matmul}


def _is_packable(call: relax.Call, intrin: DotIntrin) -> bool:
    weight = call.args[1]
    if not isinstance(weight, tvm.ir.expr.GenericConst) or str(call.attrs.out_dtype) != "int32":
        return False
    w_ty, a_ty = weight.ty, call.args[0].ty
    if str(w_ty.dtype) != "int8" or len(w_ty.shape) != 2 or str(a_ty.dtype) != intrin.activation_dtype:
        return False
    shape = getattr(a_ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) or hasattr(d, "value") for d in shape):
        return False
    return int(w_ty.shape[0]) % _REDUCE == 0


class Int8DotProduct(ScheduleRule):
    """Tensorize the `int8_dot_product` block of a PrimFunc with the target's dot instruction."""

    def apply(self, func, target: tvm.target.Target, _tunable: bool):
        intrin = dot_intrin_for(target)
        if intrin is None or not isinstance(func, tvm.tirx.PrimFunc):
            return None
        sch = Schedule(func)
        try:
            block = sch.get_sblock(BLOCK_NAME)
        except Exception:  # noqa: BLE001 - get_sblock raises a generic error when the block is absent
            return None
        *lead, j, ko, ki = sch.get_loops(block)
        jo, ji = sch.split(j, [None, intrin.lanes])
        sch.reorder(*lead, jo, ko, ji, ki)
        sch.decompose_reduction(block, ko)
        sch.tensorize(ji, intrin.name)
        # NOTE: no parallel loop: after tensorize the loop nest holds an opaque block, which `parallel` rejects
        # as not "compact dataflow". A blockize-then-parallel schedule is future work (speed, not correctness).
        return sch
