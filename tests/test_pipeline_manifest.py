"""The manifest's `passes` list is exactly what the pipeline ran, in order.

Spies replace every transformation that tvmcompress/pipeline.py can call and log the calls that come from
pipeline.py itself (the same functions called inside a pass, e.g. quantize's own prepare_for_quantization, are
not pipeline steps). The manifest, built from the pipeline's own records, must list the same names in the same
order between the frontend's two entries and the schedule pipeline, and each stage's section must be there
exactly when its step ran.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest

import tvmcompress
import zoo
from tvmcompress.config import CompileOptions
from tvmcompress.passes.prune_config import PruneConfig
from tvmcompress.passes.quantize_config import QuantizeConfig

# (module, attribute) the pipeline looks up when it runs -> the name the manifest must show for it.
SPIED = {
    ("tvmcompress.passes.quantize", "prepare_for_quantization"): "tvmcompress.prepare_for_quantization",
    ("tvmcompress.passes.fold_channel_affine", "FoldChannelAffine"): "tvmcompress.FoldChannelAffine",
    ("tvmcompress.passes.prune", "prune"): "tvmcompress.prune",
    ("tvmcompress.passes.prune_budget", "prune_within_budget"): "tvmcompress.prune",
    ("tvmcompress.passes.cluster", "cluster_layers"): "tvmcompress.ClusterWeights",
    ("tvmcompress.schedules.cpu_pipeline", "channels_last"): "tvmcompress.channels_last",
    ("tvmcompress.passes.smooth_quant", "smooth_quant"): "tvmcompress.SmoothQuant",
    ("tvmcompress.passes.quantize", "quantize"): "tvmcompress.quantize",
    ("tvmcompress.passes.quant_analysis", "quantize_within_budget"): "tvmcompress.quantize",
    ("tvmcompress.passes.quantize", "fold_prequantized"): "tvmcompress.fold_prequantized",
    ("tvmcompress.passes.sparse_decision", "decide_sparse_layers"): "tvmcompress.decide_sparse_layers",
    # SparseDense applies to the module that sparse_candidates prepared for the measurement: that preparation
    # becomes a step of the build only when SparseDense follows it.
    ("tvmcompress.passes.sparse_dense", "SparseDense"): ("tvmcompress.prepare_for_quantization",
                                                         "tvmcompress.SparseDense"),
}
SECTION_OF = {"tvmcompress.prune": "pruning", "tvmcompress.ClusterWeights": "clustering",
              "tvmcompress.quantize": "quantization", "tvmcompress.decide_sparse_layers": "sparse_layers"}

CAL, EVAL = "CAL", "EVAL"
# A sample of what the CLI allows: every stage alone, and the stages together.
MATRIX = {
    "float": ("mlp", {}),
    "int8": ("mlp", {"quantize": QuantizeConfig(mode="int8"), "calibration": CAL}),
    "int8-smoothquant-eval": ("mlp", {"quantize": QuantizeConfig(mode="int8", smoothquant=0.5), "calibration": CAL,
                                      "eval_data": EVAL}),
    "int8-accuracy-budget": ("mlp", {"quantize": QuantizeConfig(mode="int8"), "calibration": CAL, "eval_data": EVAL,
                                     "accuracy_budget": 100.0}),
    "dynamic-int8": ("mlp", {"quantize": QuantizeConfig(mode="dynamic-int8")}),
    "fp16": ("mlp", {"quantize": QuantizeConfig(mode="fp16")}),
    "int4-weight": ("cnn", {"quantize": QuantizeConfig(mode="int4-weight")}),
    "prune-channel": ("cnn", {"prune": PruneConfig.parse("channel:0.5"), "calibration": CAL}),
    "prune-block-sparse": ("mlp", {"prune": PruneConfig.parse("block:0.75:1x4")}),
    "prune-budget": ("mlp", {"prune": PruneConfig.parse("channel:0.5"), "eval_data": EVAL, "prune_budget": 100.0}),
    "cluster": ("cnn", {"cluster_bits": 4}),
    "compress-weights": ("mlp", {"compress_weights": True}),
    "prune-cluster-int8": ("mlp", {"prune": PruneConfig.parse("unstructured:0.5"), "cluster_bits": 6,
                                   "quantize": QuantizeConfig(mode="int8"), "calibration": CAL}),
    "bn-prune-cluster": ("cnn", {"prune": PruneConfig.parse("channel:0.25", criterion="bn"), "cluster_bits": 5}),
}
DEFAULT_TIER = ("float", "prune-cluster-int8", "prune-block-sparse")


def _spy(monkeypatch, ran: list[str]) -> None:
    import importlib

    for (module_name, attribute), name in SPIED.items():
        module = importlib.import_module(module_name)
        real = getattr(module, attribute)

        def spy(*args, _real=real, _name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith("tvmcompress/pipeline.py"):
                ran.extend((_name,) if isinstance(_name, str) else _name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, attribute, spy)


def _data(model, shapes, path, calls, seed):
    stacked: dict[str, list] = {}
    for i in range(calls):
        for name, value in zoo.random_inputs(model, shapes, seed=seed + i).items():
            stacked.setdefault(name, []).append(value)
    np.savez(path, **{n: np.concatenate(v) for n, v in stacked.items()})
    return str(path)


def _check(case, tmp_path, monkeypatch):
    model_name, kwargs = MATRIX[case]
    build, shapes = zoo.ZOO[model_name]
    model = build()
    path = tmp_path / f"{model_name}.onnx"
    onnx.save(model, path)
    files = {CAL: _data(model, shapes, tmp_path / "cal.npz", 4, 10), EVAL: _data(model, shapes, tmp_path / "ev.npz", 2, 50)}
    kwargs = {k: files.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    ran: list[str] = []
    _spy(monkeypatch, ran)
    artifact = tvmcompress.compile(str(path), "host", output=tmp_path / "out",
                                   options=CompileOptions.create(input_shapes=shapes, **kwargs))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    names = [p["name"] for p in manifest["passes"]]
    assert names[:2] == ["frontend.canonicalize", "frontend.import_to_relax"]
    assert names[-1] == "tvmcompress.cpu_pipeline"
    assert names[2:-1] == ran
    for step, section in SECTION_OF.items():
        assert (manifest.get(section) is not None) == (step in ran), section
    assert artifact.manifest == manifest
    return ran


@pytest.mark.parametrize("case", DEFAULT_TIER)
def test_manifest_lists_what_ran(case, tmp_path, monkeypatch):
    ran = _check(case, tmp_path, monkeypatch)
    if case == "prune-cluster-int8":  # the order that the old hand-kept list got wrong
        assert ran.index("tvmcompress.prune") < ran.index("tvmcompress.ClusterWeights") < ran.index(
            "tvmcompress.channels_last") < ran.index("tvmcompress.quantize")
    if case == "float":
        assert ran == []


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in MATRIX if c not in DEFAULT_TIER])
def test_manifest_lists_what_ran_matrix(case, tmp_path, monkeypatch):
    _check(case, tmp_path, monkeypatch)
