"""Helpers of the export tests: build a bundle's run_model with CMake, run it natively or under qemu-user,
and turn its raw output file back into arrays."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from tvmcompress.artifact import IOSpec
from tvmcompress.targets.runtime_cache import FOREIGN_ARCHES, find_qemu

HERE = Path(__file__).parent


def cmake_build(source: Path, build: Path, *extra: str) -> Path:
    """Configure and build a CMake project (a bundle, or a test program that uses bundles); returns `build`."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), *generator, *extra], check=True,
                   capture_output=True, text=True)
    result = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return build


def command_for(arch: str, program: Path) -> list[str]:
    """How to start `program` here: directly on x86-64, else under qemu-user with the Debian sysroot."""
    if arch == "x86_64":
        return [str(program)]
    spec = FOREIGN_ARCHES[arch]
    return [find_qemu(spec), "-L", str(spec.sysroot), str(program)]


def run_model(arch: str, program: Path, inputs: Sequence[np.ndarray], outputs: Sequence[IOSpec], tmp: Path,
              threads: int | None = None) -> list[np.ndarray]:
    """Write the inputs as raw little-endian arrays, run `run_model IN OUT [THREADS]`, split OUT into arrays."""
    in_path, out_path = tmp / "in.bin", tmp / "out.bin"
    in_path.write_bytes(b"".join(np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<")).tobytes() for x in inputs))
    extra = [str(threads)] if threads is not None else []
    result = subprocess.run([*command_for(arch, program), str(in_path), str(out_path), *extra],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return split_outputs(out_path.read_bytes(), outputs)


def split_outputs(raw: bytes, outputs: Sequence[IOSpec]) -> list[np.ndarray]:
    arrays, offset = [], 0
    for spec in outputs:
        dtype = np.dtype(spec.dtype).newbyteorder("<")
        count = int(np.prod(spec.shape, dtype=np.int64))
        arrays.append(np.frombuffer(raw, dtype, count, offset).reshape(spec.shape))
        offset += count * dtype.itemsize
    assert offset == len(raw), f"run_model wrote {len(raw)} bytes, the outputs take {offset}"
    return arrays
