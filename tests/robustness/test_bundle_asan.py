"""The deploy bundle's runner built with -fsanitize=address,undefined on the host (slow tier): main.c,
model_api.cc and weights_reader.h (with the weight codec) compiled with ASan/UBSan, model.so and the TVM runtime
as shipped. A model whose embedding table lives in weights.bin runs on good ids (equal to ONNX Runtime), on
out-of-range ids (the C API's IndexError becomes one stderr line, exit 1) and on damaged weights.bin files (one
line, exit 1; `<name>_create` returns EMB_ERR_WEIGHTS, which bundle_create_code.c prints): never a sanitizer
report, in any case.

How: the export's compile commands (deploy._run) get the sanitizer flags appended, so the bundle's lib<name>.a is
the real one, instrumented; CMake builds run_model with the same flags.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import zoo
from tvmcompress import CompileOptions, compile as tvmc_compile
from tvmcompress import deploy

sys.path.insert(0, str(Path(__file__).parent.parent / "deploy"))
from export_helpers import cmake_build  # noqa: E402

HERE = Path(__file__).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("gcc") is None, reason="needs cmake and gcc"),
]

ERR_WEIGHTS = 3  # EMB_ERR_WEIGHTS in model.h: "the weights file does not belong to this model or is damaged"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
TABLE = np.arange(40, dtype=np.float32).reshape(10, 4) / 7
BIAS = np.linspace(-1, 1, 4, dtype=np.float32)
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:detect_odr_violation=0",
       "UBSAN_OPTIONS": "print_stacktrace=1"}
# Leaks are not checked: the uninstrumented TVM runtime keeps its registries to the end of the process. ODR
# checks are off because TVM-FFI's inline functions are emitted both in lib<name>.a and in libtvm_ffi.so.


def _embedding_model() -> onnx.ModelProto:
    v = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0, name="embed"),
         helper.make_node("Add", ["rows", "bias"], ["y"])],
        "embedding", [v("ids", TensorProto.INT64, [1, 3])], [v("y", TensorProto.FLOAT, [1, 3, 4])],
        [numpy_helper.from_array(TABLE, "table"), numpy_helper.from_array(BIAS, "bias")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture(scope="module")
def asan_runner(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("asan_bundle")
    (tmp / "emb.onnx").write_bytes(_embedding_model().SerializeToString())
    artifact = tvmc_compile(tmp / "emb.onnx", "x86-64", output=tmp / "art",
                            options=CompileOptions.create(separate_weights=True))
    real_run = deploy._run

    def sanitized(command: list[str], what: str) -> None:
        real_run(command + SANITIZE if "-c" in command else command, what)

    deploy._run = sanitized
    try:
        artifact.export(tmp / "bundle", name="emb")
    finally:
        deploy._run = real_run
    # The bundle's own CMake project (run_model from main.c) and, beside it, bundle_create_code.c, which prints
    # the C API's return code: one build, both with the sanitizer flags.
    source = tmp / "src"
    source.mkdir()
    shutil.copy(HERE / "bundle_create_code.c", source / "main.c")
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(asan_bundle C CXX)\n"
        f'add_subdirectory("{tmp / "bundle"}" bundle)\n'
        "add_executable(create_code main.c)\ntarget_link_libraries(create_code PRIVATE tvmcompress::emb)\n"
        "set_target_properties(create_code PROPERTIES LINKER_LANGUAGE CXX)\n"
    )
    flags = " ".join(SANITIZE)
    build = cmake_build(source, tmp / "build", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
                        f"-DCMAKE_EXE_LINKER_FLAGS={SANITIZE[0]}")
    nm = subprocess.run(["nm", str(tmp / "bundle" / "libemb.a")], capture_output=True, text=True).stdout
    assert "__asan_report_load" in nm, "the bundle's C API was not built with ASan"
    runner = build / "bundle"  # run_model, with model.so and weights.bin copied beside it
    assert (runner / "run_model").is_file() and (runner / "weights.bin").is_file() and (runner / "model.so").is_file()
    shutil.copy(build / "create_code", runner / "create_code")
    return runner


def _run(build: Path, ids: list[int], tmp: Path) -> subprocess.CompletedProcess:
    (tmp / "in.bin").write_bytes(np.array([ids], "<i8").tobytes())
    return subprocess.run([str(build / "run_model"), str(tmp / "in.bin"), str(tmp / "out.bin"), "1"],
                          capture_output=True, text=True, env=ENV, timeout=120)


def _assert_clean(result: subprocess.CompletedProcess) -> None:
    for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "UndefinedBehaviorSanitizer"):
        assert marker not in result.stderr, result.stderr[-4000:]


def test_asan_runner_matches_onnxruntime_on_good_ids(asan_runner, tmp_path):
    for ids in ([0, 5, 9], [-1, -10, 3]):
        result = _run(asan_runner, ids, tmp_path)
        _assert_clean(result)
        assert result.returncode == 0, result.stderr
        got = np.fromfile(tmp_path / "out.bin", "<f4").reshape(1, 3, 4)
        expected = zoo.ort_outputs(_embedding_model(), {"ids": np.array([ids], np.int64)})[0]
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("ids", [[0, 1, 10], [0, 5, 1000000], [-11, 0, 0], [0, -(2**62), 0]])
def test_asan_runner_refuses_out_of_range_ids(asan_runner, ids, tmp_path):
    result = _run(asan_runner, ids, tmp_path)
    _assert_clean(result)
    assert result.returncode == 1 and "index out of range" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out.bin").exists()


def _damaged(good: bytes) -> dict[str, bytes]:
    def put(offset: int, fmt: str, *values) -> bytes:
        out = bytearray(good)
        struct.pack_into(fmt, out, offset, *values)
        return bytes(out)

    entry0 = 40  # the first table entry (weights_file.py's layout)
    return {
        "count-huge": (put(12, "<I", 0xFFFFFFFF), "truncated or damaged"),
        "offset-past-end": (put(entry0 + 88, "<Q", len(good) + 64), "truncated or damaged"),
        "stored-wraps": (put(entry0 + 96, "<Q", 2**64 - 1), "truncated or damaged"),
        "nbytes-huge": (put(entry0 + 104, "<Q", 2**62), "truncated or damaged"),
        "shape-negative": (put(entry0 + 24, "<q", -10), "truncated or damaged"),
        "dtype-unknown": (put(entry0, "16s", b"complex64"), "truncated or damaged"),
        "ndim-huge": (put(entry0 + 16, "<I", 0xFFFFFFFF), "truncated or damaged"),
        "truncated-data": (good[: len(good) - 5], "truncated or damaged"),
        "codec": (put(24, "16s", b"zstd"), "unknown codec: zstd"),
        "magic": (b"ELF" + good[3:], "bad magic"),
        "empty": (b"", "bad magic"),
    }


def test_asan_runner_refuses_damaged_weights_files(asan_runner, tmp_path):
    weights = asan_runner / "weights.bin"
    good = weights.read_bytes()
    created = subprocess.run([str(asan_runner / "create_code"), str(asan_runner)], capture_output=True, text=True,
                             env=ENV, timeout=120)
    _assert_clean(created)
    assert created.stdout == "0 \n", created.stdout + created.stderr
    try:
        for name, (content, message) in _damaged(good).items():
            weights.write_bytes(content)
            result = _run(asan_runner, [0, 1, 2], tmp_path)
            _assert_clean(result)
            assert result.returncode == 1 and message in result.stderr, f"{name}: {result.stderr}"
            assert result.stderr.count("\n") == 1, f"{name}: {result.stderr}"
            created = subprocess.run([str(asan_runner / "create_code"), str(asan_runner)], capture_output=True,
                                     text=True, env=ENV, timeout=120)
            _assert_clean(created)
            assert created.returncode == 0 and created.stdout.startswith(f"{ERR_WEIGHTS} emb: "), \
                f"{name}: {created.stdout}{created.stderr}"
    finally:
        weights.write_bytes(good)
