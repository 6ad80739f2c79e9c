"""MatMul, Conv, ReduceSum and Softmax on float16 / bfloat16 tensors, accumulated in float32 and rounded once.

TVM 0.27 accumulates these in the tensors' own type, so every partial sum is rounded to 11 (or 8) bits. onnx's
reference (numpy) and onnxruntime accumulate in float32 and round the result: on attention blocks the float16
results then differ by 1-2 ulp. Each converter here casts the float16 / bfloat16 data inputs to float32, runs
TVM's own converter, and casts the result back; other types go straight to TVM's converter.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as tvm_onnx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from .relax_helpers import dtype_of

R = relax.op
_HALF = ("float16", "bfloat16")


def _accumulating_in_float32(tvm_converter, data_inputs: tuple[int, ...]):
    class Converter(OnnxOpConverter):
        @classmethod
        def get_converter(cls, opset):
            convert = tvm_converter.get_converter(opset)

            def converted(bb, inputs, attr, params):
                present = [i for i in data_inputs if i < len(inputs) and isinstance(inputs[i], relax.Expr)]
                dtypes = {dtype_of(inputs[i]) for i in present}
                if len(dtypes) != 1 or next(iter(dtypes)) not in _HALF:
                    return convert(bb, inputs, attr, params)
                half = next(iter(dtypes))
                widened = tvm_onnx.onnx_input(inputs)  # reads past the end give None, as converters expect
                for i in present:
                    widened[i] = bb.normalize(R.astype(inputs[i], "float32"))
                return R.astype(bb.normalize(convert(bb, widened, attr, params)), half)

            return converted

    Converter.__name__ = tvm_converter.__name__
    return Converter


MatMul = _accumulating_in_float32(tvm_onnx.MatMul, (0, 1))
ReduceSum = _accumulating_in_float32(tvm_onnx.ReduceSum, (0,))
Conv = _accumulating_in_float32(tvm_onnx.Conv, (0, 1, 2))
Softmax = _accumulating_in_float32(tvm_onnx.Softmax, (0,))
