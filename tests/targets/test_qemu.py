"""Running cross-compiled models under qemu-user (tvmcompress.targets.qemu).

Tiny ONNX models are imported with TVM's frontend, compiled for aarch64 / armv7, exported with the cross
compiler into tmp_path, run under qemu and compared with onnxruntime on this machine.

Tiers: tests marked `cross` need qemu-user and the cross g++; the armv7 and riscv64 runs are also `slow`
because the first one builds that TVM runtime from source (~8 minutes each on 2 cores; cached afterwards in
~/.cache/tvmcompress/runtime, or $TVMCOMPRESS_CACHE_DIR). The first aarch64 run downloads the aarch64
wheels (~100 MB, cached). Tests without marks need neither.
"""

from __future__ import annotations

import shutil
import struct
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import qemu, runtime_cache

# Float tolerance against onnxruntime: the cross-compiled kernels reorder float32 sums (vectorized
# reductions, fused multiply-add on ARM), which moves results by a few ulps; 1e-4 leaves ample margin for
# the magnitudes here (|values| < 20) while still catching wrong indexing or layout.
FLOAT_TOL = 1e-4

TARGETS = {
    "aarch64": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, "aarch64-linux-gnu-g++"),
    "armv7": (
        {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"], "mfloat-abi": "hard"},
        "arm-linux-gnueabihf-g++",
    ),
    "riscv64": (
        {"kind": "llvm", "mtriple": "riscv64-linux-gnu", "mattr": ["+m", "+a", "+f", "+d", "+c"], "mabi": "lp64d"},
        "riscv64-linux-gnu-g++",
    ),
}
ARCHES = [
    pytest.param("aarch64", marks=pytest.mark.cross),
    pytest.param("armv7", marks=[pytest.mark.cross, pytest.mark.slow]),
    pytest.param("riscv64", marks=[pytest.mark.cross, pytest.mark.slow]),
]


# ---- models ----------------------------------------------------------------------------------------------


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def _info(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def matmul_add_relu():
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])],
        [_info("x", TensorProto.FLOAT, [2, 8])], [_info("y", TensorProto.FLOAT, [2, 4])],
        [("w", weight), ("b", bias)],
    )
    return model, [rng.standard_normal((2, 8)).astype(np.float32)]


def conv_relu():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        [_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [("w", weight)],
    )
    return model, [rng.standard_normal((1, 3, 8, 8)).astype(np.float32)]


def two_outputs():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((5, 3)).astype(np.float32)
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Sigmoid", ["x"], ["z"])],
        [_info("x", TensorProto.FLOAT, [4, 5])],
        [_info("y", TensorProto.FLOAT, [4, 3]), _info("z", TensorProto.FLOAT, [4, 5])],
        [("w", weight)],
    )
    return model, [rng.standard_normal((4, 5)).astype(np.float32)]


def int64_gather():
    rng = np.random.default_rng(3)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    model = _model(
        [helper.make_node("Gather", ["table", "idx"], ["rows"], axis=0),
         helper.make_node("Add", ["idx", "idx"], ["twice"])],
        [_info("idx", TensorProto.INT64, [3])],
        [_info("rows", TensorProto.FLOAT, [3, 4]), _info("twice", TensorProto.INT64, [3])],
        [("table", table)],
    )
    return model, [np.array([7, 0, 3], dtype=np.int64)]


def small_dtypes():
    """int8, uint8, bool and int32 in and out."""
    model = _model(
        [helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
         helper.make_node("Where", ["c", "af", "bf"], ["picked"]),
         helper.make_node("Greater", ["d", "zero"], ["positive"]),
         helper.make_node("Cast", ["a"], ["ai"], to=TensorProto.INT32),
         helper.make_node("Add", ["ai", "d"], ["sum"])],
        [_info("a", TensorProto.INT8, [6]), _info("b", TensorProto.UINT8, [6]), _info("c", TensorProto.BOOL, [6]),
         _info("d", TensorProto.INT32, [6])],
        [_info("picked", TensorProto.FLOAT, [6]), _info("positive", TensorProto.BOOL, [6]),
         _info("sum", TensorProto.INT32, [6])],
        [("zero", np.array(0, dtype=np.int32))],
    )
    inputs = [
        np.array([-128, -5, 0, 3, 100, 127], dtype=np.int8),
        np.array([0, 1, 128, 200, 254, 255], dtype=np.uint8),
        np.array([True, False, True, False, True, False]),
        np.array([-7, 0, 5, 1 << 20, -(1 << 20), 2], dtype=np.int32),
    ]
    return model, inputs


def float16_add_mul():
    """float16 in and out: exercises the half<->float conversions of the runtime and compiled code."""
    model = _model(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Mul", ["s", "x"], ["p"])],
        [_info("x", TensorProto.FLOAT16, [2, 5]), _info("y", TensorProto.FLOAT16, [2, 5])],
        [_info("p", TensorProto.FLOAT16, [2, 5])],
    )
    rng = np.random.default_rng(4)
    return model, [rng.uniform(-4, 4, (2, 5)).astype(np.float16), rng.uniform(-4, 4, (2, 5)).astype(np.float16)]


