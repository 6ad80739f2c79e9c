"""Find the compiler that links a target's library, and say which Debian package provides it when it is missing."""

from __future__ import annotations

import shutil
import subprocess
from typing import Callable

from tvmcompress.errors import TvmcompressError

from .presets import TargetPreset

# Flags that make the linked library depend on nothing but its inputs: no build-id note derived from a random
# seed, and no absolute temp-directory paths in debug info. Together with TVM's deterministic codegen they make
# model.so byte-identical across builds of the same model (tests/test_determinism.py checks it).
_REPRODUCIBLE_LDFLAGS = ["-Wl,--build-id=none", "-g0", "-ffile-prefix-map=/tmp=."]


def find_compiler(preset: TargetPreset) -> str:
    """The absolute path of the preset's compiler; a one-line error naming the Debian package if it is absent."""
    path = shutil.which(preset.toolchain.compiler)
    if path is None:
        raise TvmcompressError(
            f"cross compiler '{preset.toolchain.compiler}' for target '{preset.name}' is not installed: "
            f"apt-get install {preset.toolchain.debian_package}"
        )
    return path


def make_fcompile(preset: TargetPreset) -> Callable:
    """An `fcompile` for `Executable.export_library` that links with the preset's compiler, reproducibly."""
    from tvm.support import cc  # local: importing tvm is slow

    compiler = find_compiler(preset)
    base = cc.cross_compiler(compiler, options=_REPRODUCIBLE_LDFLAGS)

    def fcompile(output, objects, options=None, **kwargs):
        try:
            return base(output, objects, options, **kwargs)
        except RuntimeError as err:  # TVM raises RuntimeError with the compiler's full output
            first = next((line for line in str(err).splitlines() if "error" in line.lower()), str(err)[:200])
            raise TvmcompressError(f"linking model.so with {compiler} failed: {first.strip()}") from err

    fcompile.output_format = "so"
    return fcompile


def readelf_header(path: str, readelf: str | None = None) -> dict[str, str]:
    """`readelf -h` of a library as a dict (Class, Machine, Flags, ...), for link checks of foreign builds.

    `readelf`: the binary to use (default: `readelf` on PATH)."""
    readelf = readelf or shutil.which("readelf")
    if readelf is None:
        raise TvmcompressError("readelf not found: apt-get install binutils")
    out = subprocess.run([readelf, "-h", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    header = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            header[key.strip()] = value.strip()
    return header
