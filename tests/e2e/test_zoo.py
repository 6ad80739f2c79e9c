"""The model zoo end to end: compile for each target, run where this machine can, compare with ONNX Runtime.

host runs natively; aarch64 runs under qemu-aarch64 with the aarch64 TVM runtime from PyPI; armv7 runs under
qemu-arm on a TVM runtime built here from the wheel's runtime sources (first use: minutes, then cached). riscv64 is
link-verified in the default suite and run under qemu-riscv64 in the slow tier. CUDA builds are checked for
embedded device code (no GPU here).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress.targets import qemu
from tvmcompress.targets.toolchain import readelf_header

# fp32 end to end, same math as ONNX Runtime up to reassociation: 1e-4 absolute, 1e-4 relative for large values.
RTOL = ATOL = 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Compile each (model, target) once per module."""
    cache: dict[tuple[str, str], tuple[tvmcompress.Artifact, onnx.ModelProto, dict]] = {}

    def get(name: str, target: str):
        if (name, target) not in cache:
            builder, shapes = zoo.ZOO[name]
            model = builder()
            base = tmp_path_factory.mktemp(f"{name}-{target.replace(':', '_')}")
            path = base / f"{name}.onnx"
            onnx.save(model, path)
            options = tvmcompress.CompileOptions.create(input_shapes=shapes)
            artifact = tvmcompress.compile(str(path), target, output=str(base / "out"), options=options)
            cache[(name, target)] = (artifact, model, shapes)
        return cache[(name, target)]

    return get


def _check_against_ort(artifact, model, shapes):
    feeds = zoo.random_inputs(model, shapes)
    expected = zoo.ort_outputs(model, feeds)
    got = artifact.run(feeds)
    assert list(got) == [o.name for o in model.graph.output]
    for want, have in zip(expected, got.values()):
        assert have.shape == want.shape and have.dtype == want.dtype
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_host_matches_onnxruntime(built, name):
    artifact, model, shapes = built(name, "host")
    assert artifact.manifest["target"]["runner"] == "native"
    _check_against_ort(artifact, model, shapes)


@pytest.mark.cross
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_aarch64_under_qemu_matches_onnxruntime(built, name):
    artifact, model, shapes = built(name, "aarch64")
    assert artifact.manifest["verification"]["elf"]["machine"] == "AArch64"
    _check_against_ort(artifact, model, shapes)


@pytest.mark.cross
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_armv7(built, name):
    artifact, model, shapes = built(name, "armv7")
    elf = artifact.manifest["verification"]["elf"]
    assert elf["machine"] == "ARM" and elf["class"] == "ELF32"
    assert "hard-float ABI" in elf["flags"]
    _check_against_ort(artifact, model, shapes)


@pytest.mark.cross
def test_riscv64_links_against_the_runtime(built):
    artifact, _, _ = built("cnn", "riscv64")
    header = readelf_header(artifact.library_path)
    assert header["Machine"] == "RISC-V" and header["Class"] == "ELF64"
    assert "double-float ABI" in header["Flags"]
    check = qemu.link_check("riscv64", artifact.library_path)
    assert check["ok"], check


@pytest.mark.cross
@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_riscv64_under_qemu_matches_onnxruntime(built, name):
    artifact, model, shapes = built(name, "riscv64")
    _check_against_ort(artifact, model, shapes)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_cuda_embeds_device_code(built, name):
    from tvmcompress.targets.cuda_build import read_embedded_device_code
    import shutil

    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    artifact, _, _ = built(name, "cuda")
    modules = [m for m in read_embedded_device_code(artifact.library_path)["modules"] if m["kind"] == "cuda"]
    assert modules and all(m["fmt"] == "fatbin" and m["size"] > 0 for m in modules)
    archs = {entry["arch"] for m in modules for entry in m["fatbin_entries"]}
    assert "sm_80" in archs
    assert b"__global__" not in open(artifact.library_path, "rb").read()


@pytest.mark.cross
def test_aarch64_runs_a_stacked_npz_in_one_qemu_process(built):
    artifact, model, _ = built("cnn", "aarch64")
    rng = np.random.default_rng(3)
    stacked = rng.standard_normal((5, 3, 16, 16)).astype(np.float32)  # 5 samples of batch 1
    got = artifact.run_batches({"x": stacked})["logits"]
    want = np.concatenate([zoo.ort_outputs(model, {"x": stacked[i : i + 1]})[0] for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
