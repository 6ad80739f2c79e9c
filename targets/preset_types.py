"""The data types of a target preset (presets.py) and of a microcontroller board's toolchain (mcu_boards.py),
apart from both so that neither imports the other for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# How this machine checks a target's output. `qemu-*` and `native` run the model (armv7 and riscv64 on a TVM
# runtime built here from the sources the apache-tvm wheel ships; see targets/runtime_source_build.py);
# `link-check` can only verify the ELF header and symbols; `gpu` needs a CUDA device.
RUNNERS = ("native", "qemu-aarch64", "qemu-arm", "qemu-riscv64", "link-check", "gpu")


@dataclass(frozen=True)
class Toolchain:
    """A C++ compiler that links TVM's object files into a shared library for the target."""

    compiler: str  # executable name looked up on PATH
    debian_package: str  # what `apt-get install` needs when the compiler is missing


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    tvm_target: dict[str, Any]
    toolchain: Toolchain
    runner: str  # one of RUNNERS
    arch: str  # x86_64 | aarch64 | armv7 | riscv64 | cuda
    elf_machine: str  # what `readelf -h` prints as Machine for model.so
    aliases: tuple[str, ...] = field(default=())
    # Host CPU flags (targets.cpu_features names) that a native run needs; without them the library dies with SIGILL.
    requires: frozenset[str] = field(default=frozenset())
