"""Model fusion (tvmcompress/merge.py): `merge` and `compile --ensemble` on digits CNNs trained with different seeds.

Tolerances: the merged graph runs the members' own ops in ONNX Runtime, so its mean differs from numpy's mean of
the members' outputs by float32 summation order only (~1e-7 on logits of magnitude ~10); 1e-5 is the issue's bar.
The compiled artifact is compared with ORT at the verification tolerance of float builds (verify.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import tvmcompress
from tvmcompress.cli import main
from tvmcompress.errors import TvmcompressError
from tvmcompress.merge import Combine, merge_models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SEEDS = (1, 2, 3)
EPOCHS = 3  # ~1 s each on an idle 2-core machine; members land near 90% top-1 and disagree on some digits


def _train_digits():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLES / "train_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three digits CNNs (examples/train_digits.py's architecture and split), seeds 1-3, as .onnx files."""
    pytest.importorskip("torch")
    trainer = _train_digits()
    x_train, _, y_train, _ = trainer.load_digits_split()
    directory = tmp_path_factory.mktemp("members")
    paths = []
    for seed in SEEDS:
        path = directory / f"cnn_seed{seed}.onnx"
        onnx.save(trainer.to_onnx(trainer.train(x_train, y_train, epochs=EPOCHS, seed=seed)), path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def test_data():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["input"], data["label"]


def _ort(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model),
                                providers=["CPUExecutionProvider"])


def _outputs(model, x: np.ndarray) -> np.ndarray:
    session = _ort(model)
    return np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