def topk():
    """TopK calls the runtime's packed function tvm.contrib.sort.topk."""
    model = _model(
        [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1)],
        [_info("x", TensorProto.FLOAT, [2, 10])],
        [_info("values", TensorProto.FLOAT, [2, 3]), _info("indices", TensorProto.INT64, [2, 3])],
        [("k", np.array([3], dtype=np.int64))],
    )
    return model, [np.random.default_rng(5).permutation(20).reshape(2, 10).astype(np.float32)]


MODELS = [matmul_add_relu, conv_relu, two_outputs, int64_gather, small_dtypes, float16_add_mul, topk]


# ---- helpers ---------------------------------------------------------------------------------------------


def _compile(arch: str, model: onnx.ModelProto, out_dir: Path) -> Path:
    import tvm
    import tvm.relax.frontend.onnx
    import tvm.support.cc

    target, cxx = TARGETS[arch]
    mod = tvm.relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)
    executable = tvm.compile(mod, tvm.target.Target(target))
    library = out_dir / "model.so"
    executable.export_library(str(library), fcompile=tvm.support.cc.cross_compiler(cxx))
    return library


def _reference(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def _require(arch: str) -> None:
    reason = qemu.qemu_available(arch)
    if reason is not None:
        pytest.skip(reason)


# ---- running under qemu ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("make_model", MODELS, ids=lambda f: f.__name__)
def test_run_matches_onnxruntime(arch, make_model, tmp_path, request):
    _require(arch)
    if arch == "riscv64" and make_model is float16_add_mul:
        # A TVM 0.27 codegen bug, not the runtime: for rv64gc (no Zfh) LLVM passes the half argument of the
        # __extendhfsf2 libcall in fa0, but the weak __extendhfsf2 that TVM emits into model.so reads a0, so
        # every half input reads as garbage (the outputs come back as zeros). strict: tells us when it is fixed.
        request.applymarker(pytest.mark.xfail(strict=True, reason="TVM 0.27 riscv64 half-precision libcall ABI"))
    model, inputs = make_model()
    library = _compile(arch, model, tmp_path)

    outputs = qemu.run_under_qemu(arch, library, inputs)

    expected = _reference(model, inputs)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        if np.issubdtype(want.dtype, np.floating):
            # float16 results carry float16 rounding (rel. 2^-11) on both sides; compare at that scale.
            tol = 4e-3 if want.dtype == np.float16 else FLOAT_TOL
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.cross
def test_run_with_threads_matches_single_thread(tmp_path):
    _require("aarch64")
    model, inputs = conv_relu()
    library = _compile("aarch64", model, tmp_path)
    single = qemu.run_under_qemu("aarch64", library, inputs, num_threads=1)
    threaded = qemu.run_under_qemu("aarch64", library, inputs, num_threads=2)
    np.testing.assert_allclose(threaded[0], single[0], rtol=FLOAT_TOL, atol=FLOAT_TOL)


@pytest.mark.cross
def test_prepare_runtime_is_cached_and_complete():
    _require("aarch64")
    first = qemu.prepare_runtime("aarch64")
    start = time.perf_counter()
    again = qemu.prepare_runtime("aarch64")
    assert again == first
    assert time.perf_counter() - start < 1.0  # cached: a stamp comparison, no rebuild
    for name in ("lib/libtvm_runtime.so", "lib/libtvm_ffi.so", "bin/tvmcompress_runner", "stamp.json"):
        assert (first / name).is_file()


# ---- errors the user can fix -------------------------------------------------------------------------------


def test_missing_qemu_is_a_clear_error(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name.startswith("qemu") else real_which(name))
    reason = qemu.qemu_available("aarch64")
    assert reason == "qemu-aarch64 not found: install the Debian package qemu-user (apt-get install qemu-user)"
    library = tmp_path / "model.so"
    library.write_bytes(b"")
    with pytest.raises(TvmcompressError, match=r"^qemu-aarch64 not found: install .*qemu-user"):
        qemu.run_under_qemu("aarch64", library, [])


def test_missing_cross_compiler_is_a_clear_error(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name.endswith("-g++") else real_which(name))
    if real_which("qemu-arm") is None and real_which("qemu-arm-static") is None:
        pytest.skip("qemu-arm is not installed; the compiler check comes after it")
    if not Path("/usr/arm-linux-gnueabihf/lib/ld-linux-armhf.so.3").exists():
        pytest.skip("the armhf sysroot is not installed; the compiler check comes after it")
    assert qemu.qemu_available("armv7") == (
        "arm-linux-gnueabihf-g++ not found: install the Debian package g++-arm-linux-gnueabihf "
        "(apt-get install g++-arm-linux-gnueabihf)"
    )


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(TvmcompressError, match="unknown architecture 'mips': choose one of aarch64, armv7, riscv64"):
        qemu.qemu_available("mips")


@pytest.mark.cross
def test_library_for_another_arch_is_rejected_before_running(tmp_path):
    _require("aarch64")
    library = tmp_path / "model.so"
    # An ELF header whose e_machine (offset 18) is x86-64: what a host-compiled export would give.
    library.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + struct.pack("<H", 62) + bytes(46))
    with pytest.raises(TvmcompressError, match="built for x86-64, not aarch64: .* aarch64-linux-gnu-g\\+\\+"):
        qemu.run_under_qemu("aarch64", library, [])


