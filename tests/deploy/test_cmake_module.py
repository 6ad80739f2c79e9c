"""The CMake package (`tvmcompress --cmake-dir`, tvmcompress_add_model): an incremental build that reruns
tvmcompress only when the model or an option changes, and a linked program that matches ONNX Runtime."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import zoo
from tvmcompress.cli import main

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None,
                                reason="needs cmake and ninja")

CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.19)
project(app C CXX)
find_package(tvmcompress REQUIRED)
set(EXTRA_OPTIONS "" CACHE STRING "more tvmcompress compile flags")
add_executable(app main.c)
tvmcompress_add_model(app MODEL mlp.onnx TARGET x86-64 OPTIONS ${EXTRA_OPTIONS} CACHE_DIR "${CMAKE_BINARY_DIR}/cache")
"""

MAIN_C = """\
/* app IN.bin OUT.bin: one inference of the mlp model that tvmcompress_add_model linked in. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  void* in = malloc(mlp_input_bytes[0]);
  void* out = malloc(mlp_output_bytes[0]);
  FILE* f = fopen(argv[1], "rb");
  if (!f || fread(in, 1, mlp_input_bytes[0], f) != mlp_input_bytes[0]) return 3;
  fclose(f);
  mlp_model* model;
  const void* inputs[1] = {in};
  void* outputs[1] = {out};
  if (mlp_create(NULL, 1, &model) != MLP_OK || mlp_run(model, inputs, outputs) != MLP_OK) {
    fprintf(stderr, "%s\\n", mlp_last_error());
    return 1;
  }
  mlp_destroy(model);
  f = fopen(argv[2], "wb");
  fwrite(out, 1, mlp_output_bytes[0], f);
  fclose(f);
  return 0;
}
"""


def test_cmake_dir_flag_prints_the_package_folder(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cmake-dir"])
    assert exit_info.value.code == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "tvmcompress-config.cmake").is_file() and (folder / "TvmcompressModel.cmake").is_file()


def _wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A TVMCOMPRESS_EXECUTABLE that logs each call, then runs the real CLI."""
    log = tmp_path / "calls.log"
    script = tmp_path / "tvmcompress-counting"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$1 $2" >> "{log}"
        exec "{sys.executable}" -c "import sys; from tvmcompress.cli import main; sys.exit(main())" "$@"
        """))
    script.chmod(0o755)
    return script, log


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _build(build: Path) -> str:
    result = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_incremental_build_reruns_tvmcompress_only_when_needed(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    model = zoo.mlp()
    onnx.save(model, source / "mlp.onnx")
    (source / "CMakeLists.txt").write_text(CMAKE_LISTS)
    (source / "main.c").write_text(MAIN_C)
    wrapper, log = _wrapper(tmp_path)
    cmake_dir = subprocess.run([sys.executable, "-c", "from tvmcompress.cli import main; main(['--cmake-dir'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", f"-Dtvmcompress_DIR={cmake_dir}",
                 f"-DTVMCOMPRESS_EXECUTABLE={wrapper}"]
    subprocess.run(configure, capture_output=True, text=True, check=True)

    _build(build)
    assert [c.split()[1] for c in _calls(log)] == ["compile", "export"]

    # The program runs the model as ONNX Runtime does (float32 kernels; 1e-4 covers reassociation).
    x = zoo.random_inputs(model, {})["x"].astype(np.float32)
    (tmp_path / "in.bin").write_bytes(x.tobytes())
    subprocess.run([str(build / "app"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True, timeout=60)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.float32).reshape(2, 10)
    np.testing.assert_allclose(got, zoo.ort_outputs(model, {"x": x})[0], rtol=1e-4, atol=1e-5)

    # Nothing changed: no tvmcompress call at all.
    _build(build)
    assert len(_calls(log)) == 2

    # Touching the model reruns it (a cache hit for compile: the bytes are the same).
    later = time.time() + 5
    os.utime(source / "mlp.onnx", (later, later))
    _build(build)
    assert [c.split()[1] for c in _calls(log)[2:]] == ["compile", "export"]
    _build(build)
    assert len(_calls(log)) == 4

    # Configuring again with the same options leaves the stamp alone: still nothing to do.
    subprocess.run(configure, capture_output=True, text=True, check=True)
    dry = subprocess.run(["cmake", "--build", str(build), "--", "-n"], capture_output=True, text=True, check=True)
    assert "tvmcompress: compiling" not in dry.stdout
    # A changed option reruns it (ninja -n: decide without spending another build).
    subprocess.run([*configure, "-DEXTRA_OPTIONS=--cores;1"], capture_output=True, text=True, check=True)
    dry = subprocess.run(["cmake", "--build", str(build), "--", "-n"], capture_output=True, text=True, check=True)
    assert "tvmcompress: compiling mlp.onnx for x86-64 (mlp)" in dry.stdout


@pytest.mark.slow
@pytest.mark.cross
def test_cross_build_for_aarch64_with_the_shipped_toolchain_runs_under_qemu(tmp_path):
    from tvmcompress.targets import runtime_cache

    spec = runtime_cache.foreign_arch("aarch64")
    if runtime_cache.missing_tool(spec) is not None or shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("needs the aarch64 cross toolchain and qemu-user")
    source = tmp_path / "src"
    source.mkdir()
    model = zoo.mlp()
    onnx.save(model, source / "mlp.onnx")
    (source / "CMakeLists.txt").write_text(CMAKE_LISTS.replace("TARGET x86-64", "TARGET aarch64"))
    (source / "main.c").write_text(MAIN_C)
    cmake_dir = subprocess.run([sys.executable, "-c", "from tvmcompress.cli import main; main(['--cmake-dir'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", f"-Dtvmcompress_DIR={cmake_dir}",
                    f"-DCMAKE_TOOLCHAIN_FILE={cmake_dir}/toolchains/aarch64.cmake"],
                   capture_output=True, text=True, check=True)
    _build(build)
    x = zoo.random_inputs(model, {})["x"].astype(np.float32)
    (tmp_path / "in.bin").write_bytes(x.tobytes())
    qemu = runtime_cache.find_qemu(spec)
    subprocess.run([qemu, "-L", str(spec.sysroot), str(build / "app"), str(tmp_path / "in.bin"),
                    str(tmp_path / "out.bin")], check=True, timeout=120)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.float32).reshape(2, 10)
    # float32 NEON kernels against ORT's x86 ones: 1e-4 covers summation order.
    np.testing.assert_allclose(got, zoo.ort_outputs(model, {"x": x})[0], rtol=1e-4, atol=1e-5)
