"""Max, Min, Sum and Mean of several inputs, as a chain of broadcasting binary ops.

TVM 0.27 broadcasts the inputs, stacks them and reduces; the CPU pipeline's ConvertLayout pass fails on
`relax.stack` ("Invalid SLayout"), and the chain also saves the stacked copy.
"""

from __future__ import annotations

from functools import reduce

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import const, dtype_of

R = relax.op


def _chain(bb, inputs, binary):
    values = [x for x in inputs if x is not None]
    return reduce(lambda a, b: bb.normalize(binary(a, b)), values[1:], values[0])


class Max(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _chain(bb, inputs, R.maximum)


class Min(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _chain(bb, inputs, R.minimum)


class Sum(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _chain(bb, inputs, R.add)


class Mean(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        total = _chain(bb, inputs, R.add)
        count = sum(x is not None for x in inputs)
        return R.divide(total, const(count, dtype_of(total)))
