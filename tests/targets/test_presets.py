"""Target presets: names, raw JSON, toolchain facts, host detection. No builds."""

from __future__ import annotations

import pytest

from tvmcompress import TvmcompressError
from tvmcompress.targets import cpu_features, presets


@pytest.mark.parametrize(
    "name, arch, compiler, package, runner",
    [
        ("aarch64", "aarch64", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "qemu-aarch64"),
        ("arm64", "aarch64", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "qemu-aarch64"),
        ("aarch64-dotprod", "aarch64", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "qemu-aarch64"),
        ("armv7", "armv7", "arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf", "qemu-arm"),
        ("riscv64", "riscv64", "riscv64-linux-gnu-g++", "g++-riscv64-linux-gnu", "qemu-riscv64"),
        ("x86-64", "x86_64", "g++", "g++", "native"),
        ("cuda", "cuda", "g++", "g++", "gpu"),
    ],
)
def test_presets_know_their_toolchain_and_runner(name, arch, compiler, package, runner):
    preset = presets.resolve_preset(name)
    assert (preset.arch, preset.toolchain.compiler, preset.toolchain.debian_package, preset.runner) == (
        arch, compiler, package, runner,
    )


def test_dotprod_preset_enables_dotprod():
    assert "+dotprod" in presets.resolve_preset("aarch64-dotprod").tvm_target["mattr"]


def test_armv7_is_hard_float():
    target = presets.resolve_preset("armv7").tvm_target
    assert target["mfloat-abi"] == "hard" and "+neon" in target["mattr"]


def test_host_uses_detected_cpu():
    features = cpu_features.detect()
    host = presets.resolve_preset("host")
    assert host.tvm_target["mcpu"] == features.mcpu and host.tvm_target["num-cores"] == features.cores
    assert features.mcpu not in ("", "generic")


def test_cuda_arch():
    assert presets.resolve_preset("cuda:sm_90").tvm_target["arch"] == "sm_90"
    assert presets.resolve_preset("cuda").tvm_target["arch"] == presets.DEFAULT_CUDA_ARCH
    with pytest.raises(TvmcompressError, match="cuda:sm_80"):
        presets.resolve_preset("cuda:ampere")


def test_raw_json_target_gets_toolchain_from_triple():
    preset = presets.resolve_preset('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}')
    assert preset.toolchain.compiler == "aarch64-linux-gnu-g++" and preset.runner == "qemu-aarch64"
    assert preset.tvm_target["mcpu"] == "cortex-a72"


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("pdp11", "unknown target 'pdp11'"),
        ('{"kind": "llvm", "mtriple": "mips-linux-gnu"}', "mips-linux-gnu"),
        ('{"kind": "metal"}', "metal"),
        ('{"kind": "llvm",', "does not parse"),
    ],
)
def test_bad_targets_are_user_errors(spec, needle):
    with pytest.raises(TvmcompressError, match=needle):
        presets.resolve_preset(spec)


def test_with_cores_overrides_core_count():
    assert presets.with_cores(presets.resolve_preset("aarch64"), 8).tvm_target["num-cores"] == 8
    with pytest.raises(TvmcompressError):
        presets.with_cores(presets.resolve_preset("aarch64"), 0)


def test_full_target_json_is_plain_json():
    import json

    data = presets.full_target_json(presets.resolve_preset("armv7"))
    assert json.loads(json.dumps(data))["mtriple"] == "armv7a-linux-gnueabihf"
