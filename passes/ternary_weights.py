"""Ternary and binary weight grids: what `--quantize ternary-weight` / `binary-weight` store, and the projection
that distillation (passes/distill.py) trains through.

- ternary (TWN, Li et al. 2016), per output channel c: delta_c = 0.7 * mean|W_c|, code = sign(W) where
  |W| > delta_c else 0, alpha_c = mean of |W| over the kept weights; W ~ alpha_c * code, code in {-1, 0, +1}.
- binary (BinaryConnect / XNOR-Net's weight scale), per output channel: alpha_c = mean|W_c|, code = sign(W)
  with sign(0) = +1; W ~ alpha_c * code, code in {-1, +1}.

Both are idempotent: quantizing alpha * code again gives the same code and alpha (the TWN threshold
0.7 * mean|alpha * code| < alpha keeps every non-zero), so weights that distillation left on the grid are stored
exactly. Packing: 2-bit two's-complement codes (4 per byte) and 1-bit codes (1 = +1, 0 = -1; 8 per byte), element
i of the C-order weight in byte i // per_byte, lowest bits first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ternarize", "binarize", "pack_codes", "unpack_codes", "TERNARY_THRESHOLD"]

TERNARY_THRESHOLD = 0.7  # TWN's delta = 0.7 E|W|: the optimum for Gaussian-like weights (the TWN paper)


def _channel_view(weight: np.ndarray, axis: int) -> np.ndarray:
    """[C, rest] with the output channel first."""
    return np.moveaxis(weight, axis % weight.ndim, 0).reshape(weight.shape[axis % weight.ndim], -1)


def _restore(flat: np.ndarray, shape, axis: int) -> np.ndarray:
    axis %= len(shape)
    moved = (shape[axis], *(s for i, s in enumerate(shape) if i != axis))
    return np.moveaxis(flat.reshape(moved), 0, axis)


def ternarize(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes in {-1, 0, 1} of the weight's shape, float32 alpha per channel along `axis`)."""
    w = _channel_view(np.asarray(weight, np.float64), axis)
    magnitude = np.abs(w)
    delta = TERNARY_THRESHOLD * magnitude.mean(axis=1, keepdims=True)
    keep = magnitude > delta
    count = keep.sum(axis=1)
    alpha = np.where(count > 0, (magnitude * keep).sum(axis=1) / np.maximum(count, 1), 1.0)
    codes = (np.sign(w) * keep).astype(np.int8)
    return _restore(codes, weight.shape, axis), alpha.astype(np.float32)


def binarize(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes in {-1, 1} of the weight's shape, float32 alpha per channel along `axis`)."""
    w = _channel_view(np.asarray(weight, np.float64), axis)
    alpha = np.abs(w).mean(axis=1)
    alpha = np.where(alpha > 0, alpha, 1.0)
    codes = np.where(w >= 0, 1, -1).astype(np.int8)
    return _restore(codes, weight.shape, axis), alpha.astype(np.float32)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (int8, ternary for bits=2, +-1 for bits=1) flattened in C order, 8 // bits per byte, as uint8."""
    per = 8 // bits
    flat = codes.reshape(-1).astype(np.int16)
    flat = (flat & 3) if bits == 2 else (flat > 0).astype(np.int16)
    pad = (-flat.size) % per
    flat = np.concatenate([flat, np.zeros(pad, np.int16)]).reshape(-1, per)
    shifts = np.arange(per, dtype=np.int16) * bits
    return (flat << shifts).sum(axis=1).astype(np.uint8)


def unpack_codes(packed: np.ndarray, shape, bits: int) -> np.ndarray:
    """The inverse of pack_codes."""
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    fields = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[: int(np.prod(shape))].astype(np.int8)
    codes = np.where(fields >= 2, fields - 4, fields) if bits == 2 else fields * 2 - 1
    return codes.astype(np.int8).reshape(shape)
