"""--prune-budget: the greedy allocation on fake sensitivities, the units and their levels, per-group / per-layer
overrides in PruneConfig and the pruning steps, and the CLI's one-line errors. No build (null tier); the trained
digits CNN's accuracy under a budget is in tests/numerics/test_prune_budget_accuracy.py."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import zoo
from prune_onnx import build_test_cnn

from tvmcompress.cli import main
from tvmcompress.config import CompileOptions
from tvmcompress.errors import TvmcompressError
from tvmcompress.frontend import canonicalize, import_to_relax
from tvmcompress.passes.prune_config import PruneConfig
from tvmcompress.passes.prune_unstructured import choose_masks
from tvmcompress.passes.prune_budget import Sensitivity, Unit, allocate, budget_units
from tvmcompress.passes.prune import prepare_for_pruning, prune

A, B, C = Unit("channel", "a", (0.5, 0.25, 0.0)), Unit("channel", "b", (0.5, 0.0)), Unit("unstructured", "c",
                                                                                         (0.8, 0.4, 0.0))
# Fake model: each unit alone loses LOSS[unit][ratio] points and saves SAVED[unit] * ratio; combined, the losses
# add plus 0.5 point of interaction while a and b are both pruned (the combined loss is not the sum).
LOSS = {"a": {0.5: 2.0, 0.25: 0.5, 0.0: 0.0}, "b": {0.5: 0.4, 0.0: 0.0}, "c": {0.8: 1.0, 0.4: 0.2, 0.0: 0.0}}
SAVED = {"a": 0.4, "b": 0.8, "c": 1.0}


class FakeModel:
    def __init__(self):
        self.alone, self.combined = [], []

    def measure_alone(self, unit, ratio):
        self.alone.append((unit.name, ratio))
        return Sensitivity(ratio, LOSS[unit.name][ratio], 30.0 - 10 * LOSS[unit.name][ratio], SAVED[unit.name] * ratio)

    def measure_loss(self, ratios):
        self.combined.append(dict(ratios))
        loss = sum(LOSS[name][r] for (_, name), r in ratios.items())
        return loss + (0.5 if ratios[A.key] > 0 and ratios[B.key] > 0 else 0.0)


def test_allocate_gives_back_the_costliest_unit_per_saving_until_within_budget():
    fake = FakeModel()
    ratios, loss, trail = allocate([A, B, C], fake.measure_alone, fake.measure_loss, budget=1.5)
    # Start 2.0 + 0.4 + 1.0 + 0.5 = 3.9. Drop per saving alone: a 2.0/0.2 = 10, b 0.4/0.4 = 1, c 1.0/0.8 = 1.25:
    # a -> 0.25 (3.9 - 1.5 = 2.4 > 1.5); then a 0.5/0.1 = 5 is still the costliest: a -> 0 (1.4 <= 1.5).
    assert trail == [{"step": "channel", "name": "a", "ratio": 0.25, "loss": 2.4},
                     {"step": "channel", "name": "a", "ratio": 0.0, "loss": 1.4}]
    assert ratios == {A.key: 0.0, B.key: 0.5, C.key: 0.8} and loss == pytest.approx(1.4)
    assert len(fake.combined) == 3  # the combined model is re-measured after every change
    assert sorted(fake.alone) == [("a", 0.25), ("a", 0.5), ("b", 0.5), ("c", 0.8)]  # each level once


def test_allocate_within_budget_keeps_the_spec_ratios_and_measures_nothing_alone():
    fake = FakeModel()
    ratios, loss, trail = allocate([A, B, C], fake.measure_alone, fake.measure_loss, budget=5.0)
    assert ratios == {A.key: 0.5, B.key: 0.5, C.key: 0.8} and loss == pytest.approx(3.9) and trail == []
    assert fake.alone == []


def test_allocate_breaks_ties_of_zero_drop_by_output_noise_per_saving():
    alone = {"x": Sensitivity(0.5, 0.0, 20.0, 0.5), "y": Sensitivity(0.5, 0.0, 10.0, 0.5)}  # y: 10x noise
    x, y = Unit("channel", "x", (0.5, 0.0)), Unit("channel", "y", (0.5, 0.0))

    def measure_loss(ratios):
        return 2.0 if all(r > 0 for r in ratios.values()) else 0.0

    ratios, _, trail = allocate([x, y], lambda u, r: alone[u.name], measure_loss, budget=1.0)
    assert ratios == {x.key: 0.5, y.key: 0.0} and [t["name"] for t in trail] == ["y"]


def test_allocate_unmet_budget_ends_with_every_unit_whole():
    fake = FakeModel()
    ratios, loss, trail = allocate([A, B, C], fake.measure_alone, fake.measure_loss, budget=-1.0)
    assert ratios == {A.key: 0.0, B.key: 0.0, C.key: 0.0} and loss == 0.0 and len(trail) == 5


@pytest.fixture(scope="module")
def test_cnn():
    return prepare_for_pruning(import_to_relax(canonicalize(build_test_cnn(), {})))


def test_budget_units_levels_merge_what_rounds_alike(test_cnn):
    units = {(u.kind, u.name): u.levels for u in budget_units(test_cnn, PruneConfig.parse("channel:0.5"), None)}
    # 16 channels: 0.5 keeps 8, 0.25 keeps 12 -> rounded to 16 (multiples of 8): whole, so no 0.25 level.
    assert units[("channel", "lv")] == (0.5, 0.0)
    assert units[("channel", "lv25_1")] == (0.5, 0.25, 0.0)  # 32 channels: 16, 24, 32 kept
    assert units[("channel", "lv66")] == (0.5, 0.0)  # 24 channels: 0.5 and 0.25 both keep 16
    assert len(units) == 6
    global_units = budget_units(test_cnn, PruneConfig.parse("unstructured:0.8"), None)
    masks = choose_masks(test_cnn, 0.8, "global")
    # Under a global threshold each layer's spec ratio is the sparsity the threshold gives it.
    for unit in global_units:
        assert unit.levels[0] == pytest.approx(1.0 - masks[unit.name].mean())
        assert unit.levels[1:] == pytest.approx((unit.levels[0] / 2, 0.0))


def test_channel_overrides_set_each_groups_ratio(test_cnn):
    config = PruneConfig(PruneConfig.parse("channel:0.5").steps,
                         overrides=(("channel", "lv", 0.0), ("channel", "lv25_1", 0.25)))
    _, record = prune(test_cnn, config)
    kept = {l["layer"]: (l["kept"], l["total"]) for l in record["layers"]}
    assert kept["lv"] == (16, 16)  # overridden to 0: whole
    assert kept["lv25_1"] == (24, 32)  # 0.25
    assert kept["lv8"] == (8, 16)  # not named: the spec's 0.5
    assert record["config"]["overrides"] == [{"step": "channel", "name": "lv", "ratio": 0.0},
                                             {"step": "channel", "name": "lv25_1", "ratio": 0.25}]


def test_unstructured_overrides_are_per_layer_under_a_global_threshold(test_cnn):
    masks = choose_masks(test_cnn, 0.8, "global", overrides={"lv": 0.0, "lv40": 0.5})
    plain = choose_masks(test_cnn, 0.8, "global")
    assert "lv" not in masks
    assert int((~masks["lv40"]).sum()) == round(0.5 * masks["lv40"].size)
    assert all(np.array_equal(masks[name], plain[name]) for name in plain if name not in ("lv", "lv40"))


def test_override_validation():
    steps = PruneConfig.parse("channel:0.5").steps
    with pytest.raises(TvmcompressError, match="the spec 'channel:0.5' has no 'unstructured' step"):
        PruneConfig(steps, overrides=(("unstructured", "lv", 0.5),))
    with pytest.raises(TvmcompressError, match=r"the ratio must be in \[0, 1\)"):
        PruneConfig(steps, overrides=(("channel", "lv", 1.0),))
    with pytest.raises(TvmcompressError, match="pruning override for channel 'lv' is given twice"):
        PruneConfig(steps, overrides=(("channel", "lv", 0.5), ("channel", "lv", 0.25)))


def test_compile_options_validate_the_budget(tmp_path):
    npz = str(tmp_path / "eval.npz")
    options = CompileOptions.create(prune=PruneConfig.parse("channel:0.5"), eval_data=npz, prune_budget=1)
    assert options.prune_budget == 1.0
    with pytest.raises(TvmcompressError, match="^prune_budget needs prune with a channel:R or unstructured:S"):
        CompileOptions.create(prune=PruneConfig.parse("2:4"), eval_data=npz, prune_budget=1.0)
    with pytest.raises(TvmcompressError, match="^prune_budget must be >= 0 points, got -1"):
        CompileOptions.create(prune=PruneConfig.parse("channel:0.5"), eval_data=npz, prune_budget=-1.0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prune", "channel:0.5", "--prune-budget", "1"],
         "--prune-budget needs --eval-data FILE.npz: inputs (+ optional 'label') to measure the accuracy loss on"),
        (["--prune-budget", "1"],
         "--prune-budget needs --prune with a channel:R or unstructured:S step, such as --prune channel:0.5"),
    ],
)
def test_cli_prune_budget_errors_one_line_exit_2(tmp_path, capsys, flags, message):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), model)
    out = tmp_path / "out"
    code = main(["compile", str(model), "-o", str(out), *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == [f"tvmcompress: error: {message}"], err
    assert not os.path.exists(out)
