"""Microcontroller boards: what `tvmcompress export --aot --board NAME` builds a firmware for.

A board is data: the TVM target of its core (the kernels), the flags of Debian's gcc-arm-none-eabi for the
same core and float ABI (our C files and the firmware), where its memories are, and the qemu-system-arm
machine that emulates it. Microcontrollers have no OS and no dynamic loader, so they are not `compile`
targets: a model is compiled for the host (which verifies it), and its saved Relax module is lowered again
for the board's core at export time.

Memory maps (QEMU's models of Arm's FPGA images; the vector table is read from address 0 at reset):
- MPS2 AN386 (Cortex-M4): 4 MiB SSRAM1 at 0x00000000 (code), 4 MiB SSRAM2/3 at 0x20000000 (data).
- MPS2 AN500 (Cortex-M7): the same layout.
- MPS3 AN547 (Cortex-M55): 512 KiB ITCM at 0x00000000 (code), 512 KiB DTCM at 0x20000000 (data).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from tvmcompress.errors import TvmcompressError

from .preset_types import TargetPreset, Toolchain

_ARM_NONE_EABI = Toolchain("arm-none-eabi-g++", "gcc-arm-none-eabi")


@dataclass(frozen=True)
class McuBoard:
    name: str
    description: str
    tvm_target: dict[str, Any]
    gcc_flags: tuple[str, ...]  # -mcpu/-mfpu/-mfloat-abi for arm-none-eabi-gcc, matching tvm_target's ABI
    qemu_machine: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    features: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    def preset(self) -> TargetPreset:
        """The board as a TargetPreset, for the export helpers (toolchain prefix, binutils)."""
        return TargetPreset(self.name, self.description, self.tvm_target, _ARM_NONE_EABI, "qemu-system-arm",
                            "cortex-m", "ARM")


BOARDS = {
    board.name: board
    for board in [
        McuBoard(
            "cortex-m4",
            "Arm Cortex-M4F (ARMv7E-M: DSP, single-precision FPU), bare metal; runs on qemu's MPS2 AN386",
            {"kind": "llvm", "mtriple": "thumbv7em-none-eabihf", "mcpu": "cortex-m4", "mfloat-abi": "hard",
             "num-cores": 1},
            ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
            "mps2-an386", 0x00000000, 4 << 20, 0x20000000, 4 << 20,
            ("thumbv7em", "dsp", "fpv4-sp"),
            aliases=("mps2-an386",),
        ),
        McuBoard(
            "cortex-m7",
            "Arm Cortex-M7 (ARMv7E-M: DSP, double-precision FPU), bare metal; runs on qemu's MPS2 AN500",
            {"kind": "llvm", "mtriple": "thumbv7em-none-eabihf", "mcpu": "cortex-m7", "mfloat-abi": "hard",
             "num-cores": 1},
            ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
            "mps2-an500", 0x00000000, 4 << 20, 0x20000000, 4 << 20,
            ("thumbv7em", "dsp", "fpv5-dp"),
            aliases=("mps2-an500",),
        ),
        McuBoard(
            "cortex-m55",
            "Arm Cortex-M55 (ARMv8.1-M: Helium/MVE, FPU), bare metal; runs on qemu's MPS3 AN547",
            {"kind": "llvm", "mtriple": "thumbv8.1m.main-none-eabihf", "mcpu": "cortex-m55", "mfloat-abi": "hard",
             "num-cores": 1},
            ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
            "mps3-an547", 0x00000000, 512 << 10, 0x20000000, 512 << 10,
            ("thumbv8.1m", "mve.fp", "dsp"),
            aliases=("mps3-an547",),
        ),
    ]
}


def resolve_board(name: str) -> McuBoard:
    for board in BOARDS.values():
        if name == board.name or name in board.aliases:
            return board
    raise TvmcompressError(f"unknown board '{name}': use one of {', '.join(BOARDS)}")


def missing_board_tool(board: McuBoard) -> str | None:
    """None if the toolchain and qemu for `board` are here, else what to install (one line)."""
    if shutil.which("arm-none-eabi-gcc") is None:
        return "arm-none-eabi-gcc not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
    if shutil.which("qemu-system-arm") is None:
        return "qemu-system-arm not found: apt-get install qemu-system-arm"
    return None
