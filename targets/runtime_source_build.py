"""Build libtvm_ffi.so and a CPU-only libtvm_runtime.so for an architecture that has no TVM wheel.

The x86-64 apache-tvm and apache-tvm-ffi wheels ship the C++ sources of their runtimes (tvm/src/runtime,
tvm_ffi/src/ffi) and the public headers, but not seven private headers those sources include. tvmcompress
provides small replacements, written for this purpose, in runtime_shims/ (same layout as TVM's tree):

    include/tvm/support/io.h, serializer.h   binary streams; byte format identical to the compiler's writer
    include/tvm/support/cuda/nvtx.h          a no-op profiler range (CPU-only runtime)
    src/support/utils.h, bytes_io.h, base64.h
    3rdparty/compiler-rt/builtin_fp16.h      IEEE half <-> float/double conversions

The build copies the runtime sources into a work directory, lays the shims over them (the sources include
some of these headers by relative path), compiles with the cross compiler and links the two libraries.
Only the sources a CPU Relax VM needs are built: no RPC, CUDA, Hexagon, disco or LLM KV-cache support.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvmcompress.targets.runtime_cache import ForeignArch

logger = logging.getLogger(__name__)

SHIMS_DIR = Path(__file__).parent / "runtime_shims"

# Relative to tvm_ffi/src/ffi: the core and "extra" C++ API sources of libtvm_ffi (the wheel's own set,
# without the Windows backtrace and the testing module).
FFI_SOURCES = (
    "backtrace.cc", "object.cc", "error.cc", "function.cc", "tensor.cc", "dtype.cc", "container.cc",
    "init_once.cc", "custom_allocator.cc",
    "extra/structural_equal.cc", "extra/structural_hash.cc", "extra/structural_visit.cc",
    "extra/structural_mutate.cc", "extra/visit_error_context.cc", "extra/json_parser.cc",
    "extra/json_writer.cc", "extra/serialization.cc", "extra/dataclass.cc", "extra/reflection_extra.cc",
    "extra/module.cc", "extra/library_module.cc", "extra/library_module_system_lib.cc",
    "extra/library_module_dynamic_lib.cc", "extra/env_context.cc", "extra/env_c_api.cc",
)

# Relative to tvm/src/runtime: device API, modules, tensors, thread pool, memory manager, the Relax VM,
# and the contrib sort kernels that topi's argsort/topk call on CPU.
RUNTIME_SOURCES = (
    "builtin_fp16.cc", "const_loader_module.cc", "cpu_device_api.cc", "device_api.cc", "file_utils.cc",
    "logging.cc", "module.cc", "static_library.cc", "tensor.cc", "thread_pool.cc", "threading_backend.cc",
    "timer.cc", "workspace_pool.cc", "memory/memory_manager.cc",
    "vm/builtin.cc", "vm/bytecode.cc", "vm/executable.cc", "vm/vm.cc",
    "extra/contrib/sort/sort.cc",
)

# Bump when flags or source lists change, so cached runtimes are rebuilt.
_RECIPE = 1

_COMMON_FLAGS = (
    "-std=c++17", "-O2", "-fPIC", "-DNDEBUG", "-Wno-psabi",
    # Every architecture we build for is little-endian; this is what the wheel's CMake sets.
    "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1",
)
# As the wheel's CMake builds tvm_ffi: hidden by default, the API is exported by TVM_FFI_DLL. libbacktrace
# (a 3rdparty C library) is left out, so errors carry TVM's own frames only.
_FFI_FLAGS = (
    "-fvisibility=hidden", "-fvisibility-inlines-hidden",
    "-DTVM_FFI_USE_LIBBACKTRACE=0", "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0",
)


def recipe_digest() -> str:
    """Changes whenever a rebuilt runtime could differ: the shims, the source lists, the flags."""
    digest = hashlib.sha256(repr((_RECIPE, FFI_SOURCES, RUNTIME_SOURCES, _COMMON_FLAGS, _FFI_FLAGS)).encode())
    for path in sorted(SHIMS_DIR.rglob("*.h")):
        digest.update(str(path.relative_to(SHIMS_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def package_dir(name: str) -> Path:
    """Where an installed Python package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"Python package {name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def build_runtime(spec: ForeignArch, lib: Path, work: Path, jobs: int | None = None) -> None:
    """Compile and link libtvm_ffi.so and libtvm_runtime.so for `spec` into `lib`, using `work` as scratch."""
    tvm_root = package_dir("tvm")
    ffi_root = package_dir("tvm_ffi")
    tvm_version = importlib.metadata.version("apache-tvm")
    for required in (tvm_root / "src" / "runtime", ffi_root / "src" / "ffi", tvm_root / "include"):
        if not required.is_dir():
            raise RuntimeError(f"{required} is missing: this apache-tvm installation ships no runtime sources")

    # Stage: TVM's src/ with the shims laid over it, so "../support/x.h" and
    # "../../../../../3rdparty/compiler-rt/builtin_fp16.h" resolve inside the stage.
    stage = work / "stage"
    shutil.copytree(tvm_root / "src", stage / "src")
    shutil.copytree(SHIMS_DIR / "src", stage / "src", dirs_exist_ok=True)
    shutil.copytree(SHIMS_DIR / "3rdparty", stage / "3rdparty")
    objects = work / "obj"
    objects.mkdir(parents=True)

    ffi_includes = [f"-I{ffi_root / 'include'}", f"-I{ffi_root / '3rdparty' / 'dlpack' / 'include'}"]
    runtime_includes = [
        f"-I{SHIMS_DIR / 'include'}", f"-I{tvm_root / 'include'}", *ffi_includes,
        f"-I{stage / '3rdparty' / 'compiler-rt'}",
    ]
    units = [
        (ffi_root / "src" / "ffi" / source, objects / "ffi" / f"{source}.o", [*_FFI_FLAGS, *ffi_includes])
        for source in FFI_SOURCES
    ] + [
        (stage / "src" / "runtime" / source, objects / "runtime" / f"{source}.o", runtime_includes)
        for source in RUNTIME_SOURCES
    ]
    logger.info(
        "building the %s TVM runtime from the sources shipped in apache-tvm %s (%d files; several minutes, once)",
        spec.name, tvm_version, len(units),
    )
    _compile_all(spec, units, jobs or max(1, min(os.cpu_count() or 1, 8)), work / "build.log")

    ffi_objects = [str(obj) for _, obj, _ in units[: len(FFI_SOURCES)]]
    runtime_objects = [str(obj) for _, obj, _ in units[len(FFI_SOURCES) :]]
    _run(
        [spec.cxx, "-shared", "-o", str(lib / "libtvm_ffi.so"), "-Wl,-soname,libtvm_ffi.so", *ffi_objects,
         "-Wl,--no-undefined", "-ldl", "-lpthread"],
        f"linking libtvm_ffi.so for {spec.name}",
    )
    _run(
        [spec.cxx, "-shared", "-o", str(lib / "libtvm_runtime.so"), "-Wl,-soname,libtvm_runtime.so",
         *runtime_objects, "-L", str(lib), "-ltvm_ffi", "-Wl,--no-undefined", "-ldl", "-lpthread",
         *spec.runtime_link_libs, "-Wl,-rpath,$ORIGIN"],
        f"linking libtvm_runtime.so for {spec.name}",
    )


