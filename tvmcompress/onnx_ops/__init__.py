"""Our ONNX op converters: op forms that TVM 0.27's importer lacks, or converts wrongly.

Each family lives in its own file; a converter follows TVM's `OnnxOpConverter` protocol (`_impl_v<N>`
classmethods taking `(bb, inputs, attr, params)`), so `importer.from_onnx` can call it where TVM would call its
own. A converter may also define `unsupported_form(node) -> str | None`: the forms it cannot convert, named
(`LSTM(layout=1)`), which `frontend.unsupported_ops` reports so that they fail at import, never silently.

CONVERTERS is the registry: default-domain op type -> converter. Ops of other domains stay with TVM's map,
except onnxruntime's com.microsoft QLinear* / QGemm (CONTRIB_QLINEAR_OPS), which `frontend.canonicalize`
expands into standard Q/DQ ops first (qlinear_contrib.py).
"""

from __future__ import annotations

import onnx

from .activations import Celu, Elu, SwiGLU
from .attention import Attention
from .bitcast import BitCast
from .causal_conv import CausalConvWithState
from .cumulative import CumProd
from .data_movement import MaxUnpool, SpaceToDepth, TensorScatter
from .elementwise import BitShift, Dropout, IsInf, Mod, OneHot, Pow, Swish
from .float8 import Cast, CastLike
from .float16_accumulation import Conv, MatMul, ReduceSum, Softmax
from .indexing import Gather, GatherElements, GatherND, ScatterElements, ScatterND
from .linear_attention import LinearAttention
from .form_checks import ConvTranspose, MaxPool, NonMaxSuppression, Resize, RoiAlign
from .normalization import BatchNormalization, LayerNormalization, LpNormalization, RMSNormalization
from .qlinear_contrib import EXPANDED_OPS as CONTRIB_QLINEAR_OPS  # noqa: F401 - re-exported
from .qlinear_integer import ConvInteger, DynamicQuantizeLinear, MatMulInteger
from .quantize_linear import DequantizeLinear, QuantizeLinear
from .quantized import QLinearConv, QLinearMatMul
from .recurrent import GRU, LSTM, RNN
from .reduction import ReduceMax, ReduceMin
from .rotary import RotaryEmbedding
from .shape_ops import CenterCropPad, EyeLike, Split, Squeeze
from .spectral import DFT, BlackmanWindow, HammingWindow, HannWindow
from .variadic import Max, Mean, Min, Sum

# The prefix that importer.route_to_converters gives the op types of the nodes it routes to our converters.
ROUTED_PREFIX = "tvmcompress:"

CONVERTERS: dict[str, type] = {
    "Attention": Attention,
    "BatchNormalization": BatchNormalization,
    "BitCast": BitCast,
    "BitShift": BitShift,
    "BlackmanWindow": BlackmanWindow,
    "Cast": Cast,
    "CastLike": CastLike,
    "CausalConvWithState": CausalConvWithState,
    "Celu": Celu,
    "CenterCropPad": CenterCropPad,
    "Conv": Conv,
    "ConvInteger": ConvInteger,
    "ConvTranspose": ConvTranspose,
    "CumProd": CumProd,
    "DequantizeLinear": DequantizeLinear,
    "DFT": DFT,
    "Dropout": Dropout,
    "DynamicQuantizeLinear": DynamicQuantizeLinear,
    "Elu": Elu,
    "EyeLike": EyeLike,
    "Gather": Gather,
    "GatherElements": GatherElements,
    "GatherND": GatherND,
    "GRU": GRU,
    "HammingWindow": HammingWindow,
    "HannWindow": HannWindow,
    "IsInf": IsInf,
    "LinearAttention": LinearAttention,
    "LpNormalization": LpNormalization,
    "LSTM": LSTM,
    "LayerNormalization": LayerNormalization,
    "MatMul": MatMul,
    "MatMulInteger": MatMulInteger,
    "Max": Max,
    "MaxPool": MaxPool,
    "MaxUnpool": MaxUnpool,
    "Mod": Mod,
    "NonMaxSuppression": NonMaxSuppression,
    "OneHot": OneHot,
    "Pow": Pow,
    "Mean": Mean,
    "Min": Min,
    "QLinearConv": QLinearConv,
    "QLinearMatMul": QLinearMatMul,
    "QuantizeLinear": QuantizeLinear,
    "RMSNormalization": RMSNormalization,
    "RNN": RNN,
    "RotaryEmbedding": RotaryEmbedding,
    "ScatterElements": ScatterElements,
    "ScatterND": ScatterND,
    "ReduceMax": ReduceMax,
    "ReduceMin": ReduceMin,
    "ReduceSum": ReduceSum,
    "Resize": Resize,
    "RoiAlign": RoiAlign,
    "Softmax": Softmax,
    "SpaceToDepth": SpaceToDepth,
    "Split": Split,
    "Squeeze": Squeeze,
    "Sum": Sum,
    "SwiGLU": SwiGLU,
    "Swish": Swish,
    "TensorScatter": TensorScatter,
}


def converter_for(op_type: str, opset: int) -> type | None:
    """Our converter for a default-domain op at `opset`, or None (TVM's importer handles it, or nothing does)."""
    converter = CONVERTERS.get(op_type)
    if converter is None or opset < getattr(converter, "first_opset", 1):
        return None
    return converter


def converts_type(node: onnx.NodeProto, opset: int, elem_type: int) -> bool:
    """Whether our converter for `node` converts tensors of `elem_type` (an ONNX element type that the frontend
    otherwise rejects, such as FLOAT8E4M3FN) correctly."""
    converter = converter_for(node.op_type, opset) if node.domain in ("", "ai.onnx") else None
    return elem_type in getattr(converter, "low_precision_types", ())


def unsupported_form(node: onnx.NodeProto, opset: int) -> str | None:
    """The name of `node`'s form (`Op(attr=value)`) when our converter for it cannot convert that form."""
    converter = converter_for(node.op_type, opset)
    check = getattr(converter, "unsupported_form", None)
    return check(node) if check is not None else None
