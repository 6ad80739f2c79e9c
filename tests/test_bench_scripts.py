"""The measuring tools under bench/ whose numbers BENCHMARKS.md publishes: they run, and count what they claim.

No timing assertions (timings belong in BENCHMARKS.md); these check that the instruction loops assemble and run,
and that profile_kernels counts an int8 convolution's multiply-accumulates exactly.
"""

from __future__ import annotations

import pathlib
import platform
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))

import bench_int8_peak  # noqa: E402
import profile_kernels  # noqa: E402

import tvmcompress  # noqa: E402
from tvmcompress.config import CompileOptions  # noqa: E402
from tvmcompress.passes.quantize_config import QuantizeConfig  # noqa: E402
from tvmcompress.targets import cpu_features  # noqa: E402

x86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 instruction loops")


@x86
def test_peak_loops_assemble_all_rows_and_run_those_the_cpu_has(monkeypatch):
    monkeypatch.setattr(bench_int8_peak, "ITERATIONS", 200_000)
    features = cpu_features.detect()
    peaks = bench_int8_peak.measure(features)
    expected = {s.key for s in bench_int8_peak.sequences() if s.requires <= features.flags}
    assert set(peaks) == expected  # VNNI rows were assembled (the compile succeeded) but only run where present
    assert all(value > 0 for value in peaks.values())
    if "avx2" in features.flags and "fma" in features.flags:
        fp32, int8, ratio = bench_int8_peak.int8_ceiling(peaks)
        assert fp32.startswith("fp32-fma") and int8.startswith("int8-") and ratio > 0


@x86
@pytest.mark.skipif(shutil.which("as") is None or shutil.which("objcopy") is None, reason="needs GNU as and objcopy")
def test_avx_vnni_bytes_match_the_mnemonic_where_the_assembler_knows_it(tmp_path):
    # Issue 17: an assembler rejected `{vex} vpdpbusd`, so the row is written as bytes. Where this assembler
    # accepts the mnemonic, both must assemble to the same machine code.
    mnemonic = "".join(f"{{vex}} vpdpbusd %ymm14, %ymm15, %ymm{i}\n" for i in range(12))
    (tmp_path / "m.s").write_text(mnemonic)
    if subprocess.run(["as", str(tmp_path / "m.s"), "-o", str(tmp_path / "m.o")], capture_output=True).returncode:
        pytest.skip("this assembler does not know AVX-VNNI's {vex} vpdpbusd; the bytes cannot be compared")
    (tmp_path / "b.s").write_text("".join(bench_int8_peak._vex_vpdpbusd_ymm(i) + "\n" for i in range(12)))
    subprocess.run(["as", str(tmp_path / "b.s"), "-o", str(tmp_path / "b.o")], check=True)
    for name in ("m", "b"):
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / f"{name}.o"),
                        str(tmp_path / f"{name}.bin")], check=True)
    code = (tmp_path / "m.bin").read_bytes()
    assert len(code) == 60 and code == (tmp_path / "b.bin").read_bytes()


def test_profile_kernels_counts_an_int8_convolutions_macs(tmp_path):
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.2, (32, 16, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "conv.onnx")
    np.savez(tmp_path / "calibration.npz", x=rng.normal(size=(4, 16, 8, 8)).astype(np.float32))
    options = CompileOptions.create(quantize=QuantizeConfig(mode="int8"), calibration=str(tmp_path / "calibration.npz"))
    tvmcompress.compile(str(tmp_path / "conv.onnx"), "host", output=tmp_path / "int8", options=options)

    kernels = profile_kernels.profile(tmp_path / "int8")
    assert kernels and all(k.ms > 0 and k.calls >= 1 for k in kernels)
    dot = [k for k in kernels if k.int8_dot_macs]
    if not _has_dot_instruction():
        assert not dot  # no dot-product kernel on a host without one
        return
    assert len(dot) == 1 and dot[0].int8_dot_macs == 8 * 8 * 32 * 16 * 3 * 3


def _has_dot_instruction() -> bool:
    from tvmcompress.schedules.cpu_pipeline import host_target
    from tvmcompress.schedules.int8_rules import dot_intrin_for

    return dot_intrin_for(host_target()) is not None