def test_merge_mean_of_three_members_and_accuracy(members, test_data, tmp_path, capsys):
    x, y = test_data
    merged_path = tmp_path / "merged.onnx"
    assert main(["merge", *members, "-o", str(merged_path), "--combine", "mean",
                 "--eval-data", str(EXAMPLES / "digits_test.npz"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    per_member = [_outputs(path, x) for path in members]
    merged = _outputs(merged_path, x)
    np.testing.assert_allclose(merged, np.mean(per_member, axis=0), rtol=0, atol=1e-5)
    # Accuracy of each member next to the ensemble's, as ORT computes it here.
    expected = {path: round(100.0 * float(np.mean(out.argmax(-1) == y)), 2) for path, out in zip(members, per_member)}
    assert record["accuracy"]["members"] == expected
    assert record["accuracy"]["ensemble"] == round(100.0 * float(np.mean(merged.argmax(-1) == y)), 2)
    assert record["accuracy"]["samples"] == len(y) == 360
    # Different seeds share nothing but the input: no node is merged.
    assert record["nodes_shared"] == 0 and record["members"] == members


def _inputs(count=4, seed=0):
    return np.random.default_rng(seed).random((count, 1, 1, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("combine", ["vote", "weighted:0.2,0.3,0.5", "concat", "stack"])
def test_other_combines_match_numpy(members, combine):
    models = [onnx.load(p) for p in members]
    merged = _ort(merge_models(models, Combine.parse(combine, 3)))
    sessions = [_ort(m) for m in models]
    for x in _inputs():
        outs = [s.run(None, {"input": x})[0] for s in sessions]
        got = merged.run(None, {"input": x})[0]
        if combine == "vote":
            votes = np.zeros_like(outs[0])
            for o in outs:
                votes[0, o.argmax(-1)[0]] += 1
            np.testing.assert_array_equal(got, votes)
        elif combine.startswith("weighted"):
            np.testing.assert_allclose(got, 0.2 * outs[0] + 0.3 * outs[1] + 0.5 * outs[2], rtol=0, atol=1e-5)
        elif combine == "concat":
            np.testing.assert_array_equal(got, np.concatenate(outs, axis=-1))
        else:
            np.testing.assert_array_equal(got, np.stack(outs))


def _with_head_of(model: onnx.ModelProto, donor: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with the final Gemm's weights of `donor`: the same backbone, a different head."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    donor_weights = {t.name: t for t in donor.graph.initializer}
    for tensor in model.graph.initializer:
        if tensor.name.startswith("fc."):
            tensor.CopyFrom(donor_weights[tensor.name])
    return model


def test_shared_backbone_is_computed_once_in_the_artifact(members, tmp_path):
    base, other = onnx.load(members[0]), onnx.load(members[1])
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(base, a)
    onnx.save(_with_head_of(base, other), b)
    out = tmp_path / "out"
    assert main(["compile", "--ensemble", f"{a},{b}", "--combine", "mean", "-o", str(out)]) == 0
    member_macs = tvmcompress.inspect(str(a))["macs"]
    head = member_macs["by_layer_type"]["Gemm"]
    report = json.loads((out / "report.json").read_text())
    # One backbone and two heads, instead of two of each.
    assert report["model"]["macs"]["total"] == member_macs["total"] + head
    assert report["model"]["macs"]["by_layer_type"]["Conv"] == member_macs["by_layer_type"]["Conv"]
    artifact = tvmcompress.load(out)
    sessions = [_ort(base), _ort(onnx.load(b))]
    for x in _inputs(2, seed=1):
        expected = np.mean([s.run(None, {"input": x})[0] for s in sessions], axis=0)
        np.testing.assert_allclose(artifact.run({"input": x})["logits"], expected, rtol=1e-5, atol=1e-5)
    assert artifact.manifest["verification"]["mode"] == "native"
    ensemble = artifact.manifest["ensemble"]
    assert ensemble["members"] == [str(a), str(b)] and ensemble["combine"] == "mean"
    assert ensemble["nodes_shared"] == len(base.graph.node) - 1  # all but the head's Gemm


def test_identical_members_merge_to_one(members):
    model = onnx.load(members[0])
    merged = merge_models([model, model], Combine("mean"))
    record = json.loads(merged.metadata_props[0].value)
    assert record["nodes_shared"] == len(model.graph.node)
    assert record["initializers_shared"] == len(model.graph.initializer)
    assert len(merged.graph.node) == len(model.graph.node) + 1  # the Mean


# ------------------------------------------------------------------------------------------------ bad input


def _renamed_input(path, tmp_path, name="data", shape=None):
    model = onnx.load(path)
    old = model.graph.input[0].name
    model.graph.input[0].name = name
    if shape is not None:
        for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, shape):
            dim.dim_value = value
    for node in model.graph.node:
        node.input[:] = [name if n == old else n for n in node.input]
    out = tmp_path / f"{name}_{'x'.join(map(str, shape or ()))}.onnx"
    onnx.save(model, out)
    return str(out)


def _fails(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_members_with_different_inputs(members, tmp_path, capsys):
    out = tmp_path / "merged.onnx"
    renamed = _renamed_input(members[1], tmp_path)
    _fails(["merge", members[0], renamed, "-o", str(out)], capsys, "takes inputs ['data']", "--input-map")
    assert not out.exists()
    bigger = _renamed_input(members[1], tmp_path, name="input", shape=(2, 1, 8, 8))
    _fails(["merge", members[0], bigger, "-o", str(out)], capsys, "input 'input' is float32 [2, 1, 8, 8] in",
           "members must take the same input")
    assert not out.exists()
    _fails(["compile", "--ensemble", f"{members[0]},{bigger}", "-o", str(tmp_path / "art")], capsys,
           "members must take the same input")
    assert not (tmp_path / "art").exists()


def test_input_map_renames_a_member_input(members, tmp_path, capsys):
    renamed = _renamed_input(members[1], tmp_path)
    out = tmp_path / "merged.onnx"
    assert main(["merge", members[0], renamed, "-o", str(out), "--input-map", "2:data=input"]) == 0
    x = _inputs(1)[0]
    expected = np.mean([_ort(p).run(None, {"input": x})[0] for p in members[:2]], axis=0)
    np.testing.assert_allclose(_ort(out).run(None, {"input": x})[0], expected, rtol=0, atol=1e-5)
    _fails(["merge", members[0], renamed, "-o", str(out), "--input-map", "2:nope=input"], capsys,
           "names ['nope'], which it does not take")


def test_bad_combine_and_output(members, tmp_path, capsys):
    out = tmp_path / "merged.onnx"
    _fails(["merge", *members, "-o", str(out), "--combine", "weighted:0.5,0.5"], capsys,
           "gives 2 weights for 3 members")
    _fails(["merge", *members, "-o", str(out), "--combine", "median"], capsys, "combine must be one of")
    _fails(["merge", members[0], "-o", str(out)], capsys, "merge needs at least 2 models")
    assert not out.exists()
    before = Path(members[0]).read_bytes()
    _fails(["merge", *members, "-o", members[0]], capsys, "is one of the models being merged")
    assert Path(members[0]).read_bytes() == before
    _fails(["compile", members[0], "--ensemble", ",".join(members), "-o", str(tmp_path / "art")], capsys,
           "a MODEL or --ensemble")


def test_weights_of_the_tests_are_not_shared_by_name(members):
    # Members name their initializers alike (conv1.weight, ...): prefixes keep different values apart.
    models = [onnx.load(p) for p in members]
    merged = merge_models(models, Combine("mean"))
    names = [t.name for t in merged.graph.initializer]
    assert len(names) == len(set(names)) == sum(len(m.graph.initializer) for m in models)
    first = {t.name: numpy_helper.to_array(t) for t in models[0].graph.initializer}
    merged_arrays = {t.name: numpy_helper.to_array(t) for t in merged.graph.initializer}
    np.testing.assert_array_equal(merged_arrays["m0/conv1.weight"], first["conv1.weight"])


def test_combine_config_is_validated():
    with pytest.raises(TvmcompressError, match="weighted takes one weight per member"):
        Combine("weighted")
    with pytest.raises(TvmcompressError, match="only weighted takes values"):
        Combine.parse("mean:3", 2)


def test_outputs_that_cannot_combine(members, tmp_path, capsys):
    model = onnx.load(members[1])
    fc_weight = next(t for t in model.graph.initializer if t.name == "fc.weight")
    fc_bias = next(t for t in model.graph.initializer if t.name == "fc.bias")
    fc_weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fc_weight)[:5], "fc.weight"))
    fc_bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fc_bias)[:5], "fc.bias"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    five = tmp_path / "five_classes.onnx"
    onnx.save(model, five)
    out = tmp_path / "merged.onnx"
    _fails(["merge", members[0], str(five), "-o", str(out)], capsys,
           "output 1 is float32 [1, 5] in", "combine mean needs the same dtype and shape")
    assert not out.exists()
    # Concatenating 10 and 5 class scores is fine.
    assert main(["merge", members[0], str(five), "-o", str(out), "--combine", "concat"]) == 0
    x = _inputs(1)[0]
    expected = np.concatenate([_ort(members[0]).run(None, {"input": x})[0], _ort(five).run(None, {"input": x})[0]], -1)
    np.testing.assert_array_equal(_ort(out).run(None, {"input": x})[0], expected)
