"""int8 codegen: the quantized digits CNN uses the target's dot-product instruction.

vpdpbusd (AVX-512 VNNI) is checked in cascadelake assembly and sdot in aarch64-dotprod assembly; this machine
(AVX2) runs neither, so numerics are checked (a) for the packed compute on the host with the instruction left
out, and (b) for the sdot build under qemu-aarch64 (marked `cross`), bit for bit against the host's int8 build.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight

from tvmcompress.frontend import canonicalize, import_to_relax, load_model
from tvmcompress.passes.quantize import quantize
from tvmcompress.passes.quantize_config import QuantizeConfig
from tvmcompress.schedules.int8_rules import AVX2, SDOT, VNNI, Int8DotProduct, dot_intrin_for, make_int8_legalize_map

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASCADELAKE = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}
AARCH64_DOTPROD = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+v8.2a", "+dotprod"]}


def int8_pipeline(target: tvm.target.Target, intrin=None) -> tvm.transform.Pass:
    """TVM's CPU pipeline with the int8 legalization first and the int8 rule as the only schedule rule."""

    @tvm.transform.module_pass(opt_level=0, name="test.int8_pipeline")
    def _pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(
                [
                    relax.transform.LegalizeOps(customize_legalize_map=make_int8_legalize_map(intrin=intrin)),
                    *cpu_generic.legalize_passes(target),
                    dlight.ApplyDefaultSchedule(Int8DotProduct()),
                    *cpu_generic.dataflow_lower_passes(target),
                    *cpu_generic.finalize_passes(target),
                ]
            )(mod)

    return _pipeline


@pytest.fixture(scope="module")
def digits():
    data = np.load(EXAMPLES / "digits_test.npz")
    mod = import_to_relax(canonicalize(load_model(EXAMPLES / "digits_cnn.onnx")))
    return mod, data["input"], data["label"]


@pytest.fixture(scope="module")
def quantized(digits):
    mod, x, _ = digits
    samples = [{"input": x[i : i + 1]} for i in range(0, 360, 12)]  # calibration quality is not under test here
    cache = {}

    def get(activation_dtype: str) -> tvm.IRModule:
        if activation_dtype not in cache:
            cache[activation_dtype] = quantize(mod, QuantizeConfig(activation_dtype=activation_dtype), samples)[0]
        return cache[activation_dtype]

    return get


def _asm(executable) -> str:
    return executable.mod.imports[0].inspect_source("asm")


def _functions(asm: str) -> dict[str, str]:
    """Assembly split into functions: {symbol: body}, from each `.type sym,@function` to the next. The body of a
    parallel loop is a `__tvm_parallel_lambda` function that LLVM emits after the function it belongs to: it is
    counted as part of that function."""
    parts = re.split(r"\.type\s+([\w.$]+),@function", asm)
    functions: dict[str, str] = {}
    owner = None
    for i in range(1, len(parts) - 1, 2):
        if "__tvm_parallel_lambda" in parts[i] and owner is not None:
            functions[owner] += parts[i + 1]
        else:
            owner = parts[i]
            functions[owner] = parts[i + 1]
    return functions


def test_target_intrinsics():
    assert dot_intrin_for(tvm.target.Target(CASCADELAKE)) is VNNI
    assert dot_intrin_for(tvm.target.Target(AARCH64_DOTPROD)) is SDOT
    # AVX2 without VNNI: vpmaddubsw (test_int8_avx2.py); SSE-only x86 has none.
    assert dot_intrin_for(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})) is AVX2
    assert dot_intrin_for(tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"})) is None
    assert dot_intrin_for(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})) is None


@pytest.mark.parametrize("config,activation_dtype", [(CASCADELAKE, "uint8"), (AARCH64_DOTPROD, "int8")], ids=["vnni", "sdot"])
def test_int8_digits_uses_dot_instruction(quantized, config, activation_dtype):
    target = tvm.target.Target(config)
    intrin = dot_intrin_for(target)
    executable = tvm.compile(quantized(activation_dtype), target, relax_pipeline=int8_pipeline(target))
    functions = _functions(_asm(executable))
    # The dense layer is tensorized by the rule; the convs get the instruction from LLVM itself.
    with_instruction = sorted(name for name, body in functions.items() if intrin.instruction in body)
    assert any("int8_dense" in name for name in with_instruction), with_instruction
    assert any("conv2d" in name for name in with_instruction), with_instruction


