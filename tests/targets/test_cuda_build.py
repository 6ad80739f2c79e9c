"""targets/cuda_build.py: CUDA libraries embed an nvcc-built fatbin, never CUDA source.

Needs nvcc (skipped without it), no GPU. The loader test runs TVM 0.27's real CUDA module loader
(`ffi.Module.load_from_bytes.cuda` in the wheel's libtvm_runtime_cuda.so) against model.so in a subprocess, with
a stub libcuda.so.1 standing in for the driver: loading never calls the driver, only launching does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
import tvm.relax.frontend.onnx
import tvm.s_tir.dlight as dl
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import cuda_build
from tvmcompress.targets.cuda_build import embed_device_code, extract_device_code, read_embedded_device_code

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH"),
]

ARCH = "sm_80"
TARGET = {"kind": "cuda", "arch": ARCH, "host": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}}


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _matmul_add_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((16, 8)).astype("float32"), "w"),
            numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "b"),
        ],
    )


def _conv_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    return _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype("float32"), "w")],
    )


def _softmax() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
    )


MODELS = {"matmul_add_relu": _matmul_add_relu, "conv_relu": _conv_relu, "softmax": _softmax}


def _compile_for_cuda(model: onnx.ModelProto):
    mod = relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)
    target = tvm.target.Target(TARGET)
    with target:
        mod = relax.get_pipeline("zero")(mod)
        mod = dl.ApplyDefaultSchedule(
            dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
        )(mod)
    return tvm.compile(mod, target)


@pytest.fixture(scope="module")
def matmul_library(tmp_path_factory) -> Path:
    fatbin_ex, _ = embed_device_code(_compile_for_cuda(_matmul_add_relu()), ARCH)
    path = tmp_path_factory.mktemp("matmul") / "model.so"
    fatbin_ex.export_library(path)
    return path


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found is None:
        sibling = Path(os.path.realpath(shutil.which("nvcc"))).parent / "cuobjdump"
        found = str(sibling) if sibling.exists() else None
    return found


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_library_embeds_sm80_fatbin_not_source(name, tmp_path):
    fatbin_ex, report = embed_device_code(_compile_for_cuda(MODELS[name]()), ARCH)
    path = tmp_path / "model.so"
    fatbin_ex.export_library(path)

    cuda = [m for m in read_embedded_device_code(path)["modules"] if m["kind"] == "cuda"]
    assert len(cuda) == 1
    assert cuda[0]["fmt"] == "fatbin"
    assert cuda[0]["size"] == report["fatbin_bytes"] > 0
    assert len(cuda[0]["kernels"]) == report["kernels"] > 0
    assert report["arch"] == ARCH
    # SASS for the chosen arch, plus PTX so newer GPUs can JIT it in the driver.
    assert {"kind": "elf", "arch": "sm_80"} in cuda[0]["fatbin_entries"]
    assert {"kind": "ptx", "arch": "compute_80"} in cuda[0]["fatbin_entries"]
    assert b"__global__" not in path.read_bytes()

    (fatbin,) = extract_device_code(path)
    assert len(fatbin) == report["fatbin_bytes"]
    cuobjdump = _cuobjdump()
    if cuobjdump is not None:
        (tmp_path / "kernels.fatbin").write_bytes(fatbin)
        listing = subprocess.run(
            [cuobjdump, "--list-elf", str(tmp_path / "kernels.fatbin")], capture_output=True, text=True, check=True
        ).stdout
        assert "sm_80" in listing


def test_plain_export_still_carries_source(tmp_path):
    # The problem this module solves: without embed_device_code the library holds CUDA source.
    path = tmp_path / "model.so"
    _compile_for_cuda(_softmax()).export_library(str(path))
    (cuda,) = [m for m in read_embedded_device_code(path)["modules"] if m["kind"] == "cuda"]
    assert cuda["fmt"] == "cuda"
    assert b"__global__" in path.read_bytes()


def test_c_source_packing_matches_llvm_packing(matmul_library, monkeypatch, tmp_path):
    # Without an LLVM host module the blob is emitted as C, as runtime.ModulePackImportsToC does.
    fatbin_ex, _ = embed_device_code(_compile_for_cuda(_matmul_add_relu()), ARCH)
    monkeypatch.setattr(cuda_build, "_find_llvm_target", lambda mod: None)
    path = tmp_path / "model.so"
    fatbin_ex.export_library(path)
    assert read_embedded_device_code(path) == read_embedded_device_code(matmul_library)
    assert extract_device_code(path) == extract_device_code(matmul_library)


def test_missing_nvcc_is_a_user_error(monkeypatch, tmp_path):
    executable = _compile_for_cuda(_softmax())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TvmcompressError, match="^nvcc not found: install the CUDA toolkit"):
        embed_device_code(executable, ARCH)


def test_bad_arch_is_a_user_error():
    with pytest.raises(TvmcompressError, match="invalid CUDA arch"):
        embed_device_code(object(), "ampere")


def _cudart_dir() -> Path | None:
    nvcc_home = Path(os.path.realpath(shutil.which("nvcc"))).parent.parent
    for candidate in (nvcc_home / "lib64", Path("/usr/local/cuda/lib64"), Path("/usr/lib/x86_64-linux-gnu")):
        if list(candidate.glob("libcudart.so.*")):
            return candidate
    return None


_LOAD_SCRIPT = textwrap.dedent(
    """
    import sys, tvm, tvm_ffi
    assert tvm.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True), "CUDA runtime not loaded"
    def refuse_jit(code):
        raise RuntimeError("JIT requested: the library carries CUDA source")
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", refuse_jit, override=True)
    def walk(m):
        yield m
        for child in m.imports:
            yield from walk(child)
    (cuda,) = [m for m in walk(tvm.runtime.load_module(sys.argv[1])) if m.kind == "cuda"]
    assert cuda.is_runnable() and cuda.implements_function(sys.argv[2])
    resaved = tvm.get_global_func("runtime.ModulePackImportsToTensor")(cuda).numpy().tobytes()
    open(sys.argv[3], "wb").write(resaved)
    """
)


def test_tvm_cuda_runtime_loads_fatbin_without_jit(matmul_library, tmp_path):
    runtime_cuda = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    cudart = _cudart_dir()
    if not runtime_cuda.exists() or cudart is None or shutil.which("gcc") is None:
        pytest.skip("needs the wheel's libtvm_runtime_cuda.so, libcudart and gcc")
    # The driver entry points libtvm_runtime_cuda.so links against; loading a module never calls them.
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(runtime_cuda)], capture_output=True, text=True)
    lines = undefined.stdout.splitlines()
    driver_symbols = sorted({line.split()[-1] for line in lines if re.match(r"\s*U cu[A-Z]", line)})
    stub_c = tmp_path / "libcuda.c"
    stub_c.write_text("".join(f"int {name}(void) {{ return 100; }}\n" for name in driver_symbols))
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp_path / "libcuda.so.1"), str(stub_c)],
        check=True,
    )
    env = dict(os.environ, LD_LIBRARY_PATH=f"{tmp_path}:{cudart}")
    kernel = read_embedded_device_code(matmul_library)["modules"][-1]["kernels"][0]
    resaved = tmp_path / "resaved.bin"
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(matmul_library), kernel, str(resaved)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The real CUDAModuleNode serializes back to exactly what we wrote: fmt "fatbin", the same fmap and fatbin.
    assert _cuda_payloads(resaved.read_bytes()) == _cuda_payloads(cuda_build._read_library_bin(matmul_library))


def _cuda_payloads(packed_imports: bytes) -> list[bytes]:
    return [p for kind, p in cuda_build._parse_packed_imports(packed_imports).modules if kind == "cuda"]
