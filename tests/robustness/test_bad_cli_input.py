"""Bad flags, models and paths on every subcommand (issue 18, item 9): one stderr line, exit 2, no traceback,
nothing at -o or beside it, the user's files untouched. Each case is something the audit or we tried by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from .bad_input_support import copy_artifact, expect_user_error, good_inputs, tiny_model

# compile flags, each added to `compile model.onnx -o out`: (id, extra argv, words the line must hold)
COMPILE_FLAG_CASES = [
    ("max-ram-nan", ["--max-ram", "nan"], "--max-ram"),
    ("max-ram-inf", ["--max-ram", "inf"], "--max-ram"),
    ("max-ram-1e400", ["--max-ram", "1e400"], "--max-ram"),
    ("max-ram-minus-1", ["--max-ram=-1"], "--max-ram"),
    ("max-ram-zero", ["--max-ram", "0"], "--max-ram"),
    ("max-ram-words", ["--max-ram", "lots"], "--max-ram"),
    ("max-ram-unit", ["--max-ram", "4T"], "--max-ram"),
    ("max-ram-empty", ["--max-ram", " "], "--max-ram"),
    ("max-flash-nan", ["--max-flash", "NaN"], "--max-flash"),
    ("max-flash-minus-1", ["--max-flash=-1"], "--max-flash"),
    ("max-flash-minus-inf", ["--max-flash=-inf"], "--max-flash"),
    ("max-flash-half-byte", ["--max-flash", "0.5"], "--max-flash"),
    ("cuda-sm-1", ["--target", "cuda:sm_1"], "sm_1"),
    ("cuda-sm-empty", ["--target", "cuda:"], "CUDA arch"),
    ("cuda-sm-letters", ["--target", "cuda:sm_xx"], "sm_xx"),
    ("cuda-sm-20", ["--target", "cuda:sm_20"], "sm_20"),
    ("cuda-json-sm-1", ["--target", '{"kind": "cuda", "arch": "sm_1"}'], "sm_1"),
    ("target-unknown", ["--target", "pdp11"], "pdp11"),
    ("target-empty", ["--target", ""], "target"),
    ("target-json-kind", ["--target", '{"kind": "opencl"}'], "opencl"),
    ("target-json-no-kind", ["--target", "{}"], "target"),
    ("target-json-triple", ["--target", '{"kind": "llvm", "mtriple": "sparc-sun-solaris"}'], "sparc"),
    ("target-json-unterminated", ["--target", '{"kind": "llvm"'], "target JSON"),
    ("target-json-array", ["--target", '["llvm"]'], "target"),
    ("target-json-number", ["--target", "42"], "42"),
    ("target-string-old-style", ["--target", "llvm -mcpu=znver3"], "target"),
    ("cores-zero", ["--cores", "0"], "cores"),
    ("cores-negative", ["--cores=-4"], "cores"),
    ("cores-words", ["--cores", "many"], "--cores"),
    ("quantize-unknown", ["--quantize", "int3"], "--quantize"),
    ("quantize-int8-no-calibration", ["--quantize", "int8"], "--calibration"),
    ("calibration-without-quantize", ["--calibration", "good.npz"], "--calibration"),
    ("calibration-method-unknown", ["--calibration-method", "magic"], "--calibration-method"),
    ("percentile-nan", ["--quantize", "int8", "--calibration", "good.npz", "--calibration-method", "percentile",
                        "--percentile", "nan"], "percentile"),
    ("percentile-zero", ["--quantize", "int8", "--calibration", "good.npz", "--percentile", "0"], "percentile"),
    ("percentile-101", ["--quantize", "int8", "--calibration", "good.npz", "--percentile", "101"], "percentile"),
    ("smoothquant-nan", ["--quantize", "int8", "--calibration", "good.npz", "--smoothquant", "nan"], "--smoothquant"),
    ("smoothquant-one", ["--quantize", "int8", "--calibration", "good.npz", "--smoothquant", "1"], "--smoothquant"),
    ("smoothquant-without-quantize", ["--smoothquant", "0.5"], "--smoothquant"),
    ("accuracy-budget-nan", ["--quantize", "int8", "--calibration", "good.npz", "--eval-data", "good.npz",
                             "--accuracy-budget", "nan"], "--accuracy-budget"),
    ("accuracy-budget-negative", ["--quantize", "int8", "--calibration", "good.npz", "--eval-data", "good.npz",
                                  "--accuracy-budget=-1"], "--accuracy-budget"),
    ("accuracy-budget-no-eval", ["--quantize", "int8", "--calibration", "good.npz", "--accuracy-budget", "1"],
     "--eval-data"),
    ("prune-budget-nan", ["--prune", "channel:0.5", "--eval-data", "good.npz", "--prune-budget", "nan"],
     "--prune-budget"),
    ("sparse-min-speedup-nan", ["--sparse-min-speedup", "nan"], "--sparse-min-speedup"),
    ("sparse-min-speedup-zero", ["--sparse-min-speedup", "0"], "--sparse-min-speedup"),
    ("cluster-bits-zero", ["--cluster-bits", "0"], "--cluster-bits"),
    ("cluster-bits-nine", ["--cluster-bits", "9"], "--cluster-bits"),
    ("cluster-bits-words", ["--cluster-bits", "few"], "--cluster-bits"),
    ("tune-minutes-nan", ["--tune-minutes", "nan"], "--tune-minutes"),
    ("tune-minutes-inf", ["--tune-minutes", "inf"], "--tune-minutes"),
    ("tune-minutes-zero", ["--tune-minutes", "0"], "--tune-minutes"),
    ("tune-trials-zero", ["--tune-trials", "0"], "--tune-trials"),
    ("tune-trials-negative", ["--tune-trials=-5"], "--tune-trials"),
    ("rpc-without-tuning", ["--rpc", "host:9190"], "--rpc"),
    ("input-shape-negative", ["--input-shape", "x=2,-1"], "x"),
    ("input-shape-zero", ["--input-shape", "x=0,8"], "x"),
    ("input-shape-words", ["--input-shape", "x=two,8"], "--input-shape"),
    ("input-shape-no-name", ["--input-shape", "=2,8"], "--input-shape"),
    ("input-shape-unknown-input", ["--input-shape", "image=2,8"], "image"),
    ("const-input-nan", ["--const-input", "x=nan"], "--const-input"),
    ("const-input-inf", ["--const-input", "x=inf"], "--const-input"),
    ("const-input-words", ["--const-input", "x=abc"], "--const-input"),
    ("const-input-unknown", ["--const-input", "scale=1"], "scale"),
    ("prune-ratio-2", ["--prune", "channel:2"], "--prune"),
    ("prune-ratio-nan", ["--prune", "channel:nan"], "--prune"),
    ("prune-unknown-kind", ["--prune", "bogus"], "--prune"),
    ("prune-empty", ["--prune", ""], "--prune"),
    ("prune-criterion-without-prune", ["--prune-criterion", "l2"], "--prune"),
    ("unknown-flag", ["--frobnicate"], "--frobnicate"),
    ("flag-missing-value", ["--target"], "--target"),
]


def _bad_utf8_model(where: str) -> bytes:
    model = tiny_model(input_name="x", op_name="act_name")
    data = model.SerializeToString()
    # Same-length byte swaps inside the serialized strings keep every protobuf length valid.
    if where == "op-name":
        return data.replace(b"act_name", b"act\xff\xfeame")
    return data.replace(b"\x0a\x01x", b"\x0a\x01\xff")  # every string field "x" (graph input, MatMul input)


def _write_model(kind: str, project: Path) -> Path:
    path = project / "m.onnx"
    good = tiny_model().SerializeToString()
    if kind == "missing":
        return project / "nope.onnx"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind.startswith("truncated-"):
        path.write_bytes(good[: int(len(good) * float(kind.split("-")[1]))])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "npz":
        np.savez(path, x=good_inputs(1))
    elif kind in ("op-name", "input-name"):
        path.write_bytes(_bad_utf8_model(kind))
    elif kind == "unsupported-op":
        model = tiny_model()
        model.graph.node[2].op_type = "NoSuchOp"
        path.write_bytes(model.SerializeToString())
    elif kind == "opset-99":
        model = tiny_model()
        model.opset_import[0].version = 99
        path.write_bytes(model.SerializeToString())
    elif kind == "no-graph-output":
        model = tiny_model()
        del model.graph.output[:]
        path.write_bytes(model.SerializeToString())
    elif kind == "external-data-missing":
        model = tiny_model()
        for index, tensor in enumerate(list(model.graph.initializer)):  # raw_data: what external data holds
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.data",
                  size_threshold=0)
        (project / "w.data").unlink()
    return path


MODEL_CASES = [
    ("missing", "does not exist"),
    ("directory", "directory"),
    ("empty", "m.onnx"),
    ("text", "not an ONNX model"),
    ("truncated-0.5", "truncated or corrupt"),
    ("truncated-0.9", "m.onnx"),
    ("truncated-0.1", "m.onnx"),
    ("random", "m.onnx"),
    ("npz", "m.onnx"),
    ("op-name", "not valid UTF-8"),
    ("input-name", "not valid UTF-8"),
    ("unsupported-op", "NoSuchOp"),
    ("opset-99", "opset"),
    ("external-data-missing", "w.data"),
]


@pytest.fixture
def project(tmp_path) -> Path:
    onnx.save(tiny_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "good.npz", x=good_inputs(8))
    return tmp_path


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-cli")


@pytest.mark.parametrize("extra, needle", [pytest.param(c[1], c[2], id=c[0]) for c in COMPILE_FLAG_CASES])
def test_compile_refuses_bad_flags(project, capsys, monkeypatch, extra, needle):
    monkeypatch.chdir(project)  # "good.npz" in the flags is relative
    out = project / "out"
    expect_user_error(["compile", "model.onnx", "-o", out, *extra], capsys, project, out, needle)


@pytest.mark.parametrize("command", ["compile", "inspect", "analyze"])
@pytest.mark.parametrize("kind, needle", [pytest.param(*c, id=c[0]) for c in MODEL_CASES])
def test_bad_models_are_refused_by_every_reader(project, capsys, command, kind, needle):
    model = _write_model(kind, project)
    out = project / "out"
    argv = {
        "compile": ["compile", model, "-o", out],
        "inspect": ["inspect", model],
        "analyze": ["analyze", model, "--calibration", project / "good.npz"],
    }[command]
    expect_user_error(argv, capsys, project, out, needle)


@pytest.mark.parametrize(
    "case",
    ["output-directory", "output-missing-dir", "output-under-file", "artifact-missing", "artifact-is-onnx",
     "artifact-is-empty-dir", "inputs-missing-flag", "inputs-missing-file"],
)
def test_run_refuses_bad_paths(build_root, tmp_path, capsys, case):
    art = copy_artifact(build_root, "plain", tmp_path / "art")
    np.savez(tmp_path / "in.npz", x=good_inputs(2))
    (tmp_path / "results").mkdir()
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "empty").mkdir()
    onnx.save(tiny_model(), tmp_path / "model.onnx")
    inputs = ["--inputs", tmp_path / "in.npz"]
    argv, out, needle = {
        "output-directory": (["run", art, *inputs, "--output", tmp_path / "results"], None, "is a directory"),
        "output-missing-dir": (["run", art, *inputs, "--output", tmp_path / "nope" / "o.npz"], tmp_path / "nope",
                               "cannot write"),
        "output-under-file": (["run", art, *inputs, "--output", tmp_path / "notes.txt" / "o.npz"], None,
                              "cannot write"),
        "artifact-missing": (["run", tmp_path / "nope", *inputs], None, "not a tvmcompress artifact"),
        "artifact-is-onnx": (["run", tmp_path / "model.onnx", *inputs], None, "not a tvmcompress artifact"),
        "artifact-is-empty-dir": (["run", tmp_path / "empty", *inputs], None, "not a tvmcompress artifact"),
        "inputs-missing-flag": (["run", art], None, "--inputs"),
        "inputs-missing-file": (["run", art, "--inputs", tmp_path / "nope.npz"], None, "does not exist"),
    }[case]
    expect_user_error(argv, capsys, tmp_path, out, needle)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == []


@pytest.mark.parametrize(
    "case",
    ["export-name-space", "export-name-empty", "export-name-digit", "export-onto-artifact", "export-onto-file",
     "export-missing-artifact", "inspect-artifact-input-shape", "inspect-missing", "bench-runs-5",
     "bench-threads-0", "bench-missing-model", "bench-missing-artifact", "analyze-no-calibration",
     "analyze-calibration-npy", "analyze-percentile-0", "targets-extra-arg", "unknown-subcommand",
     "no-subcommand", "cache-bad-action", "cache-all-with-dir"],
)
def test_other_subcommands_refuse_bad_values(build_root, tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    art = copy_artifact(build_root, "plain", tmp_path / "art")
    onnx.save(tiny_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "good.npz", x=good_inputs(8))
    np.save(tmp_path / "x.npy", good_inputs(8))
    (tmp_path / "notes.txt").write_text("mine\n")
    bundle = tmp_path / "bundle"
    argv, out, needle = {
        "export-name-space": (["export", art, "-o", bundle, "--name", "my model"], bundle, "--name"),
        "export-name-empty": (["export", art, "-o", bundle, "--name", ""], bundle, "--name"),
        "export-name-digit": (["export", art, "-o", bundle, "--name", "1model"], bundle, "--name"),
        "export-onto-artifact": (["export", art, "-o", art], None, "export bundle"),
        "export-onto-file": (["export", art, "-o", tmp_path / "notes.txt"], None, "notes.txt"),
        "export-missing-artifact": (["export", tmp_path / "nope", "-o", bundle], bundle, "not a tvmcompress artifact"),
        "inspect-artifact-input-shape": (["inspect", art, "--input-shape", "x=1,8"], None, "--input-shape"),
        "inspect-missing": (["inspect", tmp_path / "nope"], None, "does not exist"),
        "bench-runs-5": (["bench", "model.onnx", "--artifact", art, "--runs", "5"], None, "--runs"),
        "bench-threads-0": (["bench", "model.onnx", "--artifact", art, "--threads", "0"], None, "--threads"),
        "bench-missing-model": (["bench", "nope.onnx", "--artifact", art], None, "nope.onnx"),
        "bench-missing-artifact": (["bench", "model.onnx", "--artifact", tmp_path / "nope"], None,
                                   "not a tvmcompress artifact"),
        "analyze-no-calibration": (["analyze", "model.onnx"], None, "--calibration"),
        "analyze-calibration-npy": (["analyze", "model.onnx", "--calibration", "x.npy"], None, ".npy"),
        "analyze-percentile-0": (["analyze", "model.onnx", "--calibration", "good.npz", "--percentile", "0"], None,
                                 "percentile"),
        "targets-extra-arg": (["targets", "extra"], None, "extra"),
        "unknown-subcommand": (["frobnicate"], None, "frobnicate"),
        "no-subcommand": ([], None, "command"),
        "cache-bad-action": (["cache", "purge"], None, "purge"),
        "cache-all-with-dir": (["cache", "clear", "--all", "--cache-dir", tmp_path / "c"], None, "--all"),
    }[case]
    expect_user_error(argv, capsys, tmp_path, out, needle)
