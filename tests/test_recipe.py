"""Typed options that round-trip: to_dict/from_dict, TOML recipes, `compile --recipe`, `tvmcompress recipe OUT`, and
errors worded by the caller's names (fields in Python, flags on the command line)."""

from __future__ import annotations

import hashlib
import tomllib

import numpy as np
import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress import recipe
from tvmcompress.cli import main
from tvmcompress.config import CompileOptions, RpcTarget, TuneConfig
from tvmcompress.passes.prune_config import PruneConfig
from tvmcompress.passes.quantize_config import QuantizeConfig


def _every_option(tmp_path) -> CompileOptions:
    return CompileOptions.create(
        input_shapes={"x": (1, 3, 8, 8), "odd.name/with space": (2,)}, const_inputs={"s": [0.5, 1e-7], "k": 3},
        cores=2, tune=TuneConfig(trials=8, database_dir=str(tmp_path / "db"), min_speedup=1.1,
                                 rpc=RpcTarget("127.0.0.1", 9190, "dev")),
        quantize=QuantizeConfig(mode="int8", exclude=("lv1", "conv2d_0"), smoothquant=0.5, percentile=99.9),
        calibration=str(tmp_path / "cal.npz"), eval_data=str(tmp_path / "eval.npz"), accuracy_budget=1.5,
        prune=PruneConfig(PruneConfig.parse("channel:0.5,unstructured:0.25").steps, criterion="l2",
                          overrides=(("channel", "lv3", 0.125),)),
        prune_budget=2.0, cluster_bits=4, compress_weights=True, sparse_min_speedup=1.7, winograd=False,
        allow_nonfinite_weights=True, min_sqnr=12.5,
    )


def test_every_option_round_trips_through_a_toml_recipe(tmp_path):
    options = _every_option(tmp_path)
    assert CompileOptions.from_dict(options.to_dict()) == options
    text = recipe.dumps(recipe.recipe_of('{"kind": "llvm", "mcpu": "znver3"}', options))
    assert tomllib.loads(text)["options"]["quantize"]["exclude"] == ["lv1", "conv2d_0"]
    target, back = recipe.loads(text)
    assert (target, back) == ('{"kind": "llvm", "mcpu": "znver3"}', options)
    assert recipe.dumps(recipe.recipe_of(target, back)) == text


def test_default_options_round_trip():
    target, options = recipe.loads(recipe.dumps(recipe.recipe_of("host", CompileOptions())))
    assert (target, options) == ("host", CompileOptions())


def test_plain_values_where_a_config_belongs():
    assert CompileOptions(quantize="fp16").quantize == QuantizeConfig(mode="fp16")
    assert CompileOptions(quantize={"mode": "int8-weight", "exclude": ["lv0"]}).quantize == QuantizeConfig(
        mode="int8-weight", exclude=("lv0",))
    assert CompileOptions(prune="channel:0.5").prune == PruneConfig.parse("channel:0.5")
    assert CompileOptions(tune={"trials": 4}).tune == TuneConfig(trials=4)
    with pytest.raises(tvmcompress.TvmcompressError) as err:
        CompileOptions(quantize=8)
    assert str(err.value) == ("quantize must be a QuantizeConfig (such as QuantizeConfig(mode='int8')), a dict of its "
                              "fields or a string, got int 8")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: CompileOptions(cluster_bits=20), "cluster_bits must be an integer from 1 to 8, got 20"),
    (lambda: CompileOptions(quantize="int8"),
     "quantize=int8 needs calibration=FILE.npz: a few hundred representative inputs to measure ranges"),
    (lambda: CompileOptions(cores=0), "cores must be at least 1, got 0"),
    (lambda: CompileOptions.from_dict({"quantise": "int8"}), "unknown field(s) quantise in options: the fields are"),
    (lambda: QuantizeConfig.from_dict({"mode": "int8", "bits": 4}), "unknown field(s) bits in quantize"),
    (lambda: recipe.loads("version = 2"), "recipe: recipe version 2 is not 1"),
    (lambda: recipe.loads("version = 1\n[options]\ncluster_bits = 0"),
     "recipe: cluster_bits must be an integer from 1 to 8, got 0"),
    (lambda: recipe.loads("version = [1"), "recipe is not valid TOML"),
])
def test_options_are_validated_when_constructed(make, message):
    """Every constructor validates (not only CompileOptions.create), in the Python API's own names."""
    with pytest.raises(tvmcompress.TvmcompressError) as err:
        make()
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value) and "--" not in str(err.value)