@pytest.mark.cross
def test_wrong_input_count_and_dtype_are_clear_errors(tmp_path):
    _require("aarch64")
    model, inputs = matmul_add_relu()
    library = _compile("aarch64", model, tmp_path)
    with pytest.raises(TvmcompressError, match="function 'main' takes 1 inputs, got 2"):
        qemu.run_under_qemu("aarch64", library, inputs * 2)
    with pytest.raises(TvmcompressError, match="rejected the inputs"):
        qemu.run_under_qemu("aarch64", library, [inputs[0].astype(np.float64)])


def test_unsupported_input_dtype_is_a_clear_error(tmp_path):
    with pytest.raises(TvmcompressError, match="input 0 has dtype complex64, which is not supported"):
        qemu._write_tensor_file(tmp_path / "x.tensor", np.zeros(2, np.complex64), 0)


# ---- static checks ---------------------------------------------------------------------------------------


@pytest.mark.cross
@pytest.mark.parametrize("arch", ["aarch64", "armv7", "riscv64"])
def test_link_check_accepts_cross_compiled_model(arch, tmp_path):
    if shutil.which(TARGETS[arch][1]) is None:
        pytest.skip(f"{TARGETS[arch][1]} is not installed")
    model, _ = matmul_add_relu()
    report = qemu.link_check(arch, _compile(arch, model, tmp_path))
    assert report["ok"], report
    assert report["unexpected_undefined"] == []
    expected = {"aarch64": ("ELF64", "AArch64", ""), "armv7": ("ELF32", "ARM", "hard-float ABI"),
                "riscv64": ("ELF64", "RISC-V", "double-float ABI")}[arch]
    assert (report["class"], report["machine"]) == expected[:2] and expected[2] in report["flags"]


@pytest.mark.cross
def test_link_check_rejects_library_for_other_arch(tmp_path):
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ is not installed")
    model, _ = matmul_add_relu()
    report = qemu.link_check("armv7", _compile("aarch64", model, tmp_path))
    assert not report["ok"]
    assert report["checks"]["machine"] is False and report["checks"]["float_abi"] is False


# ---- the tensor file format and the cache lock (no toolchain needed) -------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1.5, -2.25], dtype=np.float16),
        np.array([-128, 127], dtype=np.int8),
        np.array([0, 255], dtype=np.uint8),
        np.array([1 << 40, -3], dtype=np.int64),
        np.array([[True], [False]]),
        np.array(3.0, dtype=np.float64),
        np.zeros((0, 4), dtype=np.int32),
        np.arange(4, dtype=">i4"),  # big-endian input is stored little-endian
    ],
    ids=lambda a: f"{a.dtype}-{a.shape}",
)
def test_tensor_file_round_trip(array, tmp_path):
    path = tmp_path / "t.tensor"
    qemu._write_tensor_file(path, array, 0)
    back = qemu._read_tensor_file(path)
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)


def test_tensor_file_round_trip_bfloat16(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    array = np.array([1.0, -0.5, 3.0], dtype=ml_dtypes.bfloat16)
    qemu._write_tensor_file(tmp_path / "t.tensor", array, 0)
    back = qemu._read_tensor_file(tmp_path / "t.tensor")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back.astype(np.float32), array.astype(np.float32))


def test_concurrent_prepare_builds_once(monkeypatch, tmp_path):
    """Four preparers at once: one builds, the others wait on the lock and then reuse its result."""
    monkeypatch.setenv("TVMCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(runtime_cache, "missing_tool", lambda spec: None)
    builds = []

    def fake_build(spec, target, expected):
        builds.append(spec.name)
        time.sleep(0.3)  # long enough for the other threads to reach the lock
        for name in ("lib/libtvm_ffi.so", "lib/libtvm_runtime.so", "bin/tvmcompress_runner"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(b"")
        runtime_cache._write_stamp(target, expected)

    monkeypatch.setattr(runtime_cache, "_build_fresh", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(qemu.prepare_runtime("aarch64"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == ["aarch64"]
    assert len(results) == 4 and len(set(results)) == 1
    assert results[0].parent == tmp_path / "runtime"
