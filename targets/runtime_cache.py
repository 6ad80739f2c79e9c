"""The per-architecture TVM runtime and runner cache behind `tvmcompress.targets.qemu`.

For each foreign CPU architecture, one directory holds what running a model.so under qemu-user needs:

    <cache>/runtime/<arch>-tvm<version>/
        lib/libtvm_ffi.so, lib/libtvm_runtime.so (and lib/libtvm_runtime_extra.so from a wheel)
        bin/tvmcompress_runner        (runner/tvmcompress_runner.cc, cross-compiled and linked to lib/)
        stamp.json                    (what was built, from what; a directory without it is incomplete)

The runtime comes from the official apache-tvm / apache-tvm-ffi wheels where they exist (aarch64), and is
otherwise rebuilt from the C++ sources those wheels ship (`runtime_source_build`). `<cache>` is
~/.cache/tvmcompress, or $TVMCOMPRESS_CACHE_DIR (meant for tests).

Preparation is idempotent: a directory whose stamp matches what this installation would build is used as it
is, without taking a lock. Otherwise one process at a time (an flock on a file beside the directory) builds
into a temporary directory and renames it into place, so no reader ever sees a half-built runtime.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import runtime_source_build

logger = logging.getLogger(__name__)

RUNNER_SOURCE = Path(__file__).parent / "runner" / "tvmcompress_runner.cc"
RUNNER_NAME = "tvmcompress_runner"
_STAMP = "stamp.json"
# Bump when the runner's compile command changes in a way its source hash does not show.
_RUNNER_RECIPE = 1


@dataclasses.dataclass(frozen=True)
class ForeignArch:
    """A Linux CPU architecture that tvmcompress can run under qemu-user, and the Debian packages behind it."""

    name: str
    gnu_triple: str  # also the cross compiler prefix and the sysroot under /usr
    qemu: str  # qemu-user binary; the "-static" variant is accepted too
    wheel_platform: str | None  # platform tag of official TVM wheels; None: build the runtime from source
    elf_class: str  # as `readelf -h` prints it
    elf_machine: str  # as `readelf -h` prints it
    e_machine: int  # the ELF header's e_machine value
    elf_abi_flag: str | None  # what `readelf -h` must show among the Flags (the float ABI), if anything
    dynamic_loader: str  # inside the sysroot
    cross_package: str  # Debian package with the cross g++
    libc_package: str  # Debian package with the sysroot's libc
    runtime_link_libs: tuple[str, ...] = ()  # extra libraries the TVM runtime needs on this architecture

    @property
    def cxx(self) -> str:
        return f"{self.gnu_triple}-g++"

    @property
    def sysroot(self) -> Path:
        return Path("/usr") / self.gnu_triple


FOREIGN_ARCHES: dict[str, ForeignArch] = {
    spec.name: spec
    for spec in (
        ForeignArch(
            "aarch64", "aarch64-linux-gnu", "qemu-aarch64", "manylinux_2_28_aarch64", "ELF64", "AArch64", 183, None,
            "lib/ld-linux-aarch64.so.1", "g++-aarch64-linux-gnu", "libc6-dev-arm64-cross",
        ),
        ForeignArch(
            "armv7", "arm-linux-gnueabihf", "qemu-arm", None, "ELF32", "ARM", 40, "hard-float ABI",
            "lib/ld-linux-armhf.so.3", "g++-arm-linux-gnueabihf", "libc6-dev-armhf-cross",
        ),
        ForeignArch(
            "riscv64", "riscv64-linux-gnu", "qemu-riscv64", None, "ELF64", "RISC-V", 243, "double-float ABI",
            "lib/ld-linux-riscv64-lp64d.so.1", "g++-riscv64-linux-gnu", "libc6-dev-riscv64-cross",
            # GCC has no inline sub-word atomics on RISC-V; thread_pool.cc's std::atomic<bool> needs libatomic.
            runtime_link_libs=("-latomic",),
        ),
    )
}


def foreign_arch(arch: str) -> ForeignArch:
    """The spec of `arch`, or a TvmcompressError naming the supported ones."""
    try:
        return FOREIGN_ARCHES[arch]
    except KeyError:
        raise TvmcompressError(
            f"unknown architecture '{arch}': choose one of {', '.join(FOREIGN_ARCHES)}"
        ) from None


def find_qemu(spec: ForeignArch) -> str | None:
    return shutil.which(spec.qemu) or shutil.which(f"{spec.qemu}-static")


def missing_tool(spec: ForeignArch) -> str | None:
    """None if qemu, the sysroot and the cross compiler for `spec` are here, else what to install (one line)."""
    if find_qemu(spec) is None:
        return f"{spec.qemu} not found: install the Debian package qemu-user (apt-get install qemu-user)"
    if not (spec.sysroot / spec.dynamic_loader).exists():
        return (
            f"the {spec.name} sysroot {spec.sysroot} is missing {spec.dynamic_loader}: install the Debian package "
            f"{spec.libc_package} (apt-get install {spec.libc_package})"
        )
    if shutil.which(spec.cxx) is None:
        return (
            f"{spec.cxx} not found: install the Debian package {spec.cross_package} "
            f"(apt-get install {spec.cross_package})"
        )
    return None


def installed_versions() -> tuple[str, str]:
    """(apache-tvm, apache-tvm-ffi) versions of this installation; the foreign runtime must match them."""
    try:
        return importlib.metadata.version("apache-tvm"), importlib.metadata.version("apache-tvm-ffi")
    except importlib.metadata.PackageNotFoundError as err:
        raise TvmcompressError(
            f"package {err.name} is not installed: install apache-tvm and apache-tvm-ffi with pip"
        ) from None


def cache_root() -> Path:
    override = os.environ.get("TVMCOMPRESS_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "tvmcompress"


def runtime_dir(arch: str) -> Path:
    tvm_version, _ = installed_versions()
    return cache_root() / "runtime" / f"{foreign_arch(arch).name}-tvm{tvm_version}"


def ffi_include_dirs() -> list[Path]:
    """tvm-ffi's C++ headers (and dlpack's) from the installed Python package; the versions match the runtime."""
    root = runtime_source_build.package_dir("tvm_ffi")
    return [root / "include", root / "3rdparty" / "dlpack" / "include"]


def prepare_runtime(arch: str) -> Path:
    """See `tvmcompress.targets.qemu.prepare_runtime`."""
    spec = foreign_arch(arch)
    reason = missing_tool(spec)
    if reason is not None:
        raise TvmcompressError(reason)
    target = runtime_dir(arch)
    expected = _expected_stamp(spec)
    if _read_stamp(target) == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{target.name}.lock"):
        current = _read_stamp(target)  # another process may have finished while we waited
        if current == expected:
            return target
        if current is not None and current.get("runtime") == expected["runtime"]:
            logger.info("rebuilding the %s runner in %s (its source changed)", arch, target)
            _compile_runner(spec, target)
            _write_stamp(target, expected)
        else:
            _build_fresh(spec, target, expected)
    return target


def _build_fresh(spec: ForeignArch, target: Path, expected: dict) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        lib = staging / "lib"
        lib.mkdir()
        if spec.wheel_platform is not None:
            _install_runtime_from_wheels(spec, lib)
        else:
            runtime_source_build.build_runtime(spec, lib, work=staging / "build")
            shutil.rmtree(staging / "build", ignore_errors=True)
        _compile_runner(spec, staging)
        _write_stamp(staging, expected)
        if target.exists():
            # Rename the stale directory aside first so the swap below is a single rename.
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=target.parent))
            target.rename(stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        staging.rename(target)
        logger.info("the %s TVM runtime is ready in %s", spec.name, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _install_runtime_from_wheels(spec: ForeignArch, lib: Path) -> None:
    tvm_version, ffi_version = installed_versions()
    requirements = [f"apache-tvm=={tvm_version}", f"apache-tvm-ffi=={ffi_version}"]
    with tempfile.TemporaryDirectory(prefix="tvmcompress-wheels-") as download:
        logger.info(
            "downloading the %s wheels of %s (about 100 MB, once; pip's cache is reused)",
            spec.wheel_platform, " and ".join(requirements),
        )
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--platform", spec.wheel_platform,
            "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
            "--dest", download, *requirements,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = _last_line(result.stderr) or f"pip exited with {result.returncode}"
            raise TvmcompressError(
                f"cannot fetch the {spec.name} TVM runtime wheel: {detail}; check that pip can reach PyPI "
                f"(pip download --no-deps --only-binary=:all: --platform {spec.wheel_platform} "
                f"{' '.join(requirements)})"
            )
        wanted = {
            "tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_extra.so", "tvm_ffi/lib/libtvm_ffi.so",
        }
        for wheel in Path(download).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member in wanted:
                        (lib / Path(member).name).write_bytes(archive.read(member))
                        wanted.discard(member)
        wanted.discard("tvm/lib/libtvm_runtime_extra.so")  # optional: only contrib kernels (sort, random)
        if wanted:
            raise TvmcompressError(
                f"cannot fetch the {spec.name} TVM runtime wheel: the downloaded wheels lack "
                f"{', '.join(sorted(wanted))}; reinstall apache-tvm {tvm_version} or report this"
            )


def _runner_command(spec: ForeignArch, lib: Path, output: Path) -> list[str]:
    includes = [arg for path in ffi_include_dirs() for arg in ("-I", str(path))]
    # --no-as-needed: the runner calls nothing in libtvm_runtime directly, but loading it is what registers
    # the VM loader ("ffi.Module.load_from_bytes.relax.VMExecutable") that model.so needs.
    runtime_libs = ["-ltvm_runtime"]
    if (lib / "libtvm_runtime_extra.so").exists():
        runtime_libs.append("-ltvm_runtime_extra")  # contrib kernels (sort, random) that models may call
    return [
        spec.cxx, "-std=c++17", "-O2", "-Wno-psabi", *includes, str(RUNNER_SOURCE), "-o", str(output),
        "-L", str(lib), "-Wl,--no-as-needed", *runtime_libs, "-ltvm_ffi", "-Wl,--as-needed",
        "-Wl,-rpath,$ORIGIN/../lib",
    ]


def _compile_runner(spec: ForeignArch, root: Path) -> None:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    partial = bin_dir / f".{RUNNER_NAME}.partial"
    command = _runner_command(spec, root / "lib", partial)
    logger.info("cross-compiling %s for %s", RUNNER_NAME, spec.name)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {RUNNER_NAME} for {spec.name} failed:\n{' '.join(command)}\n{result.stderr}")
    partial.replace(bin_dir / RUNNER_NAME)


def _expected_stamp(spec: ForeignArch) -> dict:
    tvm_version, ffi_version = installed_versions()
    runtime: dict = {"apache-tvm": tvm_version, "apache-tvm-ffi": ffi_version}
    if spec.wheel_platform is not None:
        runtime["from"] = f"wheel:{spec.wheel_platform}"
    else:
        runtime["from"] = "source"
        runtime["recipe"] = runtime_source_build.recipe_digest()
        if spec.runtime_link_libs:
            runtime["link"] = list(spec.runtime_link_libs)
    runner = hashlib.sha256(RUNNER_SOURCE.read_bytes()).hexdigest()
    return {"arch": spec.name, "runtime": runtime, "runner": f"{runner}:{_RUNNER_RECIPE}"}


def _read_stamp(root: Path) -> dict | None:
    try:
        stamp = json.loads((root / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    files = [root / "lib" / "libtvm_ffi.so", root / "lib" / "libtvm_runtime.so", root / "bin" / RUNNER_NAME]
    return stamp if all(path.is_file() for path in files) else None


def _write_stamp(root: Path, stamp: dict) -> None:
    partial = root / f".{_STAMP}.partial"
    partial.write_text(json.dumps(stamp, indent=1, sort_keys=True))
    partial.replace(root / _STAMP)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that is preparing %s", lock_path.name[1:-5])
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
