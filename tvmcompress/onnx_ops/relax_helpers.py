"""Small helpers the converters share: static shapes and dtypes of Relax expressions, NumPy constants."""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..errors import TvmcompressError


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    """The static shape of a tensor expression (canonical models have only static shapes)."""
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        raise TvmcompressError(f"a tensor of unknown shape reached a converter ({expr.ty}): fix the input shapes")
    return tuple(int(v) for v in values)


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype.dtype)


def const(value, dtype: str) -> relax.Constant:
    return relax.const(np.asarray(value, dtype=dtype), dtype)


def constant_value(expr: relax.Expr | None) -> np.ndarray | None:
    """The NumPy value of a constant expression, else None."""
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):  # TVM 0.27's relax constant
        return expr.value.numpy()
    return None
