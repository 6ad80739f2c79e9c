"""The two aarch64 programs the lab counts: our model.so in the TVM runner, and ONNX Runtime's C library.

Each `*_profile` function returns a steady-state Profile of one inference (counter.steady_state: a process
running 1 + extra inferences minus one running 1), with single-threaded runtimes, since the counter needs one
guest thread.

ONNX Runtime comes from its official aarch64 wheel (the version installed here, fetched once with
`pip download` into the lab's cache); only libonnxruntime.so is used, driven by ort_driver.c, which is
cross-compiled with aarch64-linux-gnu-gcc.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import runtime_cache
from tvmcompress.targets.perf_lab import counter
from tvmcompress.targets.qemu import _read_tensor_file, _write_tensor_file

HERE = Path(__file__).resolve().parent
# Platform tags newest first: ORT's recent aarch64 wheels are manylinux_2_28; older ones manylinux2014.
_WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")


def ort_version() -> str:
    return importlib.metadata.version("onnxruntime")


def prepare_ort(version: str | None = None) -> tuple[Path, Path]:
    """(driver executable, library directory) for ONNX Runtime `version` on aarch64; downloads once."""
    version = version or ort_version()
    root = counter.cache_dir() / f"ort-{version}"
    lib_dir = root / "lib"
    library = lib_dir / "libonnxruntime.so.1"
    if not library.exists():
        wheels = root / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        platforms = [arg for p in _WHEEL_PLATFORMS for arg in ("--platform", p)]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *platforms,
             f"onnxruntime=={version}", "-d", str(wheels)], capture_output=True, text=True)
        found = sorted(wheels.glob(f"onnxruntime-{version}-*aarch64*.whl"))
        if result.returncode != 0 or not found:
            raise TvmcompressError(f"could not download the aarch64 onnxruntime {version} wheel: {result.stderr[-500:]}")
        lib_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(found[0]) as wheel:
            member = next(n for n in wheel.namelist() if Path(n).name.startswith("libonnxruntime.so."))
            tmp = lib_dir / (Path(member).name + ".part")
            tmp.write_bytes(wheel.read(member))
            os.replace(tmp, library)  # the soname the driver is linked against
    source = HERE / "ort_driver.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    driver = root / f"ort_driver-{digest}"
    if not driver.exists():
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            tmp = Path(scratch) / "ort_driver"
            result = subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-o", str(tmp), str(source), str(library)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise TvmcompressError(f"cross-compiling ort_driver.c failed: {result.stderr[-1000:]}")
            os.replace(tmp, driver)
    return driver, lib_dir


def ort_profile(model: Path, input_name: str, output_name: str, x: np.ndarray, output_count: int, cpu: str,
                extra_runs: int = 1) -> tuple[counter.Profile, np.ndarray]:
    """Steady-state profile of one ONNX Runtime inference of `model` on `x`, and its output (flattened)."""
    driver, lib_dir = prepare_ort()
    with tempfile.TemporaryDirectory(prefix="tvmcompress-perf-lab-ort-") as scratch:
        inp, out = Path(scratch) / "x.bin", Path(scratch) / "y.bin"
        np.ascontiguousarray(x, dtype=np.float32).tofile(inp)

        def run(n: int) -> counter.Profile:
            return counter.count_command(
                [str(driver), str(model), str(n), input_name, str(inp), output_name, str(out), str(output_count),
                 *[str(d) for d in x.shape]],
                cpu=cpu, env={"LD_LIBRARY_PATH": str(lib_dir)})

        profile = counter.steady_state(run, extra_runs)
        return profile, np.fromfile(out, dtype=np.float32)


def tvm_profile(library: Path, inputs: list[np.ndarray], cpu: str,
                extra_runs: int = 1) -> tuple[counter.Profile, np.ndarray]:
    """Steady-state profile of one inference of our aarch64 model.so in the TVM runner (one thread), and its
    first output (flattened)."""
    root = runtime_cache.prepare_runtime("aarch64")
    runner = root / "bin" / runtime_cache.RUNNER_NAME
    with tempfile.TemporaryDirectory(prefix="tvmcompress-perf-lab-tvm-") as scratch:
        scratch_dir = Path(scratch)
        files = []
        for index, value in enumerate(inputs):
            files.append(scratch_dir / f"in{index}.tensor")
            _write_tensor_file(files[-1], value, index)

        def run(n: int) -> counter.Profile:
            out_dir = scratch_dir / f"out{n}"
            for k in range(n):
                (out_dir / f"s{k}").mkdir(parents=True, exist_ok=True)
            # n samples of the same inputs: the runner loads the library once and runs main n times.
            return counter.count_command(
                [str(runner), "--samples", str(n), str(library), str(out_dir), *[str(f) for f in files] * n],
                cpu=cpu, env={"LD_LIBRARY_PATH": str(root / "lib"), "TVM_NUM_THREADS": "1"},
                symbol_objects={Path(library).name: str(library)})

        profile = counter.steady_state(run, extra_runs)
        return profile, _read_tensor_file(scratch_dir / "out1" / "s0" / "out0.tensor").reshape(-1)
