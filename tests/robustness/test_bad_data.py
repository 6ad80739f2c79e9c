"""Bad calibration and eval data (issue 18, item 3): NaN/Inf anywhere, constant (all-zero) data, absurd scale
(x1e30), wrong dtype or shape, files that are not .npz. Each is refused before the build with one line that
names the sample and the input, exit 2, nothing written. Plus: the manifest never holds a bare NaN.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from tvmcompress.artifact import write_json
from tvmcompress.data import MAX_PLAUSIBLE_MAGNITUDE, validate_values
from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.quant_analysis import sqnr_db

from .bad_input_support import expect_user_error, good_inputs, tiny_model

N = 8  # model calls in each file; each call is x[2, 8]


def _with(index: tuple, value: float):
    def make() -> dict:
        x = good_inputs(N)
        x[index] = value
        return {"x": x}

    return make


def _arrays(**arrays):
    return lambda: arrays


# (id, make() -> {key: array} or bytes, words the line must hold)
DATA_CASES = [
    ("nan-one-value-first-sample", _with((0, 0), np.nan), ["sample 0 of input 'x'", "NaN"]),
    ("nan-one-value-sample-5", _with((11, 3), np.nan), ["sample 5 of input 'x'", "NaN", "[1, 3]"]),
    ("nan-last-value", _with((2 * N - 1, 7), np.nan), [f"sample {N - 1} of input 'x'", "NaN"]),
    ("all-nan", _arrays(x=np.full((2 * N, 8), np.nan, np.float32)), ["sample 0", "NaN"]),
    ("inf-one-value", _with((6, 2), np.inf), ["sample 3 of input 'x'", "Inf"]),
    ("minus-inf", _with((9, 0), -np.inf), ["sample 4 of input 'x'", "-Inf"]),
    ("all-inf", _arrays(x=np.full((2 * N, 8), np.inf, np.float32)), ["sample 0", "Inf"]),
    ("all-zero", _arrays(x=np.zeros((2 * N, 8), np.float32)), ["input 'x'", "constant"]),
    ("all-one", _arrays(x=np.ones((2 * N, 8), np.float32)), ["input 'x'", "constant"]),
    ("all-minus-seven", _arrays(x=np.full((2 * N, 8), -7.0, np.float32)), ["constant"]),
    ("scaled-1e30", lambda: {"x": good_inputs(N) * np.float32(1e30)}, ["input 'x'", "scaled by mistake"]),
    ("scaled-minus-1e30", lambda: {"x": good_inputs(N) * np.float32(-1e30)}, ["scaled by mistake"]),
    ("one-value-1e25", _with((4, 4), 1e25), ["sample 2 of input 'x'", "scaled by mistake"]),
    ("scaled-3e38", lambda: {"x": np.sign(good_inputs(N)) * np.float32(3e38)}, ["scaled by mistake"]),
    ("dtype-float64", lambda: {"x": good_inputs(N).astype(np.float64)}, ["dtype float64", "astype('float32')"]),
    ("dtype-float16", lambda: {"x": good_inputs(N).astype(np.float16)}, ["dtype float16"]),
    ("dtype-int32", lambda: {"x": good_inputs(N).astype(np.int32)}, ["dtype int32"]),
    ("dtype-bool", lambda: {"x": good_inputs(N) > 0}, ["dtype bool"]),
    ("dtype-complex", lambda: {"x": good_inputs(N).astype(np.complex64)}, ["dtype complex64"]),
    ("shape-inner-9", lambda: {"x": np.zeros((2 * N, 9), np.float32)}, ["shape [16, 9]"]),
    ("shape-rank-1", lambda: {"x": np.zeros(2 * N * 8, np.float32)}, ["input 'x' has shape"]),
    ("shape-rank-3", lambda: {"x": np.zeros((N, 2, 8), np.float32)}, ["input 'x' has shape"]),
    ("shape-odd-rows", lambda: {"x": good_inputs(N)[:-1]}, ["input 'x' has shape [15, 8]"]),
    ("zero-samples", lambda: {"x": np.zeros((0, 8), np.float32)}, ["input 'x' has shape [0, 8]"]),
    ("scalar", lambda: {"x": np.float32(1.0)}, ["input 'x' has shape []"]),
    ("missing-input", lambda: {"image": good_inputs(N)}, ["missing input(s) x", "unknown key(s) image"]),
    ("extra-key", lambda: {"x": good_inputs(N), "mask": good_inputs(N)}, ["unknown key(s) mask"]),
    ("empty-npz", lambda: {}, ["missing input(s) x"]),
    ("npy-not-npz", lambda: ("npy", good_inputs(N)), [".npy file", "numpy.savez"]),
    ("text-file", lambda: b"x,y\n1,2\n", ["not a readable .npz"]),
    ("empty-file", lambda: b"", ["not a readable .npz"]),
    ("random-bytes", lambda: np.random.default_rng(3).integers(0, 256, 999, dtype=np.uint8).tobytes(),
     ["not a readable .npz"]),
    ("truncated-npz", lambda: ("truncate", {"x": good_inputs(N)}), ["not a readable .npz"]),
    ("pickled-objects", lambda: {"x": np.array([{"evil": 1}] * 2, dtype=object)}, ["not a readable .npz"]),
    ("zip-member-not-npy", lambda: ("zip", b"hello"), ["is not a numpy array"]),
    ("directory", lambda: "directory", ["is a directory"]),
    ("missing-file", lambda: "missing", ["does not exist"]),
]

# Labels only matter to eval data.
LABEL_CASES = [
    ("label-float", lambda: {"x": good_inputs(N), "label": np.zeros(2 * N, np.float32)}, ["'label' has dtype float32"]),
    ("label-per-call", lambda: {"x": good_inputs(N), "label": np.zeros(N, np.int64)}, ["'label' has shape [8]"]),
    ("label-2d", lambda: {"x": good_inputs(N), "label": np.zeros((2 * N, 1), np.int64)}, ["'label' has shape [16, 1]"]),
]


def _write_data(path: Path, made) -> Path:
    if isinstance(made, dict):
        np.savez(path, **made)
    elif isinstance(made, bytes):
        path.write_bytes(made)
    elif made == "directory":
        path.mkdir()
    elif made == "missing":
        pass
    elif made[0] == "npy":
        with open(path, "wb") as f:  # a .npy saved under the .npz name the user passes
            np.save(f, made[1])
    elif made[0] == "truncate":
        np.savez(path, **made[1])
        path.write_bytes(path.read_bytes()[:300])
    elif made[0] == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x", made[1])
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    onnx.save(tiny_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "good.npz", x=good_inputs(N))
    return tmp_path


def _argv(where: str, project: Path, bad: Path, out: Path) -> list:
    model, good = project / "model.onnx", project / "good.npz"
    return {
        "compile-calibration": ["compile", model, "-o", out, "--quantize", "int8", "--calibration", bad],
        "compile-eval": ["compile", model, "-o", out, "--quantize", "int8", "--calibration", good, "--eval-data", bad,
                         "--accuracy-budget", "1"],
        "compile-prune": ["compile", model, "-o", out, "--prune", "unstructured:0.5", "--calibration", bad],
        "analyze": ["analyze", model, "--calibration", bad],
        "analyze-eval": ["analyze", model, "--calibration", good, "--eval-data", bad],
    }[where]


@pytest.mark.parametrize("where", ["compile-calibration", "compile-eval", "compile-prune", "analyze", "analyze-eval"])
@pytest.mark.parametrize("make, needles", [pytest.param(*c[1:], id=c[0]) for c in DATA_CASES])
def test_bad_data_is_refused_before_the_build(project, capsys, where, make, needles):
    bad = _write_data(project / "bad.npz", make())
    out = project / "out"
    expect_user_error(_argv(where, project, bad, out), capsys, project, out, *needles)


@pytest.mark.parametrize("where", ["compile-eval", "analyze-eval"])
@pytest.mark.parametrize("make, needles", [pytest.param(*c[1:], id=c[0]) for c in LABEL_CASES])
def test_bad_labels_are_refused(project, capsys, where, make, needles):
    bad = _write_data(project / "bad.npz", make())
    out = project / "out"
    expect_user_error(_argv(where, project, bad, out), capsys, project, out, *needles)


# `run` takes any values (NaN in, NaN out is the model's business), but not malformed files.
RUN_CASES = [c for c in DATA_CASES if c[0].startswith(("dtype-", "shape-", "zero-samples", "scalar", "missing-",
                                                          "extra-key", "empty-", "npy-", "text-", "random-",
                                                          "truncated-", "pickled-", "zip-", "directory"))]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-data")


@pytest.mark.parametrize("make, needles", [pytest.param(*c[1:], id=c[0]) for c in RUN_CASES])
def test_run_refuses_malformed_inputs(build_root, tmp_path, capsys, make, needles):
    from .bad_input_support import copy_artifact

    art = copy_artifact(build_root, "plain", tmp_path / "art")
    bad = _write_data(tmp_path / "bad.npz", make())
    out = tmp_path / "outputs.npz"
    expect_user_error(["run", art, "--inputs", bad, "--output", out], capsys, tmp_path, out, *needles)


def test_good_data_passes_the_value_checks():
    spec = [type("Spec", (), {"name": "x", "shape": (2, 8), "dtype": "float32"})()]
    validate_values({"x": good_inputs(N)}, spec, source="good.npz")
    # A black image among real ones is a real sample: only data constant over every sample is refused.
    x = good_inputs(N)
    x[:2] = 0
    validate_values({"x": x}, spec, source="good.npz")
    # At the bound itself: accepted (the bound is for data scaled by mistake, not for large features).
    x[0, 0] = MAX_PLAUSIBLE_MAGNITUDE / 2
    validate_values({"x": x}, spec, source="good.npz")
    # Integer inputs (token ids) are not value-checked: constant ids are a legal prompt.
    validate_values({"x": np.zeros((4, 8), np.int64)}, [type("Spec", (), {"name": "x", "shape": (2, 8), "dtype": "int64"})()],
                    source="ids.npz")


def test_write_json_refuses_nan_instead_of_writing_invalid_json(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(ValueError):
        write_json(str(path), {"sqnr_db": math.nan})
    assert not path.exists()  # refused before the file was opened: nothing half-written
    write_json(str(path), {"sqnr_db": 12.5})
    assert json.loads(path.read_text()) == {"sqnr_db": 12.5}


def test_sqnr_is_finite_for_every_output_and_refuses_a_nonfinite_reference():
    reference = np.array([1.0, -2.0, 3.0])
    assert sqnr_db(reference, reference) == 300.0 or sqnr_db(reference, reference) > 100
    assert sqnr_db(reference, np.array([np.nan, 0.0, 0.0])) == -300.0
    assert sqnr_db(reference, np.array([np.inf, 0.0, 0.0])) == -300.0
    assert math.isfinite(sqnr_db(np.zeros(3), np.zeros(3)))
    with pytest.raises(TvmcompressError, match="float model's outputs on the eval data are not finite"):
        sqnr_db(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))


def test_calibrating_on_good_data_writes_a_strict_json_manifest(project, capsys):
    """The accepted path still builds, and its manifest parses with a reader that rejects NaN/Infinity."""
    from .bad_input_support import run_cli

    out = project / "out"
    code, _, err = run_cli(["compile", project / "model.onnx", "-o", out, "--quantize", "int8", "--calibration",
                            project / "good.npz", "--eval-data", project / "good.npz"], capsys)
    assert code == 0, err

    def refuse(name):
        raise AssertionError(f"bare {name} in the manifest")

    manifest = json.loads((out / "manifest.json").read_text(), parse_constant=refuse)
    assert math.isfinite(manifest["quantization"]["eval"]["int8_sqnr_db"])


def test_data_that_overflows_the_float_model_is_refused_with_its_sample(tmp_path, capsys):
    """Finite, plausible-looking inputs can still overflow the float model's own activations (exp(100) is Inf
    in float32): calibration checks what the model computes from them, and names the sample."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 4], np.linspace(-1, 1, 32).astype(np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["y"])], "exp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    x = good_inputs(N)
    x[7, 1] = 100.0  # sample 3: exp(100) overflows float32
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "out"
    expect_user_error(["compile", tmp_path / "m.onnx", "-o", out, "--quantize", "int8", "--calibration",
                       tmp_path / "calib.npz"], capsys, tmp_path, out, "calibration sample 3", "not finite")
