"""Dynamic-shape flags (issue 21): parsing `--input-shape x=1..8,3,H,W` and `--dim H=32..1024`, and every bad
input refused in one line with exit 2 before any build, nothing written. No build here (tests/e2e builds)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from frontend_models import make_model, value
from onnx import helper, numpy_helper

from tvmcompress.cli import main
from tvmcompress.config import CompileOptions
from tvmcompress.dynamic_shapes import check_call, parse_shape_flags, shape_points
from tvmcompress.errors import TvmcompressError


def conv_model(dims) -> onnx.ModelProto:
    w = np.full((2, 3, 1, 1), 0.5, np.float32)
    return make_model([helper.make_node("Conv", ["x", "w"], ["y"])], [value("x", dims)], [value("y", [dims[0], 2, dims[2], dims[3]])],
                      [numpy_helper.from_array(w, "w")])


def test_inline_ranges_become_named_symbols():
    shapes, ranges = parse_shape_flags(["x=1..8,3,32..1024,32..1024"], [])
    assert shapes == {"x": ("x_0", 3, "x_2", "x_3")}
    assert ranges == {"x_0": (1, 8), "x_2": (32, 1024), "x_3": (32, 1024)}


def test_dim_flags_name_symbols_shared_by_inputs():
    shapes, ranges = parse_shape_flags(["x=N,3,H,W", "mask=N,1,H,W"], ["N=1..8", "H=32..64", "W=32..1024"])
    assert shapes == {"x": ("N", 3, "H", "W"), "mask": ("N", 1, "H", "W")}
    assert ranges == {"N": (1, 8), "H": (32, 64), "W": (32, 1024)}
    options = CompileOptions.create(input_shapes=shapes, dims=ranges)
    assert options.to_json()["dims"] == {"H": [32, 64], "N": [1, 8], "W": [32, 1024]}


def test_static_options_json_has_no_dims_key():
    # Static builds keep the options JSON (and so their cache keys) they had before dynamic shapes.
    assert "dims" not in CompileOptions.create(input_shapes={"x": (1, 3)}).to_json()


@pytest.mark.parametrize("shape, dims, needle", [
    (["x=8..1,3,4,4"], [], "range 8..1 has min 8 above max 1"),
    (["x=N,3,4,4"], ["N=9..8"], "range 9..8 has min 9 above max 8"),
    (["x=0..4,3,4,4"], [], "starts below 1"),
    (["x=1..,3,4,4"], [], "is not MIN..MAX"),
    (["x=N,3,4,4"], ["N=1..8", "N=1..4"], "N is given twice"),
    (["x=1,3,4,4"], ["N=1..8"], "--dim N is not used by any --input-shape"),
    (["x=N,3,4,4"], [], "has no range: give a size, or make it dynamic with --dim N=MIN..MAX"),
    (["x=1.5,3,4,4"], [], "dim '1.5' is not an integer"),
])
def test_bad_ranges_fail_in_one_line(shape, dims, needle, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(["n", 3, "h", "w"]), model)
    out = tmp_path / "out"
    argv = ["compile", str(model), "-o", str(out)]
    for s in shape:
        argv += ["--input-shape", s]
    for d in dims:
        argv += ["--dim", d]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert not os.path.exists(out)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_range_on_a_dim_the_model_fixes_fails_in_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(["n", 3, 8, "w"]), model)
    out = tmp_path / "out"
    code = main(["compile", str(model), "-o", str(out), "--input-shape", "x=1..4,3,8..16,8..16"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "dim 2 is given the range x_2=8..16 but the model fixes it at 8: give 8 there" in err
    assert not os.path.exists(out)


def test_compression_with_dynamic_dims_is_refused():
    with pytest.raises(TvmcompressError, match="--separate-weights is not supported with dynamic dims yet"):
        CompileOptions.create(input_shapes={"x": ("N", 3)}, dims={"N": (1, 8)}, separate_weights=True)


INPUTS = [{"name": "x", "dims": ["N", 3, "W"], "dtype": "float32"},
          {"name": "m", "dims": ["N", "W"], "dtype": "float32"}]
RANGES = {"N": {"min": 1, "max": 8}, "W": {"min": 4, "max": 16}}


def test_check_call_accepts_shapes_in_range_and_returns_sizes():
    sizes = check_call({"x": np.zeros((3, 3, 16), np.float32), "m": np.zeros((3, 16), np.float32)}, INPUTS, RANGES,
                       source="inputs")
    assert sizes == {"N": 3, "W": 16}


@pytest.mark.parametrize("x_shape, m_shape, needle", [
    ((9, 3, 8), (9, 8), "dim 0 (N) is 9, outside the compiled range N=1..8"),
    ((2, 3, 3), (2, 3), "dim 2 (W) is 3, outside the compiled range W=4..16"),
    ((2, 4, 8), (2, 8), "(dim 1 fixed at 3)"),
    ((2, 3, 8), (2, 9), "has W=9 at dim 1 but another input has W=8"),
])
def test_check_call_refuses_shapes_outside_the_ranges(x_shape, m_shape, needle):
    with pytest.raises(TvmcompressError) as excinfo:
        check_call({"x": np.zeros(x_shape, np.float32), "m": np.zeros(m_shape, np.float32)}, INPUTS, RANGES,
                   source="inputs")
    assert needle in str(excinfo.value)


def test_verification_points_cover_both_ends_and_the_middle():
    assert shape_points({"N": (1, 8), "W": (32, 1024)}) == [
        {"N": 1, "W": 32}, {"N": 4, "W": 528}, {"N": 8, "W": 1024}]
    assert shape_points({"N": (2, 2)}) == [{"N": 2}]


def test_a_range_the_model_cannot_take_fails_verification_in_one_line(tmp_path, capsys):
    # Reshape to [1, 4] fixes the batch at 1 in fact: ORT fails at N=2, so the range is refused, nothing written.
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                       [value("x", ["n", 4])], [value("y", [1, 4])], [shape])
    onnx.save(model, tmp_path / "m.onnx")
    code = main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--input-shape", "x=1..2,4"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "ONNX Runtime cannot run the model at x_0=2" in err and "narrow them" in err
    assert not (tmp_path / "out").exists()
