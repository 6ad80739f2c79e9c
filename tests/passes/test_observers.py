"""Observers: exact min/max, a histogram that keeps every count while it grows, and range methods that clip
outliers (percentile, entropy) or balance clipping against rounding (mse)."""

import numpy as np
import pytest

from tvmcompress.passes.observers import HistogramObserver, compute_range


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_minmax_is_exact_over_batches(rng):
    obs = HistogramObserver(512)
    batches = [rng.normal(i, 1.0 + i, 1000).astype(np.float32) for i in range(5)]
    for batch in batches:
        obs.update(batch)
    data = np.concatenate(batches)
    assert obs.range("minmax") == (pytest.approx(data.min()), pytest.approx(data.max()))


def test_histogram_growth_keeps_counts_and_memory_bounded(rng):
    obs = HistogramObserver(256)
    total = 0
    for i in range(20):  # ranges drift both ways, forcing growth on each side
        batch = rng.normal(0, 1, 500) * (i + 1) - 3 * i
        obs.update(batch)
        total += batch.size
    assert obs.counts.sum() == total
    assert obs.counts.shape == (256,)
    assert obs.low <= obs.min and obs.low + obs.width * 256 > obs.max


def test_histogram_ignores_nonfinite_and_empty():
    obs = HistogramObserver(256)
    obs.update(np.array([np.nan, np.inf, 1.0, 2.0], np.float32))
    obs.update(np.zeros(0, np.float32))
    assert obs.counts.sum() == 2 and obs.range("minmax") == (0.0, 2.0)


def test_percentile_cuts_tails_evenly(rng):
    obs = HistogramObserver(2048)
    obs.update(rng.uniform(-1, 1, 200_000))
    low, high = obs.range("percentile", 99.0)
    # 0.5 % off each side of U(-1, 1): +-0.99, within a couple of bins (bin width ~0.001).
    assert low == pytest.approx(-0.99, abs=5e-3) and high == pytest.approx(0.99, abs=5e-3)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_outlier_is_clipped(rng, method):
    obs = HistogramObserver(2048)
    obs.update(np.abs(rng.normal(0, 1, 50_000)))
    obs.update(np.array([40.0]))
    low, high = compute_range(obs, method, 99.99)
    assert low == 0.0 and 3.0 < high < 15.0


def test_mse_keeps_full_range_of_uniform_data(rng):
    # Uniform data: every clipped value costs more than the rounding noise it saves.
    obs = HistogramObserver(2048)
    obs.update(rng.uniform(0, 1, 100_000))
    low, high = obs.range("mse")
    assert low == 0.0 and high > 0.97


def test_unknown_method():
    obs = HistogramObserver(256)
    obs.update(np.ones(4) * np.arange(4))
    with pytest.raises(ValueError):
        obs.range("kl")
