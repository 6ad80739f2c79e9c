"""BitCast (opset 26), which TVM 0.27's importer lacks: the same bytes read as another type of the same width.

bool is TVM's 1-bit type stored in a byte, so bool <-> 8-bit integers are value casts (0 / 1, as the byte holds).
"""

from __future__ import annotations

import numpy as np
from tvm import relax, topi
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_type

from ..errors import TvmcompressError
from .relax_helpers import dtype_of

R = relax.op


class BitCast(OnnxOpConverter):
    first_opset = 26

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        x = inputs[0]
        source, to = dtype_of(x), get_type(attr["to"])
        if source == to:
            return x
        if "bool" in (source, to):
            return R.astype(R.not_equal(x, relax.const(0, source)) if to == "bool" else x, to)
        if np.dtype(source).itemsize != np.dtype(to).itemsize:
            raise TvmcompressError(f"BitCast from {source} to {to} changes the element width: ONNX requires equal widths")
        return bb.emit_te(topi.reinterpret, x, to)
