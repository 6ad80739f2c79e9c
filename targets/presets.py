"""Named target presets, and the resolution of a user's target spec into a `ResolvedTarget`.

A preset is data: the TVM target dict, the cross compiler that links its library, the Debian package that provides
that compiler, and how this machine verifies the output (natively, under qemu-user, on a GPU, or by a link check).
`resolve_target` also accepts a raw TVM target JSON, from which the same facts are derived by its triple.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tvmcompress.errors import TvmcompressError

from . import cpu_features

from .preset_types import RUNNERS, TargetPreset, Toolchain  # noqa: F401 - re-exported: presets.TargetPreset

_HOST_GXX = Toolchain("g++", "g++")
_AARCH64_GXX = Toolchain("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")
_ARMV7_GXX = Toolchain("arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf")
_RISCV64_GXX = Toolchain("riscv64-linux-gnu-g++", "g++-riscv64-linux-gnu")

_X86_TRIPLE = "x86_64-linux-gnu"
_AARCH64_TRIPLE = "aarch64-linux-gnu"
_ARMV7_TRIPLE = "armv7a-linux-gnueabihf"
_RISCV64_TRIPLE = "riscv64-linux-gnu"

# Defaults for a board we know nothing about: 4 cores is the common embedded ARM/RISC-V count.
_DEVICE_CORES = 4
DEFAULT_CUDA_ARCH = "sm_80"


def _static_presets() -> dict[str, TargetPreset]:
    presets = [
        TargetPreset(
            "x86-64",
            "x86-64 with AVX2 and FMA (x86-64-v3): Haswell and later, Zen and later",
            {"kind": "llvm", "mtriple": _X86_TRIPLE, "mcpu": "x86-64-v3", "num-cores": _DEVICE_CORES},
            _HOST_GXX,
            "native",
            "x86_64",
            "Advanced Micro Devices X86-64",
            requires=frozenset({"avx2", "fma"}),
        ),
        TargetPreset(
            "x86-64-avx512",
            "x86-64 with AVX-512 and VNNI (Cascade Lake / Ice Lake / Sapphire Rapids / Zen 4)",
            {"kind": "llvm", "mtriple": _X86_TRIPLE, "mcpu": "cascadelake", "num-cores": _DEVICE_CORES},
            _HOST_GXX,
            "native",
            "x86_64",
            "Advanced Micro Devices X86-64",
            requires=frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vnni"}),
        ),
        TargetPreset(
            "aarch64",
            "64-bit Arm (ARMv8-A) with NEON, Linux (Raspberry Pi 4/5, Jetson CPU, Graviton)",
            {"kind": "llvm", "mtriple": _AARCH64_TRIPLE, "mattr": ["+neon"], "num-cores": _DEVICE_CORES},
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
            aliases=("arm64",),
        ),
        TargetPreset(
            "aarch64-dotprod",
            "64-bit Arm (ARMv8.2-A) with NEON and the int8 dot product (sdot/udot): Cortex-A55/A76 and later",
            {
                "kind": "llvm",
                "mtriple": _AARCH64_TRIPLE,
                "mattr": ["+neon", "+v8.2a", "+dotprod"],
                "num-cores": _DEVICE_CORES,
            },
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
        ),
        # Boards: the generic presets with the board's core as `mcpu` (LLVM schedules and picks instructions
        # for it), and the features the core adds (the A76's int8 dot product).
        TargetPreset(
            "rpi3",
            "Raspberry Pi 3 (Cortex-A53, 64-bit OS): NEON",
            {"kind": "llvm", "mtriple": _AARCH64_TRIPLE, "mcpu": "cortex-a53", "mattr": ["+neon"], "num-cores": 4},
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
        ),
        TargetPreset(
            "rpi4",
            "Raspberry Pi 4 (Cortex-A72, 64-bit OS): NEON",
            {"kind": "llvm", "mtriple": _AARCH64_TRIPLE, "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 4},
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
        ),
        TargetPreset(
            "rpi5",
            "Raspberry Pi 5 (Cortex-A76, 64-bit OS): NEON, int8 dot product (sdot/udot), fp16",
            {"kind": "llvm", "mtriple": _AARCH64_TRIPLE, "mcpu": "cortex-a76",
             "mattr": ["+neon", "+v8.2a", "+dotprod", "+fullfp16"], "num-cores": 4},
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
        ),
        TargetPreset(
            "imx8m",
            "NXP i.MX 8M (Cortex-A53, Linux): NEON",
            {"kind": "llvm", "mtriple": _AARCH64_TRIPLE, "mcpu": "cortex-a53", "mattr": ["+neon"], "num-cores": 4},
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
            aliases=("imx8mm", "imx8mp"),
        ),
        TargetPreset(
            "jetson-orin-cpu",
            "NVIDIA Jetson Orin's CPU (Cortex-A78AE): NEON, int8 dot product, fp16",
            {"kind": "llvm", "mtriple": _AARCH64_TRIPLE, "mcpu": "cortex-a78",
             "mattr": ["+neon", "+v8.2a", "+dotprod", "+fullfp16"], "num-cores": 8},
            _AARCH64_GXX,
            "qemu-aarch64",
            "aarch64",
            "AArch64",
        ),
        TargetPreset(
            "armv7",
            "32-bit Arm (ARMv7-A) with NEON and VFPv4, hard-float ABI (Raspberry Pi 2/3 32-bit OS, Cortex-A7/A9)",
            {
                "kind": "llvm",
                "mtriple": _ARMV7_TRIPLE,
                "mattr": ["+neon", "+vfp4"],
                "mfloat-abi": "hard",
                "num-cores": _DEVICE_CORES,
            },
            _ARMV7_GXX,
            "qemu-arm",
            "armv7",
            "ARM",
            aliases=("armhf",),
        ),
        TargetPreset(
            "riscv64",
            "64-bit RISC-V, rv64gc, lp64d ABI, Linux",
            {
                "kind": "llvm",
                "mtriple": _RISCV64_TRIPLE,
                "mattr": ["+m", "+a", "+f", "+d", "+c"],
                "mabi": "lp64d",
                "num-cores": _DEVICE_CORES,
            },
            _RISCV64_GXX,
            "qemu-riscv64",
            "riscv64",
            "RISC-V",
        ),
    ]
    return {p.name: p for p in presets}


def host_preset() -> TargetPreset:
    """The machine we run on, with the best `mcpu` LLVM knows for it and all of its cores."""
    features = cpu_features.detect()
    target = {"kind": "llvm", "mtriple": _X86_TRIPLE, "mcpu": features.mcpu, "num-cores": features.cores}
    if features.llvm_mattr:  # what /proc/cpuinfo says and LLVM's host name may not imply (AMX, AVX512-BF16)
        target["mattr"] = features.llvm_mattr
    return TargetPreset(
        "host",
        f"this machine: {features.mcpu} ({', '.join(features.isa_summary()) or 'baseline x86-64'})",
        target,
        _HOST_GXX,
        "native",
        "x86_64",
        "Advanced Micro Devices X86-64",
    )


def cuda_preset(arch: str = DEFAULT_CUDA_ARCH) -> TargetPreset:
    # Two digits at least (major, minor: TVM's nvcc helper raises on "sm_1"), and sm_50 or newer (the oldest
    # that CUDA 12's nvcc compiles for).
    if not (arch.startswith("sm_") and arch[3:].isdigit() and len(arch) >= 5 and int(arch[3:]) >= 50):
        raise TvmcompressError(f"bad CUDA arch '{arch}': use the form cuda:sm_80 (sm_75, sm_86, sm_90, ...)")
    return TargetPreset(
        f"cuda:{arch}" if arch != DEFAULT_CUDA_ARCH else "cuda",
        f"NVIDIA GPU, compute capability {arch[3:-1]}.{arch[-1]}; device code compiled by nvcc into the library",
        {
            "kind": "cuda",
            "arch": arch,
            "host": {"kind": "llvm", "mtriple": _X86_TRIPLE, "mcpu": "x86-64-v3"},
        },
        _HOST_GXX,
        "gpu",
        "cuda",
        "Advanced Micro Devices X86-64",
    )


def list_presets() -> list[TargetPreset]:
    """Every named preset, `host` first, for `tvmcompress targets`."""
    return [host_preset(), *_static_presets().values(), cuda_preset()]


def _preset_from_json(spec: dict[str, Any]) -> TargetPreset:
    """A raw TVM target dict: derive toolchain and runner from its kind and triple."""
    kind = spec.get("kind")
    if kind == "cuda":
        base = cuda_preset(str(spec.get("arch", DEFAULT_CUDA_ARCH)))
        return dataclasses.replace(base, name="custom", description="raw TVM target JSON", tvm_target=spec)
    if kind != "llvm":
        raise TvmcompressError(
            f"target kind '{kind}' is not supported: use kind 'llvm' (CPU) or 'cuda', or a preset from `tvmcompress targets`"
        )
    triple = str(spec.get("mtriple", _X86_TRIPLE))
    by_arch = {"x86_64": "x86-64", "aarch64": "aarch64", "arm64": "aarch64", "armv7": "armv7", "riscv64": "riscv64"}
    for prefix, preset_name in by_arch.items():
        if triple.startswith(prefix):
            base = _static_presets()[preset_name]
            return dataclasses.replace(base, name="custom", description="raw TVM target JSON", tvm_target=spec, aliases=())
    raise TvmcompressError(
        f"target triple '{triple}' is not supported: use x86_64, aarch64, armv7a or riscv64 triples, or a preset"
    )


def resolve_preset(spec: str) -> TargetPreset:
    """A preset name (`host`, `aarch64`, `cuda:sm_86`, ...) or a raw TVM target JSON object."""
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            raw = json.loads(spec)
        except json.JSONDecodeError as err:
            raise TvmcompressError(f"target JSON does not parse ({err.msg} at column {err.colno}): check the quoting") from None
        if not isinstance(raw, dict):
            raise TvmcompressError("target JSON must be an object such as {\"kind\": \"llvm\", \"mtriple\": \"aarch64-linux-gnu\"}")
        return _preset_from_json(raw)
    if spec == "host":
        return host_preset()
    if spec == "cuda" or spec.startswith("cuda:"):
        return cuda_preset(spec.partition(":")[2] if ":" in spec else DEFAULT_CUDA_ARCH)
    presets = _static_presets()
    for preset in presets.values():
        if spec == preset.name or spec in preset.aliases:
            return preset
    from .mcu_boards import BOARDS  # local: mcu_boards imports this module

    if any(spec == board.name or spec in board.aliases for board in BOARDS.values()):
        raise TvmcompressError(
            f"'{spec}' is a microcontroller board, not a compile target: compile for the host, then "
            f"`tvmcompress export OUT -o BUNDLE --aot --board {spec}`"
        )
    names = ", ".join(["host", *presets, "cuda[:sm_XX]"])
    raise TvmcompressError(f"unknown target '{spec}': use one of {names}, or a TVM target JSON object")


def with_cores(preset: TargetPreset, cores: int | None) -> TargetPreset:
    """The preset with `num-cores` overridden (the device's core count drives parallel schedules)."""
    if cores is None or preset.tvm_target.get("kind") != "llvm":
        return preset
    if cores < 1:
        raise TvmcompressError(f"--cores must be at least 1, got {cores}")
    target = dict(preset.tvm_target, **{"num-cores": cores})
    return dataclasses.replace(preset, tvm_target=target)



def _plain(value: Any) -> Any:
    """TVM containers (Map, Array, String, IntImm) -> JSON-ready Python values."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "value") and not hasattr(value, "__len__"):  # IntImm / FloatImm
        return value.value
    return [_plain(v) for v in value]


def full_target_json(preset: TargetPreset) -> dict[str, Any]:
    """The complete TVM target, every default filled in, as the manifest records it."""
    import tvm  # local: listing presets must not need TVM's compiler stack

    return _plain(tvm.target.Target(preset.tvm_target).export())