def _compile_all(spec: ForeignArch, units: list[tuple[Path, Path, list[str]]], jobs: int, log: Path) -> None:
    def compile_one(unit: tuple[Path, Path, list[str]]) -> tuple[Path, subprocess.CompletedProcess]:
        source, obj, flags = unit
        obj.parent.mkdir(parents=True, exist_ok=True)
        command = [spec.cxx, *_COMMON_FLAGS, *flags, "-c", str(source), "-o", str(obj)]
        return source, subprocess.run(command, capture_output=True, text=True)

    failures = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool, open(log, "w") as log_file:
        for done, (source, result) in enumerate(pool.map(compile_one, units), start=1):
            logger.info("[%d/%d] compiled %s", done, len(units), source.name)
            log_file.write(f"== {source}\n{result.stderr}")
            if result.returncode != 0:
                failures.append((source, result.stderr))
    if failures:
        source, stderr = failures[0]
        first_error = next((line for line in stderr.splitlines() if "error" in line), stderr.strip()[-500:])
        kept = log.parent.parent.with_name(log.parent.parent.name + ".failed-build.log")
        shutil.copyfile(log, kept)
        raise RuntimeError(
            f"building the {spec.name} TVM runtime failed in {len(failures)} file(s); first: {source}: "
            f"{first_error} (full log: {kept})"
        )


def _run(command: list[str], what: str) -> None:
    logger.debug("%s: %s", what, " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({command[0]} exited with {result.returncode}):\n{result.stderr[-4000:]}")
