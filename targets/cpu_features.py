"""Detect the host CPU's SIMD features, so that `host` gets the best `mcpu` and int8/bf16 paths are chosen honestly.

The ISA flags come from /proc/cpuinfo (what the kernel says the CPU runs), the `mcpu` name from LLVM's own host
detection. A target built with an `mcpu` whose instructions the host lacks dies with SIGILL, which is why `host`
never guesses.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

# /proc/cpuinfo flag -> our feature name. Sources: the Linux kernel's arch/x86/include/asm/cpufeatures.h names.
_X86_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512vnni",
    "avx_vnni": "avxvnni",
    "avx512_bf16": "avx512bf16",
    "avx512_fp16": "avx512fp16",
    "amx_tile": "amx-tile",
    "amx_int8": "amx-int8",
    "amx_bf16": "amx-bf16",
    "f16c": "f16c",
}

# Features that an `mcpu` name may lack although the CPU has them (see CpuFeatures.llvm_mattr). AVX2/FMA/F16C are
# in every mcpu LLVM detects for a CPU that has them.
_BEYOND_AVX2 = frozenset({"avx512f", "avx512bw", "avx512vnni", "avxvnni", "avx512bf16", "avx512fp16", "amx-tile",
                          "amx-int8", "amx-bf16"})


@dataclass(frozen=True)
class CpuFeatures:
    mcpu: str
    cores: int
    flags: frozenset[str]

    @property
    def has_int8_dot(self) -> bool:
        """A fast int8 dot product: AVX512-VNNI / AVX-VNNI (vpdpbusd) or AMX-int8 (tdpbusd)."""
        return bool(self.flags & {"avx512vnni", "avxvnni", "amx-int8"})

    @property
    def vector_bits(self) -> int:
        return 512 if "avx512f" in self.flags else 256 if "avx2" in self.flags else 128

    @property
    def llvm_mattr(self) -> list[str]:
        """`mattr` for the features beyond AVX2 that the CPU reports. LLVM's host name can lag the CPU: a Sapphire
        Rapids (AMX, AVX512-BF16/FP16) whose model LLVM does not know gets `rocketlake`, which has none of them.
        Our feature names are LLVM's, and each comes from /proc/cpuinfo, so none can be one the CPU lacks."""
        return [f"+{name}" for name in sorted(self.flags & _BEYOND_AVX2)]

    def isa_summary(self) -> list[str]:
        order = ["avx2", "fma", "avx512f", "avx512vnni", "avxvnni", "avx512bf16", "amx-int8", "amx-bf16"]
        return [name for name in order if name in self.flags]


def _read_cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    raw = set(line.split(":", 1)[1].split())
                    return frozenset(ours for theirs, ours in _X86_FLAGS.items() if theirs in raw)
    except OSError:
        pass
    return frozenset()


def _available_cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def physical_cores(sysfs: str = "/sys/devices/system/cpu") -> int:
    """Cores this process may run on, counting SMT siblings (hyperthreads) of one core once.

    Read from sysfs `topology/thread_siblings_list`; without it, every logical CPU counts."""
    cpus = _available_cpus()
    groups = set()
    for cpu in cpus:
        try:
            with open(f"{sysfs}/cpu{cpu}/topology/thread_siblings_list", encoding="utf-8") as f:
                groups.add(f.read().strip())
        except OSError:
            groups.add(f"cpu{cpu}")
    return max(len(groups), 1)


@functools.lru_cache(maxsize=1)
def detect() -> CpuFeatures:
    from tvm.target import codegen  # local: importing tvm is slow, and presets are listed without a build

    mcpu = codegen.llvm_get_system_cpu()
    if mcpu in ("", "generic"):
        mcpu = "x86-64"
    return CpuFeatures(mcpu=mcpu, cores=len(_available_cpus()), flags=_read_cpuinfo_flags())
