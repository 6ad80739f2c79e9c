"""Bare-metal firmware of an AOT model for a microcontroller board, built with gcc-arm-none-eabi and run under
qemu-system-arm with semihosting (host files in.bin / out.bin in the working directory).

The bundle's firmware/ holds our start-up code (vector table, reset handler, semihosting I/O, stack painting:
deploy_templates/mcu_startup.c), a linker script for the board's memories and a main.c that runs the model
once in a static arena. The link uses newlib-nano only for memcpy/memset/libm and defines no _sbrk: a heap
allocation anywhere would fail the link, which is how "no heap" is checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TvmcompressError

if TYPE_CHECKING:
    from ..artifact import Artifact
    from ..targets.mcu_boards import McuBoard
    from .program import AotProgram

TEMPLATES = Path(__file__).parent.parent / "deploy_templates"
FIRMWARE_DIR = "firmware"
STACK_BYTES = 8192  # reserved (and painted) for main + the kernels; what they use is measured, see run_firmware


@dataclass(frozen=True)
class FirmwareRun:
    stack_bytes: int  # high-water mark of the stack during the model's run (painting, see mcu_startup.c)
    stdout: str


@dataclass(frozen=True)
class FirmwareSize:
    flash_bytes: int  # .text (code + const data, vector table) + .ARM.exidx + .data's initial values
    static_ram_bytes: int  # .data + .bss (the arena and the I/O buffers), without the stack reservation


def write_firmware(root: Path, board: "McuBoard", name: str, artifact: "Artifact", program: "AotProgram") -> None:
    from ..deploy import _byte_size, _name_values, _write_template

    firmware = root / FIRMWARE_DIR
    firmware.mkdir()
    shutil.copyfile(TEMPLATES / "mcu_startup.c", firmware / "mcu_startup.c")
    shutil.copyfile(TEMPLATES / "mcu_startup.h", firmware / "mcu_startup.h")
    values = {
        **_name_values(name), "board": board.name,
        "input_bytes": str(max(1, sum(_byte_size(spec) for spec in artifact.inputs))),
        "output_bytes": str(max(1, sum(_byte_size(spec) for spec in artifact.outputs))),
    }
    _write_template("mcu_main.c.in", firmware / "main.c", values)
    _write_template("mcu.ld.in", firmware / "board.ld", {
        **values, "flash_origin": hex(board.flash_origin), "flash_bytes": str(board.flash_bytes),
        "ram_origin": hex(board.ram_origin), "ram_bytes": str(board.ram_bytes), "stack_bytes": str(STACK_BYTES),
    })


def build_firmware(bundle: Path, board: "McuBoard", output: Path, name: str | None = None) -> FirmwareSize:
    """Link firmware/ and lib<name>.a into an ELF image for the board; returns its size. `name`: the model's
    C name (default: read from bundle.json)."""
    name = name or _bundle_name(bundle)
    firmware = bundle / FIRMWARE_DIR
    command = [
        "arm-none-eabi-gcc", *board.gcc_flags, "-std=c99", "-Os", "-Wall", "-Werror", "-g0", "-ffunction-sections",
        "-fdata-sections", "-nostartfiles", "--specs=nano.specs", "-T", str(firmware / "board.ld"),
        "-Wl,--gc-sections", "-I", str(bundle), "-I", str(firmware), str(firmware / "main.c"),
        str(firmware / "mcu_startup.c"), str(bundle / f"lib{name}.a"), "-lm", "-lc", "-lgcc", "-o", str(output),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"linking the firmware failed:\n{' '.join(command)}\n{result.stderr}")
    return firmware_size(output)


def firmware_size(elf: Path) -> FirmwareSize:
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {parts[0]: int(parts[1]) for parts in (line.split() for line in out.splitlines())
             if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit()}
    flash = sizes.get(".text", 0) + sizes.get(".ARM.exidx", 0) + sizes.get(".data", 0)
    return FirmwareSize(flash, sizes.get(".data", 0) + sizes.get(".bss", 0))


def run_firmware(board: "McuBoard", elf: Path, workdir: Path, timeout: float = 300) -> FirmwareRun:
    """Run the firmware once under qemu-system-arm in `workdir` (which holds in.bin; out.bin appears there)."""
    command = ["qemu-system-arm", "-M", board.qemu_machine, "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=timeout)
    if result.returncode != 0:
        raise TvmcompressError(f"the firmware failed on {board.qemu_machine} (exit {result.returncode}): "
                               f"{(result.stdout + result.stderr).strip()[-400:]}")
    output = result.stdout + result.stderr  # qemu sends semihosting output to stderr when not on a terminal
    match = re.search(r"stack_bytes (\d+)", output)
    if match is None:
        raise RuntimeError(f"the firmware printed no stack_bytes line: {output!r}")
    return FirmwareRun(int(match.group(1)), output)


def measure_firmware(root: Path, board: "McuBoard", name: str, input_bytes: int, work: Path) -> dict[str, Any]:
    """Build the firmware and run it once on zeros under qemu: {firmware_flash_bytes, firmware_static_ram_bytes,
    stack_bytes}; the stack is None (and a reason is given) when qemu or the toolchain is missing."""
    from ..targets.mcu_boards import missing_board_tool

    reason = missing_board_tool(board)
    if reason is not None:
        return {"stack_bytes": None, "stack_not_measured": reason}
    elf = work / "firmware.elf"
    size = build_firmware(root, board, elf, name)
    run_dir = work / "run"
    run_dir.mkdir()
    (run_dir / "in.bin").write_bytes(b"\0" * input_bytes)
    run = run_firmware(board, elf, run_dir)
    return {"stack_bytes": run.stack_bytes, "firmware_flash_bytes": size.flash_bytes,
            "firmware_static_ram_bytes": size.static_ram_bytes}


def _bundle_name(bundle: Path) -> str:
    import json

    with open(os.path.join(bundle, "bundle.json"), encoding="utf-8") as f:
        return json.load(f)["name"]
