"""Regression (issue 17): on a Sapphire Rapids host LLVM names the CPU `rocketlake` (model 167), whose mcpu has
no AMX or AVX512-BF16/FP16, so the host target did not know them. The host target now carries `mattr` for every
feature beyond AVX2 that /proc/cpuinfo reports. Checked with a fake cpuinfo (null tier: no build)."""

from __future__ import annotations

import tvm
from tvm.target import codegen

from tvmcompress.schedules import cpu_pipeline
from tvmcompress.targets import cpu_features, presets

_SAPPHIRE_RAPIDS_FLAGS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni "
    "avx512_bf16 avx512_fp16 avx_vnni amx_bf16 amx_tile amx_int8"
)
_ZEN3_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2"


def _fake_host(tmp_path, monkeypatch, mcpu: str, flags: str) -> cpu_features.CpuFeatures:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel\t\t: 167\nflags\t\t: {flags}\n\n")
    features = cpu_features.CpuFeatures(mcpu=mcpu, cores=4, flags=cpu_features._read_cpuinfo_flags(str(cpuinfo)))
    monkeypatch.setattr(cpu_features, "detect", lambda: features)
    return features


def test_host_target_knows_amx_and_bf16_that_llvms_host_name_lacks(tmp_path, monkeypatch):
    features = _fake_host(tmp_path, monkeypatch, "rocketlake", _SAPPHIRE_RAPIDS_FLAGS)
    assert features.llvm_mattr == ["+amx-bf16", "+amx-int8", "+amx-tile", "+avx512bf16", "+avx512bw", "+avx512f",
                                   "+avx512fp16", "+avx512vnni", "+avxvnni"]
    for target in (tvm.target.Target(presets.resolve_preset("host").tvm_target), cpu_pipeline.host_target(4)):
        assert str(target.attrs["mcpu"]) == "rocketlake"
        for feature in ("amx-int8", "amx-bf16", "avx512bf16", "avx512fp16", "avx512vnni"):
            assert codegen.target_has_features(feature, target), feature


def test_avx2_host_target_is_unchanged(tmp_path, monkeypatch):
    _fake_host(tmp_path, monkeypatch, "znver3", _ZEN3_FLAGS)
    host = presets.resolve_preset("host").tvm_target
    assert "mattr" not in host and host["mcpu"] == "znver3"
    assert "mattr" not in cpu_pipeline.host_target().attrs
