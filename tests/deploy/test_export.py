"""`tvmcompress export`: deploy bundles whose run_model (C, built with CMake, no Python at run time) matches
ONNX Runtime, natively on x86-64 and under qemu-user for aarch64 / armv7; the C API's error codes; two
models in one static program; separate weights.

Tolerance: 1e-4 absolute against ONNX Runtime (float32 logits of magnitude < 20; the kernels reorder sums
and ARM fuses multiply-adds, which moves results by a few ulps). A static bundle is rebuilt from the
artifact's Relax module with the same pipeline, so it must equal the artifact's model.so bit for bit.
Tiers: the mlp natively (static, shared, separate weights) and under qemu-aarch64 in the default suite; the
digits CNN and the zoo CNN on x86-64 / aarch64 / armv7, the shared aarch64 bundle, two-model programs and
separate weights on aarch64 / riscv64 are `slow`; everything under qemu is `cross`.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

import zoo
from export_helpers import HERE, cmake_build, command_for, run_model
from tvmcompress import CompileOptions, compile as tvmc_compile, load
from tvmcompress.cli import main
from tvmcompress.targets.runtime_cache import FOREIGN_ARCHES, missing_tool

REPO = HERE.parent.parent
DIGITS = REPO / "examples" / "digits_cnn.onnx"
TOL = 1e-4

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


def _digits_samples(count: int) -> np.ndarray:
    return np.load(REPO / "examples" / "digits_test.npz")["input"][:count]


def _ort(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return zoo.ort_outputs(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)), feeds)


def _cross_ready(arch: str):
    reason = missing_tool(FOREIGN_ARCHES[arch])
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def mlp_x86(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mlp_x86")
    (tmp / "mlp.onnx").write_bytes(zoo.mlp().SerializeToString())
    tvmc_compile(tmp / "mlp.onnx", "x86-64", output=tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def mlp_x86_static(mlp_x86, tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("static") / "bundle"
    load(mlp_x86).export(bundle, static=True, name="mlp_static")
    return bundle


@pytest.fixture(scope="module")
def mlp_x86_shared(mlp_x86, tmp_path_factory) -> tuple[Path, dict]:
    """A shared bundle named `m`, exported by the CLI with --json; (bundle, the printed summary)."""
    bundle = tmp_path_factory.mktemp("shared") / "bundle"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["export", str(mlp_x86), "-o", str(bundle), "--name", "m", "--json"]) == 0
    return bundle, json.loads(stdout.getvalue())


def _check_static_x86_bundle(artifact_dir: Path, bundle: Path, model_path: Path, inputs: list[dict], tmp_path):
    info = json.loads((bundle / "bundle.json").read_text())
    name = info["name"]
    assert info["static"] is True and info["system_lib_prefix"] == f"tvmc_{name}_"
    assert set(info["files"]) >= {"model.h", f"lib{name}.a", "main.c", "CMakeLists.txt", "cmake/toolchain.cmake",
                                  "runtime/lib/libtvm_runtime.so", "runtime/lib/libtvm_ffi.so"}
    assert not (bundle / "model.so").exists()
    # The toolchain file named on the command line, as the README says.
    build = cmake_build(bundle, tmp_path / "build", f"-DCMAKE_TOOLCHAIN_FILE={bundle / 'cmake' / 'toolchain.cmake'}")
    artifact = load(artifact_dir)
    for index, feeds in enumerate(inputs):
        ordered = [feeds[spec.name] for spec in artifact.inputs]
        got = run_model("x86_64", build / "run_model", ordered, artifact.outputs, tmp_path, threads=index % 2 + 1)
        for value, expected, (_, same) in zip(got, _ort(model_path, feeds), artifact.run(feeds).items()):
            np.testing.assert_allclose(value, expected, atol=TOL, rtol=0)
            np.testing.assert_array_equal(value, same)


def test_static_x86_bundle_matches_ort_and_the_artifact(mlp_x86, mlp_x86_static, tmp_path):
    inputs = [zoo.random_inputs(zoo.mlp(), {}, seed=seed) for seed in (1, 2)]
    _check_static_x86_bundle(mlp_x86, mlp_x86_static, mlp_x86.parent / "mlp.onnx", inputs, tmp_path)


@pytest.mark.slow
def test_static_x86_bundle_of_the_digits_cnn(tmp_path):
    artifact = tvmc_compile(DIGITS, "x86-64", output=tmp_path / "out")
    artifact.export(tmp_path / "bundle", static=True)
    inputs = [{"input": sample[None]} for sample in _digits_samples(3)]
    _check_static_x86_bundle(tmp_path / "out", tmp_path / "bundle", DIGITS, inputs, tmp_path)


def test_generated_main_c_compiles_with_all_warnings_as_errors(mlp_x86_static, tmp_path):
    for compiler in ["gcc", "aarch64-linux-gnu-gcc", "arm-linux-gnueabihf-gcc"]:
        if shutil.which(compiler) is None:
            continue
        result = subprocess.run(
            [compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(mlp_x86_static), "-c",
             str(mlp_x86_static / "main.c"), "-o", str(tmp_path / "main.o")],
            capture_output=True, text=True,
        )
        assert result.returncode == 0, f"{compiler}: {result.stderr}"


def test_export_json_summary_lists_files_and_sizes(mlp_x86, mlp_x86_shared):
    bundle, summary = mlp_x86_shared
    assert summary["bundle"] == str(bundle) and summary["name"] == "m" and summary["static"] is False
    on_disk = {str(p.relative_to(bundle)): p.stat().st_size for p in bundle.rglob("*") if p.is_file()}
    assert summary["files"] == on_disk
    assert on_disk["model.so"] == (mlp_x86 / "model.so").stat().st_size


def test_c_api_reports_wrong_use_with_error_codes(mlp_x86_shared, tmp_path):
    """The shared bundle (model.so read at create time) driven by api_errors.c."""
    bundle, _ = mlp_x86_shared
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(HERE / "api_errors.c", source / "main.c")
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(api_errors C CXX)\n"
        f'add_subdirectory("{bundle}" bundle)\n'
        "add_executable(api_errors main.c)\ntarget_link_libraries(api_errors PRIVATE tvmcompress::m)\n"
        "set_target_properties(api_errors PROPERTIES LINKER_LANGUAGE CXX)\n"
    )
    build = cmake_build(source, tmp_path / "build")
    # The bundle's own CMakeLists copies model.so beside its run_model; for this program we do it here.
    shutil.copy(bundle / "model.so", build / "model.so")
    result = subprocess.run([str(build / "api_errors")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" ", 1)[0]: line.split(" ", 2)[1:] for line in result.stdout.splitlines()}
    codes = {case: int(rest[0]) for case, rest in lines.items()}
    assert codes == {
        "create_null_out": 1, "create_negative_threads": 1, "create_missing_dir": 2, "run_null_model": 1,
        "create": 0, "run_null_arrays": 1, "run_null_input_buffer": 1, "run": 0,
    }
    assert lines["create_missing_dir"][1] == "m: cannot read /nonexistent-dir/model.so: pass the directory holding model.so"
    assert lines["run_null_input_buffer"][1] == "m: run: inputs[0] is NULL"


@pytest.mark.cross
def test_aarch64_static_bundle_runs_under_qemu(tmp_path):
    _cross_ready("aarch64")
    model = zoo.mlp()
    (tmp_path / "mlp.onnx").write_bytes(model.SerializeToString())
    artifact = tvmc_compile(tmp_path / "mlp.onnx", "aarch64", output=tmp_path / "out")
    bundle = tmp_path / "bundle"
    assert main(["export", str(artifact.directory), "-o", str(bundle), "--static"]) == 0
    assert json.loads((bundle / "bundle.json").read_text())["name"] == "mlp"  # from the model's file name
    build = cmake_build(bundle, tmp_path / "build")
    header = subprocess.run(["readelf", "-h", str(build / "run_model")], capture_output=True, text=True).stdout
    assert "AArch64" in header
    feeds = zoo.random_inputs(model, {})
    (got,) = run_model("aarch64", build / "run_model", [feeds["x"]], artifact.outputs, tmp_path, threads=2)
    np.testing.assert_allclose(got, _ort(model, feeds)[0], atol=TOL, rtol=0)


def test_export_of_a_bad_artifact_is_one_line_exit_2_and_no_bundle(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "missing"), "-o", str(bundle), "--static"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a tvmcompress artifact (no manifest.json)" in err
    assert not bundle.exists() and list(tmp_path.iterdir()) == []


def test_export_rejects_a_name_that_is_not_a_c_identifier(mlp_x86, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["export", str(mlp_x86), "-o", str(bundle), "--name", "my-model"]) == 2
    assert capsys.readouterr().err == "tvmcompress: error: bad --name 'my-model': use a C identifier such as my_model\n"
    assert list(tmp_path.iterdir()) == []


def test_export_does_not_replace_a_directory_that_is_not_a_bundle(mlp_x86, tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.c").write_text("int main(void) { return 0; }\n")
    assert main(["export", str(mlp_x86), "-o", str(project)]) == 2
    assert "exists and is not an export bundle: choose another -o path" in capsys.readouterr().err
    assert [p.name for p in project.iterdir()] == ["main.c"]


# ---- slow: the acceptance matrix -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.cross
@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
@pytest.mark.parametrize("which", ["digits", "zoo_cnn"])
def test_static_bundles_of_real_models_run_under_qemu(arch, which, tmp_path):
    _cross_ready(arch)
    if which == "digits":
        model_path, x = DIGITS, _digits_samples(1)
    else:
        model_path = tmp_path / "zoo_cnn.onnx"
        model_path.write_bytes(zoo.cnn().SerializeToString())
        x = zoo.random_inputs(zoo.cnn(), {})["x"]
    artifact = tvmc_compile(model_path, arch, output=tmp_path / "out")
    bundle = tmp_path / "bundle"
    artifact.export(bundle, static=True)
    build = cmake_build(bundle, tmp_path / "build", f"-DCMAKE_TOOLCHAIN_FILE={bundle / 'cmake' / 'toolchain.cmake'}")
    (got,) = run_model(arch, build / "run_model", [x], artifact.outputs, tmp_path)
    input_name = artifact.inputs[0].name
    np.testing.assert_allclose(got, _ort(model_path, {input_name: x})[0], atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.cross
def test_shared_aarch64_bundle_runs_under_qemu(tmp_path):
    _cross_ready("aarch64")
    artifact = tvmc_compile(DIGITS, "aarch64", output=tmp_path / "out")
    bundle = tmp_path / "bundle"
    artifact.export(bundle)
    build = cmake_build(bundle, tmp_path / "build")
    assert (build / "model.so").is_file()  # copied beside run_model, where create(NULL, ...) looks
    x = _digits_samples(1)
    (got,) = run_model("aarch64", build / "run_model", [x], artifact.outputs, tmp_path)
    np.testing.assert_allclose(got, _ort(DIGITS, {"input": x})[0], atol=TOL, rtol=0)


def _two_model_program(tmp_path: Path, target: str) -> tuple[Path, list]:
    """digits + zoo_cnn, both static, linked into two_models.c; returns the build dir and the artifacts."""
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    zoo_path = tmp_path / "zoo_cnn.onnx"
    zoo_path.write_bytes(zoo.cnn().SerializeToString())
    artifacts = []
    for name, path in (("digits", DIGITS), ("zoo_cnn", zoo_path)):
        artifact = tvmc_compile(path, target, output=tmp_path / f"out_{name}")
        artifact.export(bundles / name, static=True, name=name)
        artifacts.append(artifact)
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(HERE / "two_models.c", source / "main.c")
    # Both bundles define an imported target; the runtime comes from one of them (they are the same files).
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\n"
        f'set(CMAKE_TOOLCHAIN_FILE "{bundles / "digits" / "cmake" / "toolchain.cmake"}")\n'
        "project(two_models C CXX)\n"
        "find_package(Threads REQUIRED)\n"
        "add_executable(two_models main.c)\n"
        f'target_include_directories(two_models PRIVATE "{bundles}")\n'
        f'target_link_libraries(two_models PRIVATE "{bundles}/digits/libdigits.a" "{bundles}/zoo_cnn/libzoo_cnn.a"\n'
        f'  -Wl,--no-as-needed "{bundles}/digits/runtime/lib/libtvm_runtime.so" "{bundles}/digits/runtime/lib/libtvm_ffi.so"\n'
        "  -Wl,--as-needed Threads::Threads ${CMAKE_DL_LIBS} m)\n"
        f'set_target_properties(two_models PROPERTIES LINKER_LANGUAGE CXX BUILD_RPATH "{bundles}/digits/runtime/lib")\n'
    )
    return cmake_build(source, tmp_path / "build"), artifacts


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86-64", pytest.param("aarch64", marks=pytest.mark.cross)])
def test_two_static_models_link_into_one_program(target, tmp_path):
    arch = "x86_64" if target == "x86-64" else target
    if arch != "x86_64":
        _cross_ready(arch)
    build, (digits, zoo_cnn) = _two_model_program(tmp_path, target)
    x_a = _digits_samples(1)
    x_b = zoo.random_inputs(zoo.cnn(), {})["x"]
    x_a.astype("<f4").tofile(tmp_path / "a.bin")
    x_b.astype("<f4").tofile(tmp_path / "b.bin")
    result = subprocess.run(
        [*command_for(arch, build / "two_models"), *(str(tmp_path / f) for f in ("a.bin", "b.bin", "oa.bin", "ob.bin"))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    got_a = np.fromfile(tmp_path / "oa.bin", "<f4").reshape(digits.outputs[0].shape)
    got_b = np.fromfile(tmp_path / "ob.bin", "<f4").reshape(zoo_cnn.outputs[0].shape)
    np.testing.assert_allclose(got_a, _ort(DIGITS, {"input": x_a})[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(got_b, _ort(zoo.cnn(), {"x": x_b})[0], atol=TOL, rtol=0)


# ---- separate weights ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_separate(tmp_path_factory) -> tuple[Path, onnx.ModelProto]:
    tmp = tmp_path_factory.mktemp("separate")
    model = zoo.mlp()
    (tmp / "mlp.onnx").write_bytes(model.SerializeToString())
    tvmc_compile(tmp / "mlp.onnx", "x86-64", output=tmp / "out", options=CompileOptions.create(separate_weights=True))
    return tmp / "out", model


def test_separate_weights_artifact_runs_from_weights_bin(mlp_separate, mlp_x86):
    out, model = mlp_separate
    artifact = load(out)
    assert artifact.manifest["separate_weights"] is True
    weights = artifact.weight_arrays()
    param_bytes = 4 * sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    # 3 matrices and 3 biases, in the layout the kernels read (packing pads the 10-wide layer: more bytes).
    assert len(weights) == 6 and param_bytes <= sum(w.nbytes for w in weights) < 1.1 * param_bytes
    # The weights left model.so: it shrank by about their size against the embedded build of the same model.
    shrink = (mlp_x86 / "model.so").stat().st_size - (out / "model.so").stat().st_size
    assert shrink > 0.9 * param_bytes
    feeds = zoo.random_inputs(model, {})
    np.testing.assert_allclose(artifact.run(feeds)["logits"], _ort(model, feeds)[0], atol=TOL, rtol=0)


def test_separate_weights_static_bundle_loads_weights_bin_and_rejects_a_bad_one(mlp_separate, tmp_path):
    out, model = mlp_separate
    bundle = tmp_path / "bundle"
    load(out).export(bundle, static=True)
    assert (bundle / "weights.bin").read_bytes() == (out / "weights.bin").read_bytes()
    build = cmake_build(bundle, tmp_path / "build")
    feeds = zoo.random_inputs(model, {})
    (got,) = run_model("x86_64", build / "run_model", [feeds["x"]], load(out).outputs, tmp_path)
    np.testing.assert_allclose(got, _ort(model, feeds)[0], atol=TOL, rtol=0)

    weights = build / "weights.bin"  # beside run_model, where create(NULL, ...) reads it
    good = weights.read_bytes()
    cases = {
        b"not a weights file": "not a tvmcompress weights file (bad magic)",
        good[:200]: "weights file is truncated or damaged",
        good[:24] + b"zstd".ljust(16, b"\0") + good[40:]: "weights file uses an unknown codec: zstd",
    }
    for content, message in cases.items():
        weights.write_bytes(content)
        result = subprocess.run([str(build / "run_model"), str(tmp_path / "in.bin"), str(tmp_path / "o.bin")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.cross
@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_separate_weights_on_foreign_targets(arch, tmp_path):
    """Artifact.run under qemu passes weights.bin's tensors; the static bundle's run_model loads the file."""
    _cross_ready(arch)
    model = zoo.mlp()
    (tmp_path / "mlp.onnx").write_bytes(model.SerializeToString())
    artifact = tvmc_compile(tmp_path / "mlp.onnx", arch, output=tmp_path / "out",
                            options=CompileOptions.create(separate_weights=True))
    feeds = zoo.random_inputs(model, {})
    expected = _ort(model, feeds)[0]
    np.testing.assert_allclose(artifact.run(feeds)["logits"], expected, atol=TOL, rtol=0)
    artifact.export(tmp_path / "bundle", static=True)
    build = cmake_build(tmp_path / "bundle", tmp_path / "build")
    (got,) = run_model(arch, build / "run_model", [feeds["x"]], artifact.outputs, tmp_path)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


@pytest.mark.slow
def test_compressed_weights_decode_in_the_c_bundle(tmp_path):
    """--compress-weights writes weights.bin with codec "tvcw"; the bundle's reader decodes it with the C codec,
    whose symbols stay local to lib<name>.a (two models may each carry one)."""
    model = zoo.mlp()
    (tmp_path / "mlp.onnx").write_bytes(model.SerializeToString())
    artifact = tvmc_compile(tmp_path / "mlp.onnx", "x86-64", output=tmp_path / "out",
                            options=CompileOptions.create(compress_weights=True))
    from tvmcompress.weights_file import read_header

    assert read_header(tmp_path / "out" / "weights.bin")[0] == "tvcw"
    artifact.export(tmp_path / "bundle", static=True)
    symbols = subprocess.run(["nm", str(tmp_path / "bundle" / "libmlp.a")], capture_output=True, text=True).stdout
    assert " t tvcw_decode\n" in symbols and " T tvcw_decode\n" not in symbols
    build = cmake_build(tmp_path / "bundle", tmp_path / "build")
    feeds = zoo.random_inputs(model, {})
    (got,) = run_model("x86_64", build / "run_model", [feeds["x"]], artifact.outputs, tmp_path)
    np.testing.assert_allclose(got, _ort(model, feeds)[0], atol=TOL, rtol=0)


def test_sub_byte_io_is_declared_in_the_carrier_type_c_sees():
    from tvmcompress.artifact import IOSpec
    from tvmcompress.deploy import _io_constants

    specs = [IOSpec("q", (2, 3), "int4", "int8"), IOSpec("f", (4,), "float4e2m1", "float32"), IOSpec("x", (5,), "float32")]
    text = "\n".join(_io_constants("m", "input", specs))
    assert 'm_input_dtypes[3] = {"int8", "float32", "float32"};' in text
    assert "m_input_bytes[3] = {6, 16, 20};" in text
