"""FoldRequantizeScale: one multiply per output, not a multiply and a divide, where an int8 layer requantizes.

    quantize(multiply(y, m), s, z)  ->  quantize(multiply(y, m / s), 1, z)

for a float32 constant m (per output channel or scalar: FoldQDQToInt8's s_x * s_w[C]) and per-tensor constant
s and z (the next layer's input quantization, which HoistQuantize moved into this epilogue). relax.quantize
divides by its scale; by 1.0 that division is exact and LLVM drops it, so the epilogue multiplies once by the
usual requantize multiplier s_x * s_w[C] / s_out (as ONNX Runtime's QLinearConv and TFLite do) instead of also
dividing: a vdivps per vector of outputs cost ~40% of a 1x1 convolution with 32 input channels on AVX2.

Not exact: y * (m / s) and (y * m) / s differ by at most an ulp before rounding, so an output can move by one
code where the value lands within that ulp of a .5 tie (the int8 tests' one-step tolerance covers it).

Pre: FoldQDQToInt8 and HoistQuantize ran. Post: no quantize with a constant scalar scale other than 1 reads a
multiply by a float32 constant.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .quant_rules import constant_value

__all__ = ["FoldRequantizeScale"]


@tvm.transform.module_pass(opt_level=0, name="tvmcompress.FoldRequantizeScale")
class FoldRequantizeScale:
    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        y, m, scale, zero_point = wildcard(), is_const(), is_const(), is_const()
        pattern = is_op("relax.quantize")(is_op("relax.multiply")(y, m), scale, zero_point)

        def rewrite(orig: relax.Call, matches) -> relax.Expr:
            multiplier = constant_value(matches[m])
            s = constant_value(matches[scale])
            if multiplier.dtype != np.float32 or s.size != 1 or constant_value(matches[zero_point]).size != 1:
                return orig
            if float(s.reshape(())) == 1.0:
                return orig  # already folded
            folded = (multiplier / s.astype(np.float32).reshape(())).astype(np.float32)
            product = relax.op.multiply(matches[y], relax.const(folded, "float32"))
            one = relax.const(np.ones(s.shape, np.float32), "float32")
            return relax.Call(orig.op, [product, one, orig.args[2]], orig.attrs)

        new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                new_mod[gvar] = rewrite_call(pattern, rewrite, func)
        return new_mod
