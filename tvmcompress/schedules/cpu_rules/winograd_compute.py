"""Winograd convolution F(m x m, 3 x 3) for NHWC float32 conv2d with a constant 3x3, stride-1 weight.

A 3x3 convolution computes each m x m output tile from an (m+2) x (m+2) input tile. Winograd's minimal filtering
algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) turns that into

    Y = A^T [ (G g G^T) . (B^T d B) ] A        (. is the elementwise product)

so the multiplications per tile fall from 9 m^2 to (m+2)^2 per input and output channel pair: 2.25x fewer for
F(2x2, 3x3), 4x fewer for F(4x4, 3x3). Across channels the elementwise products are (m+2)^2 independent GEMMs
[tiles x C] x [C x K], which our register-tiled Dense rule runs at the speed of any other matmul.

The legalization emits three PrimFuncs:
1. `winograd_input`: pad, then V[e, p, c] = ((B^T d_p) B)[e] for every tile p and channel c (e = xi * alpha + nu).
   Marked opaque for FuseOps: fusing the previous layer's epilogue into it would recompute that epilogue once per
   tile element that reads it.
2. `winograd_gemm`: M[e, p, k] = sum_c V[e, p, c] * U[e, k, c], a `dense_packed` block whose weight U = G g G^T is
   transformed and packed with numpy at compile time (the artifact carries U, not g: (m+2)^2 / 9 times the bytes).
3. `winograd_output`: Y[n, h, w, k] = (A^T M_p A)[h mod m, w mod m], where the conv's epilogue (bias, residual
   add, ReLU) fuses as usual.
The transforms are written as chains of Select on the tile-element index whose branches hold only the non-zero
terms of B and A; the schedule rules (winograd.py) unroll those indices, so each Select folds to one branch.

Numerics: float32 rounding error grows with m (F(4x4)'s matrices hold 1/24 and 8). Against onnxruntime's direct
convolution, the largest error relative to the output's largest magnitude was 2e-7 for F(2x2) and 5e-6 for F(4x4)
with 32 input channels (tests/schedules/test_winograd.py); a direct convolution gives ~1e-7. That is far inside what
int8 or fp16 would change, but it is not bit-compatible with a direct convolution.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax, te, tirx

SCHEDULE_KEY = "tvmcompress.schedule"
WINOGRAD_INPUT = "winograd_input"
WINOGRAD_OUTPUT = "winograd_output"
TILE_KEY = "tvmcompress.winograd_m"  # the output tile size m, on both transform blocks
# FuseOps reads a PrimFunc's `op_pattern` when it is already set (AnnotateTIROpPattern keeps it); 8 is kOpaque.
_OPAQUE = 8


@dataclasses.dataclass(frozen=True)
class WinogradTransform:
    """The three matrices of F(m x m, 3 x 3), from Lavin & Gray (2016), section 4.1 (F(2x2)) and 4.2 (F(4x4),
    interpolation points 0, +-1, +-2 and infinity)."""

    m: int
    bt: np.ndarray  # [alpha, alpha] input transform B^T
    g: np.ndarray  # [alpha, 3] filter transform G
    at: np.ndarray  # [m, alpha] output transform A^T

    @property
    def alpha(self) -> int:
        return self.m + 2


F2X2_3X3 = WinogradTransform(
    m=2,
    bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], "float64"),
    g=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], "float64"),
    at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], "float64"),
)
F4X4_3X3 = WinogradTransform(
    m=4,
    bt=np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                 [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], "float64"),
    g=np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], "float64"),
    at=np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], "float64"),
)
TRANSFORMS = {2: F2X2_3X3, 4: F4X4_3X3}


# Below this many input or output channels the GEMM stage is too small for the two extra passes over the
# activations to pay off; such convolutions stay direct. (ResNet-18's narrowest 3x3 layers have 64.)
MIN_CHANNELS = 32
# F(4x4) when the output has at least this many 4x4 tiles, else F(2x2). Measured on ResNet-18's layers (znver3,
# 2 cores, per-kernel medians; direct conv / F(2x2) / F(4x4), ms): 56x56x64 1.85 / 1.64 / 0.84, 28x28x128
# 2.0 / 1.54 / 0.66, 14x14x256 2.3 / 0.91 / 1.52, 7x7x512 2.55 / 1.75 / 2.25. Few tiles leave the GEMM's rows
# short and its weights (4x the direct conv's for F(4x4)) too large to reuse.
MIN_TILES_F4 = 49


def choose_winograd_tile(data_shape, weight_shape, strides, dilation, padding, lanes: int) -> int | None:
    """m for an F(m x m, 3 x 3) convolution of NHWC `data_shape` with an OIHW weight, or None for a direct one."""
    out_c, in_c, kh, kw = weight_shape
    if (kh, kw) != (3, 3) or tuple(strides) != (1, 1) or tuple(dilation) != (1, 1):
        return None
    if min(in_c, out_c) < MIN_CHANNELS or in_c % lanes or out_c % lanes:
        return None
    top, left, bottom, right = padding
    oh, ow = data_shape[1] + top + bottom - 2, data_shape[2] + left + right - 2
    if min(oh, ow) < 2:
        return None
    return 4 if -(-oh // 4) * -(-ow // 4) >= MIN_TILES_F4 else 2


def transform_weight(weight_oihw: np.ndarray, transform: WinogradTransform, nb: int) -> np.ndarray:
    """U = G g G^T for every (k, c), packed [alpha^2, ceil(K/nb), C, nb] for the Dense rule (zero-padded in K)."""
    out_c, in_c = weight_oihw.shape[:2]
    alpha = transform.alpha
    u = np.einsum("xi,kcij,yj->xykc", transform.g, weight_oihw.astype("float64"), transform.g)
    u = u.reshape(alpha * alpha, out_c, in_c)
    blocks = -(-out_c // nb)
    padded = np.zeros((alpha * alpha, blocks * nb, in_c), "float64")
    padded[:, :out_c] = u
    packed = padded.reshape(alpha * alpha, blocks, nb, in_c).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(packed.astype("float32"))


def _linear_combination(coefficients: list[float], terms: list) -> tirx.PrimExpr:
    """sum(c * t) over the non-zero coefficients, with +-1 written as an add or a subtract."""
    expr = None
    for coef, term in zip(coefficients, terms):
        if coef == 0:
            continue
        if coef == 1:
            part, sign = term, 1
        elif coef == -1:
            part, sign = term, -1
        else:
            part, sign = term * tirx.const(float(coef), "float32"), 1
        if expr is None:
            expr = part if sign == 1 else -part
        else:
            expr = expr + part if sign == 1 else expr - part
    return expr if expr is not None else tirx.const(0.0, "float32")


def _select_chain(index: tirx.PrimExpr, branches: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """branches[index], as nested Selects that fold to one branch once `index` is a constant."""
    expr = branches[-1]
    for i in range(len(branches) - 2, -1, -1):
        expr = tirx.Select(index == i, branches[i], expr)
    return expr


def _input_transform(data: te.Tensor, m: int, padding, tiles_h: int, tiles_w: int):
    transform = TRANSFORMS[m]
    n, h, w, c = (int(x) if isinstance(x, tirx.IntImm) else x for x in data.shape)  # n: maybe symbolic
    m, alpha = transform.m, transform.alpha
    top, left = padding[0], padding[1]
    # The padded input covers every tile, including the last tiles' overhang past the output.
    ph, pw = tiles_h * m + 2, tiles_w * m + 2

    def fpad(i_n, i_h, i_w, i_c):
        inside = tvm.tirx.all(i_h >= top, i_h < h + top, i_w >= left, i_w < w + left)
        return tvm.tirx.if_then_else(inside, data[i_n, i_h - top, i_w - left, i_c], tvm.tirx.const(0.0, "float32"))

    padded = te.compute((n, ph, pw, c), fpad, name="winograd_pad")
    tiles = n * tiles_h * tiles_w

    # Separable: B^T d B = (B^T d) B, two passes of alpha-term sums instead of one of alpha^2 terms (and Select
    # chains of alpha branches, which keeps lowering fast: one alpha^2-branch chain per element took 10 s to
    # compile per F(4x4) layer).
    def frows(xi, j, p, ch):
        b, t = p // (tiles_h * tiles_w), p % (tiles_h * tiles_w)
        y0, x0 = (t // tiles_w) * m, (t % tiles_w) * m
        column = [padded[b, y0 + i, x0 + j, ch] for i in range(alpha)]
        return _select_chain(xi, [_linear_combination(list(transform.bt[r]), column) for r in range(alpha)])

    rows = te.compute((alpha, alpha, tiles, c), frows, name="winograd_input_rows")

    def fv(e, p, ch):
        row = [rows[e // alpha, j, p, ch] for j in range(alpha)]
        return _select_chain(e % alpha, [_linear_combination(list(transform.bt[nu]), row) for nu in range(alpha)])

    return te.compute((alpha * alpha, tiles, c), fv, name="winograd_input",
                      attrs={SCHEDULE_KEY: WINOGRAD_INPUT, TILE_KEY: m})


def _output_transform(gemm: te.Tensor, m: int, shape, tiles_h: int, tiles_w: int):
    transform = TRANSFORMS[m]
    n, oh, ow, k = shape
    m, alpha = transform.m, transform.alpha

    def fy(b, y, x, ch):
        p = b * (tiles_h * tiles_w) + (y // m) * tiles_w + x // m
        mat = [[gemm[xi * alpha + nu, p, ch] for nu in range(alpha)] for xi in range(alpha)]
        rows = []
        for r in range(m):
            cols = []
            for s in range(m):
                coefs, terms = [], []
                for xi in range(alpha):
                    for nu in range(alpha):
                        coefs.append(transform.at[r, xi] * transform.at[s, nu])
                        terms.append(mat[xi][nu])
                cols.append(_linear_combination(coefs, terms))
            rows.append(_select_chain(x % m, cols))
        return _select_chain(y % m, rows)

    return te.compute((n, oh, ow, k), fy, name="winograd_output", attrs={SCHEDULE_KEY: WINOGRAD_OUTPUT, TILE_KEY: m})


def _with_op_pattern(bb: relax.BlockBuilder, call: relax.Call, pattern: int) -> relax.Call:
    gvar = call.args[0]
    func = bb.get()[gvar]
    bb.update_func(gvar, func.with_attr("op_pattern", pattern))
    return call


def emit_winograd_conv2d(bb: relax.BlockBuilder, data: relax.Expr, weight_oihw: np.ndarray, padding, m: int,
                         nb: int, dense_packed) -> relax.Expr:
    """The three calls of an F(m x m, 3 x 3) convolution of NHWC `data` (see the module docstring).

    `dense_packed(data, wpacked, out_features, nb)` is packed_compute's GEMM compute, so the Dense rule schedules
    the elementwise-product stage.
    """
    transform = TRANSFORMS[m]
    n, h, w, _ = (int(x) if isinstance(x, tirx.IntImm) else x for x in data.ty.shape.values)  # n: maybe symbolic
    out_c = weight_oihw.shape[0]
    top, left, bottom, right = padding
    oh, ow = h + top + bottom - 2, w + left + right - 2
    tiles_h, tiles_w = -(-oh // m), -(-ow // m)
    packed = transform_weight(weight_oihw, transform, nb)
    v = bb.emit(_with_op_pattern(bb, bb.call_te(_input_transform, data, m, padding, tiles_h, tiles_w,
                                                primfunc_name_hint="winograd_input"), _OPAQUE))
    gemm = bb.emit(bb.call_te(dense_packed, v, relax.const(packed), out_c, nb, primfunc_name_hint="winograd_gemm"))
    return bb.call_te(_output_transform, gemm, m, (n, oh, ow, out_c), tiles_h, tiles_w,
                      primfunc_name_hint="winograd_output")
