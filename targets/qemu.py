"""Run compiled models for foreign CPU architectures (aarch64, armv7, riscv64) here, under qemu-user.

A model.so built by `tvm.compile` and exported with the architecture's cross compiler cannot be loaded by
this machine's TVM. Instead a small C++ program, runner/tvmcompress_runner.cc, cross-compiled and linked
against a TVM runtime for that architecture, loads it, runs the Relax VM's "main" and writes the outputs
back. Inputs and outputs travel as files in a tiny format (see `_write_tensor_file`).

The runtime comes from the official aarch64 wheels, or is rebuilt from the sources shipped in the x86 wheel
for armv7 and riscv64 (see runtime_cache and runtime_source_build). Either way it is the real TVM runtime
executing the real cross-compiled kernels, so results are a faithful check of the artifact, if slow.

    qemu_available("aarch64")                      # None, or what to install
    run_under_qemu("aarch64", out / "model.so", [x])
    link_check("armv7", out / "model.so")          # static checks, no qemu needed
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import runtime_cache
from tvmcompress.targets.toolchain import readelf_header
from tvmcompress.targets.runtime_cache import FOREIGN_ARCHES, ForeignArch, foreign_arch

logger = logging.getLogger(__name__)

__all__ = ["FOREIGN_ARCHES", "link_check", "prepare_runtime", "qemu_available", "run_under_qemu"]

_MAGIC = b"TVMCTNS1"
# TVM dtype names that numpy spells differently; everything else is str(numpy dtype) both ways.
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
# Errors TVM raises when the inputs do not fit the function (count, dtype, shape): the user can fix those.
_INPUT_ERROR_KINDS = ("ValueError", "TypeError", "IndexError")
_ELF_MACHINES = {3: "x86", 40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}


def qemu_available(arch: str) -> str | None:
    """None if models for `arch` can run here, else one line saying what to install."""
    return runtime_cache.missing_tool(foreign_arch(arch))


def prepare_runtime(arch: str) -> Path:
    """Make sure a TVM runtime for `arch` and the cross-compiled runner are cached; return their directory.

    The directory is ~/.cache/tvmcompress/runtime/<arch>-tvm<version>/ ($TVMCOMPRESS_CACHE_DIR replaces
    ~/.cache/tvmcompress, for tests). The first call downloads the aarch64 wheels (about 100 MB) or builds
    the armv7/riscv64 runtime from source (several minutes); later calls return at once. Safe when several
    processes prepare the same architecture at the same time.
    """
    return runtime_cache.prepare_runtime(arch)


def run_under_qemu(arch: str, library: Path, inputs: list[np.ndarray], num_threads: int = 1) -> list[np.ndarray]:
    """Run the Relax VM "main" of `library` (built for `arch`) under qemu-user; return its outputs in order.

    A tuple result gives one array per leaf, depth first. `num_threads` sets TVM_NUM_THREADS for the runtime's
    thread pool (1 gives reproducible timings; qemu-user runs guest threads on host threads).
    """
    return run_many_under_qemu(arch, library, [inputs], num_threads)[0]


def run_many_under_qemu(
    arch: str, library: Path, samples: list[list[np.ndarray]], num_threads: int = 1
) -> list[list[np.ndarray]]:
    """Like run_under_qemu for several input sets, in one qemu process: the library and runtime load once."""
    spec = foreign_arch(arch)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not samples:
        return []
    reason = runtime_cache.missing_tool(spec)
    if reason is not None:
        raise TvmcompressError(reason)
    library = Path(library).resolve()
    _check_library_arch(spec, library)
    root = prepare_runtime(arch)
    qemu_binary = runtime_cache.find_qemu(spec)
    assert qemu_binary is not None  # checked by missing_tool

    with tempfile.TemporaryDirectory(prefix="tvmcompress-qemu-") as scratch:
        scratch_dir = Path(scratch)
        input_files = []
        for k, inputs in enumerate(samples):
            for index, value in enumerate(inputs):
                path = scratch_dir / f"s{k}_in{index}.tensor"
                _write_tensor_file(path, value, index)
                input_files.append(str(path))
        out_dir = scratch_dir / "out"
        for k in range(len(samples)):
            (out_dir / f"s{k}").mkdir(parents=True)
        command = [
            qemu_binary, "-L", str(spec.sysroot),
            # -E sets the variables for the guest only; the host qemu never sees foreign libraries.
            "-E", f"LD_LIBRARY_PATH={root / 'lib'}",
            "-E", f"TVM_NUM_THREADS={num_threads}",
            str(root / "bin" / runtime_cache.RUNNER_NAME), "--samples", str(len(samples)),
            str(library), str(out_dir), *input_files,
        ]
        logger.debug("running %s", " ".join(command[:12]))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            _raise_run_failure(spec, library, result)
        match = re.search(r"^outputs (\d+)$", result.stdout, flags=re.MULTILINE)
        if match is None:
            raise RuntimeError(f"{runtime_cache.RUNNER_NAME} printed no output count:\n{result.stdout}{result.stderr}")
        count = int(match.group(1))
        return [
            [_read_tensor_file(out_dir / f"s{k}" / f"out{index}.tensor") for index in range(count)]
            for k in range(len(samples))
        ]


def link_check(arch: str, library: Path) -> dict:
    """Check without running that `library` is a shared library for `arch` whose imports the runtime satisfies.

    Reads `readelf -h` (class, machine, and the float ABI in the flags: hard-float for armv7, double-float for
    riscv64, as the Debian sysroots are built) and the undefined dynamic symbols, which must all be provided by
    the sysroot's C/C++ libraries or the TVM runtime (the cached one for `arch` when prepared, otherwise
    anything named TVM*). Returns a dict with `ok`, the individual `checks` and the evidence.
    """
    spec = foreign_arch(arch)
    library = Path(library).resolve()
    if not library.is_file():
        raise TvmcompressError(f"{library} does not exist: pass the model.so that export_library wrote")
    readelf = shutil.which("readelf") or shutil.which(f"{spec.gnu_triple}-readelf")
    if readelf is None:
        raise TvmcompressError("readelf not found: install the Debian package binutils (apt-get install binutils)")
    header = readelf_header(str(library), readelf)
    flags = header.get("Flags", "")
    undefined = sorted(_dynamic_symbols(readelf, library, defined=False))
    providers = _symbol_providers(spec, readelf)
    if providers["runtime"]:
        unexpected = [name for name in undefined if name not in providers["system"] | providers["runtime"]]
    else:
        unexpected = [
            name for name in undefined if name not in providers["system"] and not name.startswith("TVM")
        ]
    checks = {
        "class": header.get("Class") == spec.elf_class,
        "machine": header.get("Machine") == spec.elf_machine,
        "shared_object": header.get("Type", "").startswith("DYN"),
        "float_abi": spec.elf_abi_flag is None or spec.elf_abi_flag in flags,
        "imports_resolved": not unexpected,
    }
    return {
        "arch": spec.name,
        "library": str(library),
        "class": header.get("Class"),
        "machine": header.get("Machine"),
        "flags": flags,
        "undefined": undefined,
        "unexpected_undefined": unexpected,
        "checked_against_runtime": bool(providers["runtime"]),
        "checks": checks,
        "ok": all(checks.values()),
    }


# ---- the tensor file format shared with runner/tvmcompress_runner.cc --------------------------------------
# little-endian: b"TVMCTNS1", u32 len + TVM dtype name, u32 ndim + i64 shape[ndim], u64 nbytes + data.


def _tvm_dtype_name(dtype: np.dtype, index: int) -> str:
    if dtype.kind in "biuf" or dtype.name in _ML_DTYPES:
        return dtype.name
    raise TvmcompressError(
        f"input {index} has dtype {dtype}, which is not supported: pass bool, integer or floating-point arrays"
    )


def _numpy_dtype(name: str) -> np.dtype:
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def _write_tensor_file(path: Path, value: np.ndarray, index: int) -> None:
    array = np.asarray(value)
    name = _tvm_dtype_name(array.dtype, index)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    data = np.ascontiguousarray(array).tobytes()
    encoded = name.encode()
    with open(path, "wb") as handle:
        handle.write(_MAGIC)
        handle.write(struct.pack("<I", len(encoded)) + encoded)
        handle.write(struct.pack(f"<I{array.ndim}q", array.ndim, *array.shape))
        handle.write(struct.pack("<Q", len(data)))
        handle.write(data)


def _read_tensor_file(path: Path) -> np.ndarray:
    blob = path.read_bytes()
    if blob[:8] != _MAGIC:
        raise RuntimeError(f"{path}: not a tensor file written by {runtime_cache.RUNNER_NAME}")
    (name_length,) = struct.unpack_from("<I", blob, 8)
    offset = 12 + name_length
    name = blob[12:offset].decode()
    (ndim,) = struct.unpack_from("<I", blob, offset)
    shape = struct.unpack_from(f"<{ndim}q", blob, offset + 4)
    offset += 4 + 8 * ndim
    (nbytes,) = struct.unpack_from("<Q", blob, offset)
    data = blob[offset + 8 : offset + 8 + nbytes]
    if len(data) != nbytes:
        raise RuntimeError(f"{path}: truncated tensor file")
    dtype = _numpy_dtype(name).newbyteorder("<")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


# ---- helpers ----------------------------------------------------------------------------------------------


def _check_library_arch(spec: ForeignArch, library: Path) -> None:
    if not library.is_file():
        raise TvmcompressError(f"{library} does not exist: pass the model.so that export_library wrote")
    with open(library, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise TvmcompressError(f"{library} is not an ELF shared library: pass the model.so that export_library wrote")
    (machine,) = struct.unpack_from("<H", header, 18)
    if machine != spec.e_machine:
        found = _ELF_MACHINES.get(machine, f"ELF machine {machine}")
        raise TvmcompressError(
            f"{library} is built for {found}, not {spec.name}: compile it for the {spec.name} target and export "
            f"it with {spec.cxx}"
        )


def _raise_run_failure(spec: ForeignArch, library: Path, result: subprocess.CompletedProcess) -> None:
    stderr = result.stderr.strip()
    first = stderr.splitlines()[0] if stderr else ""
    if result.returncode == 2 and first.startswith("usage-error: "):
        raise TvmcompressError(first[len("usage-error: ") :])
    match = re.match(r"tvm-error (\w+): (.*)", first)
    if result.returncode == 3 and match and match.group(1) in _INPUT_ERROR_KINDS:
        raise TvmcompressError(
            f"{library.name} rejected the inputs under {spec.qemu}: {match.group(1)}: {match.group(2)}"
        )
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name if -result.returncode in signal.valid_signals() else "?"
        how = f"was killed by signal {-result.returncode} ({name})"
        if name == "SIGILL":
            how += ": the library uses an instruction that qemu's default CPU model lacks (check the target's mattr)"
    else:
        how = f"failed with exit code {result.returncode}"
    raise RuntimeError(f"running {library} under {spec.qemu} {how}:\n{stderr[-4000:]}")


def _dynamic_symbols(readelf: str, path: Path, defined: bool) -> set[str]:
    """Global/weak dynamic symbols of `path`: the defined ones, or the strongly undefined ones."""
    output = subprocess.run([readelf, "--dyn-syms", "-W", str(path)], capture_output=True, text=True, check=True)
    names = set()
    for line in output.stdout.splitlines():
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(parts) < 8 or not parts[0].endswith(":") or parts[4] not in ("GLOBAL", "WEAK"):
            continue
        name = parts[7].split("@")[0]
        if defined and parts[6] != "UND":
            names.add(name)
        elif not defined and parts[6] == "UND" and parts[4] == "GLOBAL":
            names.add(name)
    return names


def _symbol_providers(spec: ForeignArch, readelf: str) -> dict[str, set[str]]:
    system: set[str] = set()
    lib_dir = spec.sysroot / "lib"
    for name in ("libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "libgcc_s.so.1", "libstdc++.so.6"):
        if (lib_dir / name).exists():
            system |= _dynamic_symbols(readelf, lib_dir / name, defined=True)
    runtime: set[str] = set()
    runtime_lib = runtime_cache.runtime_dir(spec.name) / "lib"
    for path in sorted(runtime_lib.glob("*.so")) if runtime_lib.is_dir() else []:
        runtime |= _dynamic_symbols(readelf, path, defined=True)
    return {"system": system, "runtime": runtime}