def test_without_the_rule_dense_does_not_get_vpdpbusd(quantized):
    # Why the rule exists: LLVM alone turns the plain u8 x s8 matmul into vpmaddwd, not vpdpbusd.
    functions = _functions(_asm(tvm.compile(quantized("uint8"), tvm.target.Target(CASCADELAKE))))
    dense = [body for name, body in functions.items() if "matmul" in name]
    assert dense and not any("vpdpbusd" in body for body in dense)


@pytest.mark.parametrize("intrin", [VNNI, SDOT], ids=["vnni-packing", "sdot-packing"])
def test_packed_compute_is_exact_on_host(digits, quantized, intrin):
    # The packed layout and the N padding (10 -> 16 or 12 outputs) run here with the rule skipped (the host has
    # neither instruction), so the integer result must equal the plain int8 build bit for bit.
    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    mod = quantized(intrin.activation_dtype)
    _, x, _ = digits
    packed = relax.VirtualMachine(tvm.compile(mod, host, relax_pipeline=int8_pipeline(host, intrin)), tvm.cpu())
    plain = relax.VirtualMachine(tvm.compile(mod, host), tvm.cpu())
    for i in range(0, 360, 45):
        image = tvm.runtime.tensor(x[i : i + 1])
        np.testing.assert_array_equal(packed["main"](image).numpy(), plain["main"](image).numpy())


@pytest.mark.cross
def test_sdot_build_runs_bit_exact_under_qemu(digits, quantized, tmp_path):
    from tvmcompress.targets.qemu import qemu_available, run_under_qemu

    missing = qemu_available("aarch64")
    if missing or shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip(f"aarch64 cross toolchain/qemu missing: {missing}")
    target = tvm.target.Target(AARCH64_DOTPROD)
    mod = quantized("int8")
    executable = tvm.compile(mod, target, relax_pipeline=int8_pipeline(target))
    library = tmp_path / "digits_int8_sdot.so"
    executable.export_library(str(library), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    reference = relax.VirtualMachine(tvm.compile(mod, host), tvm.cpu())
    _, x, _ = digits
    for i in (0, 123, 359):
        (out,) = run_under_qemu("aarch64", library, [x[i : i + 1]])
        np.testing.assert_array_equal(out, reference["main"](tvm.runtime.tensor(x[i : i + 1])).numpy())


@pytest.mark.cross
def test_sdot_cpu_pipeline_build_runs_bit_exact_under_qemu(digits, quantized, tmp_path):
    # tvmcompress's own pipeline: NHWC int8 convs and the dense tensorized with sdot, register-tiled, parallel.
    from tvmcompress.schedules.cpu_pipeline import cpu_pipeline
    from tvmcompress.targets.qemu import qemu_available, run_under_qemu

    missing = qemu_available("aarch64")
    if missing or shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip(f"aarch64 cross toolchain/qemu missing: {missing}")
    target = tvm.target.Target({**AARCH64_DOTPROD, "num-cores": 2})
    mod = quantized("int8")
    executable = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))
    functions = _functions(_asm(executable))
    assert any("int8_conv2d" in name for name in functions) and "sdot" in _asm(executable)
    library = tmp_path / "digits_int8_sdot_cpu_pipeline.so"
    executable.export_library(str(library), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    host = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    reference = relax.VirtualMachine(tvm.compile(mod, host), tvm.cpu())
    _, x, _ = digits
    for i in (0, 123, 359):
        (out,) = run_under_qemu("aarch64", library, [x[i : i + 1]])
        np.testing.assert_array_equal(out, reference["main"](tvm.runtime.tensor(x[i : i + 1])).numpy())
