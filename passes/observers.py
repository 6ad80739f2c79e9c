"""Calibration observers: reduce a stream of activation batches to one range [low, high].

Memory is bounded: an observer keeps exact min/max and a fixed-size histogram (`num_bins` counts), never the
activations. The histogram starts on the first batch's range and grows by merging bins (the width doubles)
when a later batch falls outside it, so no second pass over the data is needed.

Range methods (all read the same histogram):
- minmax: the exact observed min and max.
- percentile: the central `percentile` percent of the mass (tails cut evenly on both sides).
- entropy: TensorRT's KL-divergence search, generalized to ranges that do not start at 0: among candidate
  ranges [low*t, high*t] pick the one whose quantized distribution Q (256 levels) is closest to the clipped
  distribution P in KL(P || Q).
- mse: among the same candidates, the one with the smallest expected squared error of fake quantization
  (clipping plus rounding), estimated on the bin centres.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["HistogramObserver", "compute_range"]

_NUM_CANDIDATES = 128  # shrink factors tried by entropy and mse, from 1/_NUM_CANDIDATES to 1
_LEVELS = 256  # 8-bit


class HistogramObserver:
    """Exact min/max plus a growable histogram of the observed values."""

    def __init__(self, num_bins: int = 2048):
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.float64)
        self.low = math.inf  # edges of the histogram: [low, low + width * num_bins)
        self.width = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.batches = 0

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        self.batches += 1
        if values.size == 0:
            return
        vmin, vmax = float(values.min()), float(values.max())
        self.min, self.max = min(self.min, vmin), max(self.max, vmax)
        if self.width == 0.0:
            span = max(vmax - vmin, 1e-6)
            self.low, self.width = vmin, span / self.num_bins * (1 + 1e-6)
        self._cover(vmin, vmax)
        index = np.floor((values - self.low) / self.width).astype(np.int64)
        np.clip(index, 0, self.num_bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.num_bins)

    def _cover(self, vmin: float, vmax: float) -> None:
        """Grow the histogram (merging bins by a power of two) until it covers [vmin, vmax]."""
        while vmin < self.low or vmax >= self.low + self.width * self.num_bins:
            # Double the width; shift the origin by whole old bins so that old bins map onto new ones exactly.
            shift = 0
            if vmin < self.low:  # grow towards the low side: put the old bins in the upper half
                shift = self.num_bins
            new_counts = np.zeros_like(self.counts)
            np.add.at(new_counts, (np.arange(self.num_bins) + shift) // 2, self.counts)
            self.counts = new_counts
            self.low -= shift * self.width
            self.width *= 2.0

    def centers(self) -> np.ndarray:
        return self.low + self.width * (np.arange(self.num_bins) + 0.5)

    def range(self, method: str, percentile: float = 99.99) -> tuple[float, float]:
        return compute_range(self, method, percentile)


def compute_range(obs: HistogramObserver, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """The calibrated [low, high] of one observed tensor (always contains 0)."""
    if obs.counts.sum() == 0:
        return 0.0, 0.0
    low, high = min(obs.min, 0.0), max(obs.max, 0.0)
    if method == "minmax" or high - low <= 0.0:
        return low, high
    if method == "percentile":
        return _percentile_range(obs, percentile)
    if method == "entropy":
        return _search_range(obs, low, high, _kl_cost)
    if method == "mse":
        return _search_range(obs, low, high, _mse_cost)
    raise ValueError(f"unknown calibration method {method!r}")


def _percentile_range(obs: HistogramObserver, percentile: float) -> tuple[float, float]:
    cdf = np.cumsum(obs.counts) / obs.counts.sum()
    tail = (100.0 - percentile) / 200.0
    edges = obs.low + obs.width * np.arange(1, obs.num_bins + 1)  # right edge of each bin
    low = float(edges[np.searchsorted(cdf, tail)]) - obs.width if tail > 0 else obs.min
    high = float(edges[min(np.searchsorted(cdf, 1.0 - tail), obs.num_bins - 1)]) if tail > 0 else obs.max
    return min(max(low, obs.min), 0.0), max(min(high, obs.max), 0.0)


def _search_range(obs, low, high, cost) -> tuple[float, float]:
    centers, counts = obs.centers(), obs.counts
    best, best_cost = (low, high), math.inf
    # A candidate narrower than _LEVELS bins would quantize losslessly on the bin grid (KL = 0, and the mse
    # estimate meaningless), so candidates keep at least _LEVELS bins, as TensorRT's search starts at 128.
    bins_used = (high - low) / obs.width
    for step in range(1, _NUM_CANDIDATES + 1):
        t = step / _NUM_CANDIDATES
        if t * bins_used < _LEVELS and step < _NUM_CANDIDATES:
            continue
        c = cost(centers, counts, low * t, high * t)
        if c < best_cost:
            best, best_cost = (low * t, high * t), c
    return best


def _quantize_centers(centers, low, high):
    """Level index of each bin centre under fake quantization of [low, high] to _LEVELS levels."""
    scale = (high - low) / (_LEVELS - 1)
    return np.clip(np.round((centers - low) / scale), 0, _LEVELS - 1), scale


def _mse_cost(centers, counts, low, high) -> float:
    levels, scale = _quantize_centers(centers, low, high)
    fake = low + levels * scale
    # Bin centres sit on a grid finer than the quantization step, so their rounding error stands in for
    # the rounding noise of the values inside each bin.
    return float(np.dot(counts, (centers - fake) ** 2))


def _kl_cost(centers, counts, low, high) -> float:
    levels, _ = _quantize_centers(centers, low, high)
    idx = levels.astype(np.int64)
    p = counts / counts.sum()
    # P: the distribution clipped to [low, high]; outliers pile up in the edge bins, as in TensorRT.
    inside = (centers >= low) & (centers <= high)
    p_clipped = np.where(inside, p, 0.0)
    lo_bin, hi_bin = np.argmax(inside), len(inside) - 1 - np.argmax(inside[::-1])
    p_clipped[lo_bin] += p[centers < low].sum()
    p_clipped[hi_bin] += p[centers > high].sum()
    # Q: the in-range part of P (without the piled-up outliers, so that clipping costs something, as in
    # TensorRT) quantized to the levels, each level's mass spread evenly over its non-empty bins.
    p_inside = np.where(inside, p, 0.0)
    nonempty = p_inside > 0
    level_mass = np.bincount(idx, weights=p_inside, minlength=_LEVELS)
    level_bins = np.bincount(idx, weights=nonempty.astype(np.float64), minlength=_LEVELS)
    q = np.where(nonempty, level_mass[idx] / np.maximum(level_bins[idx], 1.0), 0.0)
    support = p_clipped > 0
    p_s = p_clipped[support] / p_clipped.sum()
    q_s = np.maximum(q[support] / max(q.sum(), 1e-30), 1e-12)
    return float(np.sum(p_s * np.log(p_s / q_s)))