def test_the_cli_names_its_flags_for_the_same_error(tmp_path, capsys):
    onnx.save(zoo.mlp(), tmp_path / "mlp.onnx")
    assert main(["compile", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "o"), "--quantize", "int8"]) == 2
    assert capsys.readouterr().err == ("tvmcompress: error: --quantize int8 needs --calibration FILE.npz: a few "
                                       "hundred representative inputs to measure ranges\n")
    (tmp_path / "r.toml").write_text("version = 1\n[options]\naccuracy_budget = 1.0\n")
    assert main(["compile", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "o"), "--recipe",
                 str(tmp_path / "r.toml")]) == 2
    assert capsys.readouterr().err.startswith("tvmcompress: error: recipe ")
    assert not (tmp_path / "o").exists()


def _model_and_data(tmp_path, name="mlp"):
    build, shapes = zoo.ZOO[name]
    model = build()
    onnx.save(model, tmp_path / f"{name}.onnx")
    calls = [zoo.random_inputs(model, shapes, seed=s) for s in range(8)]
    np.savez(tmp_path / "cal.npz", **{k: np.concatenate([c[k] for c in calls]) for k in calls[0]})
    return str(tmp_path / f"{name}.onnx"), str(tmp_path / "cal.npz")


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_compile_with_the_recipe_of_an_artifact_rebuilds_it(tmp_path, capsys):
    model, _ = _model_and_data(tmp_path)
    assert main(["-q", "compile", model, "-o", str(tmp_path / "a"), "--separate-weights", "--no-winograd"]) == 0
    capsys.readouterr()
    assert main(["recipe", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert recipe.loads(text)[1] == CompileOptions.from_dict(tvmcompress.load(tmp_path / "a").manifest["recipe"]["options"])
    target, options = recipe.loads(text)
    assert target == "host" and options.separate_weights and not options.winograd
    (tmp_path / "r.toml").write_text(text)
    assert main(["-q", "compile", model, "-o", str(tmp_path / "b"), "--recipe", str(tmp_path / "r.toml")]) == 0
    assert _sha(tmp_path / "a" / "model.so") == _sha(tmp_path / "b" / "model.so")
    assert (tmp_path / "b" / "weights.bin").read_bytes() == (tmp_path / "a" / "weights.bin").read_bytes()


def test_flags_override_the_recipe(tmp_path):
    """A flag given with --recipe replaces the option it belongs to; the rest comes from the recipe."""
    from tvmcompress.cli import _build_parser, _compile_target_and_options

    cal = tmp_path / "cal.npz"
    options = CompileOptions.create(quantize=QuantizeConfig(mode="int8", percentile=99.9), calibration=str(cal),
                                    separate_weights=True, cores=2)
    (tmp_path / "r.toml").write_text(recipe.dumps(recipe.recipe_of("aarch64", options)))

    def compile_args(*flags):
        return _build_parser().parse_args(["compile", "m.onnx", "-o", "o", "--recipe", str(tmp_path / "r.toml"),
                                           *flags])

    assert _compile_target_and_options(compile_args()) == ("aarch64", options)
    target, int8 = _compile_target_and_options(compile_args("--quantize", "int8", "--percentile", "99.0",
                                                            "--calibration-method", "percentile", "--target", "host"))
    assert target == "host" and int8.quantize == QuantizeConfig(mode="int8", percentile=99.0,
                                                                 calibration_method="percentile")
    assert int8.separate_weights and int8.cores == 2 and int8.calibration == str(cal)
    # The merged options are checked as a whole: fp16 has no use for the recipe's calibration data.
    with pytest.raises(tvmcompress.TvmcompressError, match="^calibration is used by quantize=int8"):
        _compile_target_and_options(compile_args("--quantize", "fp16"))
    _, more = _compile_target_and_options(compile_args("--cores", "4", "--compress-weights"))
    assert more.quantize == options.quantize and more.cores == 4 and more.compress_weights and more.separate_weights


ROUND_TRIPS = {
    "int8": lambda cal, db: CompileOptions.create(quantize=QuantizeConfig(mode="int8"), calibration=cal),
    "pruned": lambda cal, db: CompileOptions.create(prune=PruneConfig.parse("channel:0.5"), calibration=cal),
    # Without calibration data: codebook re-fitting crashes on the cnn's convs (cluster_refit.fit_codebooks'
    # einsum, before this change too); the clustering itself is the same either way.
    "clustered": lambda cal, db: CompileOptions.create(cluster_bits=4),
    "tuned": lambda cal, db: CompileOptions.create(tune=TuneConfig(trials=4, database_dir=db)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", ROUND_TRIPS)
def test_recipe_round_trip_is_byte_identical(case, tmp_path):
    """Compiling a model with its artifact's recipe gives the same model.so. A tuned build's recipe names its
    tuning database, which then covers every task: the rebuild measures nothing (schedules/tuning.py)."""
    model, cal = _model_and_data(tmp_path, "cnn")
    first = tvmcompress.compile(model, "host", output=tmp_path / "a",
                                options=ROUND_TRIPS[case](cal, str(tmp_path / "db")))
    (tmp_path / "r.toml").write_text(recipe.dumps(first.manifest["recipe"]))
    target, options = recipe.read(tmp_path / "r.toml")
    second = tvmcompress.compile(model, target, output=tmp_path / "b", options=options)
    assert _sha(first.library_path) == _sha(second.library_path)


def _calls(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 32)).astype(np.float32)} for _ in range(n)]


def test_calibration_data_given_in_python():
    from tvmcompress.data import Samples, calibration_calls, eval_data
    from tvmcompress.frontend import model_io

    options = CompileOptions(quantize="int8", calibration=iter(_calls()))  # any iterable of input dicts
    assert isinstance(options.calibration, Samples)
    assert options == CompileOptions(quantize="int8", calibration=Samples(_calls()))  # equal by contents
    assert options != CompileOptions(quantize="int8", calibration=_calls(seed=1))
    assert options.to_json()["calibration"] == f"python data sha256:{options.calibration.digest}"
    assert recipe.recipe_of("host", options) is None  # a recipe holds paths only
    with pytest.raises(tvmcompress.TvmcompressError, match="^calibration given as Python data cannot go into a recipe"):
        options.to_dict()
    inputs, _ = model_io(zoo.mlp())
    calls = calibration_calls(options.calibration, inputs)
    assert len(calls) == 4 and np.array_equal(calls[2]["x"], _calls()[2]["x"])
    with pytest.raises(tvmcompress.TvmcompressError, match=r"^calibration data call 1: input 'x' has shape \[3, 32\]"):
        calibration_calls(Samples([_calls()[0], {"x": np.zeros((3, 32), np.float32)}]), inputs)
    evaluation = eval_data(Samples(_calls(), labels=np.arange(8) % 10), inputs)
    assert len(evaluation.batches) == 4 and list(evaluation.labels) == list(np.arange(8) % 10)
    with pytest.raises(tvmcompress.TvmcompressError, match="^eval data: 'label' has shape"):
        eval_data(Samples(_calls(), labels=[1, 2]), inputs)
    with pytest.raises(tvmcompress.TvmcompressError, match="one per model call"):
        CompileOptions(quantize="int8", calibration={"x": np.zeros((8, 32), np.float32)})


@pytest.mark.slow
def test_python_calibration_data_builds_what_the_same_npz_builds(tmp_path):
    onnx.save(zoo.mlp(), tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=np.concatenate([c["x"] for c in _calls()]))
    from_file = tvmcompress.compile(tmp_path / "mlp.onnx", "host", output=tmp_path / "a", options=CompileOptions.create(
        quantize=QuantizeConfig(mode="int8"), calibration=str(tmp_path / "cal.npz")))
    from_python = tvmcompress.compile(tmp_path / "mlp.onnx", "host", output=tmp_path / "b",
                                      options=CompileOptions(quantize="int8", calibration=_calls()))
    assert _sha(from_file.library_path) == _sha(from_python.library_path)
    assert "recipe" not in from_python.manifest and "recipe" in from_file.manifest
