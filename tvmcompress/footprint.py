"""The numbers an embedded engineer budgets with: runtime bytes, flash bytes, the ISA features a library was
compiled for, and the --max-ram / --max-flash checks against them.

flash_bytes = model.so + a separate weights file (when the artifact has one) + the TVM runtime libraries for the
target's architecture, as `tvmcompress export` ships them: libtvm_runtime.so + libtvm_ffi.so, plus
libtvm_runtime_extra.so where the wheel has one (x86-64, aarch64) and libtvm_runtime_cuda.so for CUDA.
RAM is `memory_plan.MemoryPlan.peak_activation_bytes`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping

from .config import Budgets
from .errors import TvmcompressError

# Target features worth telling an embedded engineer about: the SIMD / dot-product / float extensions kernels
# use. LLVM's full list (~60 names per CPU) is mostly scheduling hints such as "fast-15bytenop".
_ISA_FEATURES = (
    # x86
    "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni",
    "avx512bf16", "avx512fp16", "amx-tile", "amx-int8", "amx-bf16",
    # Arm (AArch64 and AArch32)
    "neon", "fp-armv8", "fullfp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "vfp3", "vfp4", "fp16",
    # RISC-V
    "m", "a", "f", "d", "c", "v", "zfh", "zvfh",
)


def isa_features(tvm_target: Mapping[str, Any]) -> list[str]:
    """The instruction-set extensions LLVM compiles the library for (mcpu's features plus mattr), in a fixed
    order; [] for non-LLVM targets (CUDA records its arch in the target instead)."""
    if tvm_target.get("kind") != "llvm":
        return []
    import tvm
    from tvm.target import codegen

    features = {str(name) for name in codegen.llvm_get_cpu_features(tvm.target.Target(dict(tvm_target)))}
    return [name for name in _ISA_FEATURES if name in features]


def _package_lib(package: str, name: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "lib" / name
        if path.is_file():
            return path
    return None


def runtime_libraries(arch: str, kind: str = "llvm") -> list[Path] | None:
    """The TVM runtime libraries a device of `arch` loads model.so with; None when they are not on this machine
    (a foreign runtime that `tvmcompress run` has not prepared yet)."""
    if arch in ("x86_64", "cuda"):
        paths = [_package_lib("tvm", "libtvm_runtime.so"), _package_lib("tvm_ffi", "libtvm_ffi.so")]
        if kind == "cuda":
            paths.append(_package_lib("tvm", "libtvm_runtime_cuda.so"))
        if None in paths:
            return None
        extra = _package_lib("tvm", "libtvm_runtime_extra.so")
        return paths + ([extra] if extra is not None else [])
    from .targets import runtime_cache

    lib = runtime_cache.runtime_dir(arch) / "lib"
    paths = [lib / "libtvm_runtime.so", lib / "libtvm_ffi.so"]
    if not all(p.is_file() for p in paths):
        return None
    return paths + [p for p in [lib / "libtvm_runtime_extra.so"] if p.is_file()]


def runtime_bytes(arch: str, kind: str = "llvm") -> int | None:
    paths = runtime_libraries(arch, kind)
    return None if paths is None else sum(os.path.getsize(p) for p in paths)


def flash_bytes(sizes: Mapping[str, Any]) -> int | None:
    """Library + separate weights file + runtime, from a manifest's `sizes`; None if the runtime size is unknown."""
    if sizes.get("runtime_bytes") is None:
        return None
    return int(sizes["library_bytes"]) + int(sizes.get("weights_file_bytes") or 0) + int(sizes["runtime_bytes"])


_NO_RUNTIME = (
    "cannot check --max-flash: the {arch} TVM runtime is not prepared on this machine; run any {arch} artifact "
    "once with `tvmcompress run` (it fetches or builds the runtime), then compile again"
)


def _over(what: str, measured: int, flag: str, budget: int, hint: str) -> TvmcompressError:
    over = measured - budget
    return TvmcompressError(
        f"{what} is {measured:,} bytes, over {flag} {budget:,} by {over:,} bytes ({100.0 * over / budget:.1f}%): {hint}"
    )


def check_runtime_fits(budgets: Budgets | None, runtime: int | None, arch: str) -> None:
    """Before the build: a runtime alone over --max-flash leaves room for no model at all, and a flash budget
    cannot be checked without the runtime's size."""
    if budgets is None or budgets.max_flash_bytes is None:
        return
    if runtime is None:
        raise TvmcompressError(_NO_RUNTIME.format(arch=arch))
    if runtime > budgets.max_flash_bytes:
        raise _over(
            f"the {arch} TVM runtime alone", runtime, "--max-flash", budgets.max_flash_bytes,
            "no model fits; raise the budget",
        )


def check_flash(budgets: Budgets, sizes: Mapping[str, Any], arch: str) -> None:
    if budgets.max_flash_bytes is None:
        return
    flash = flash_bytes(sizes)
    if flash is None:
        raise TvmcompressError(_NO_RUNTIME.format(arch=arch))
    if flash > budgets.max_flash_bytes:
        parts = f"library {int(sizes['library_bytes']):,} + runtime {int(sizes['runtime_bytes']):,}"
        if sizes.get("weights_file_bytes"):
            parts += f" + weights file {int(sizes['weights_file_bytes']):,}"
        raise _over(
            f"flash ({parts})", flash, "--max-flash", budgets.max_flash_bytes,
            "try --quantize int8 (4x smaller weights) or pruning, or raise the budget",
        )


def check_ram(budgets: Budgets, memory: Mapping[str, Any] | None) -> None:
    if budgets.max_ram_bytes is None:
        return
    if memory is None or memory.get("peak_activation_bytes") is None:
        raise TvmcompressError(
            "cannot check --max-ram: this build has no static memory plan (dynamic shapes?); fix the input "
            "shapes with --input-shape NAME=D1,D2,..."
        )
    peak = int(memory["peak_activation_bytes"])
    if peak > budgets.max_ram_bytes:
        raise _over(
            "peak activation memory", peak, "--max-ram", budgets.max_ram_bytes,
            "try a smaller --input-shape (batch or resolution) or --quantize int8, or raise the budget",
        )


def check_budgets(budgets: Budgets | None, manifest: Mapping[str, Any]) -> None:
    """Raise the first budget the artifact described by `manifest` exceeds (RAM first: it is the harder limit)."""
    if budgets is None:
        return
    check_ram(budgets, manifest.get("memory"))
    check_flash(budgets, manifest["sizes"], manifest["target"]["arch"])
