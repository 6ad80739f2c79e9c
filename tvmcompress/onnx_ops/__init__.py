"""Our ONNX op converters: op forms that TVM 0.27's importer lacks, or converts wrongly.

Each family lives in its own file; a converter follows TVM's `OnnxOpConverter` protocol (`_impl_v<N>`
classmethods taking `(bb, inputs, attr, params)`), so `importer.from_onnx` can call it where TVM would call its
own. A converter may also define `unsupported_form(node) -> str | None`: the forms it cannot convert, named
(`LSTM(layout=1)`), which `frontend.unsupported_ops` reports so that they fail at import, never silently.

CONVERTERS is the registry: default-domain op type -> converter. Ops of other domains stay with TVM's map.
"""

from __future__ import annotations

import onnx

from .attention import Attention
from .elementwise import BitShift, Dropout, IsInf, Mod, OneHot, Pow, Swish
from .form_checks import ConvTranspose, MaxPool, Resize, RoiAlign
from .normalization import BatchNormalization, LayerNormalization, RMSNormalization
from .quantized import QLinearMatMul
from .recurrent import GRU, LSTM, RNN
from .reduction import ReduceMax, ReduceMin
from .rotary import RotaryEmbedding
from .shape_ops import CenterCropPad, Squeeze
from .spectral import DFT
from .variadic import Max, Mean, Min, Sum

# The prefix that importer.route_to_converters gives the op types of the nodes it routes to our converters.
ROUTED_PREFIX = "tvmcompress:"

CONVERTERS: dict[str, type] = {
    "Attention": Attention,
    "BatchNormalization": BatchNormalization,
    "BitShift": BitShift,
    "CenterCropPad": CenterCropPad,
    "ConvTranspose": ConvTranspose,
    "DFT": DFT,
    "Dropout": Dropout,
    "GRU": GRU,
    "IsInf": IsInf,
    "LSTM": LSTM,
    "LayerNormalization": LayerNormalization,
    "Max": Max,
    "MaxPool": MaxPool,
    "Mod": Mod,
    "OneHot": OneHot,
    "Pow": Pow,
    "Mean": Mean,
    "Min": Min,
    "QLinearMatMul": QLinearMatMul,
    "RMSNormalization": RMSNormalization,
    "RNN": RNN,
    "RotaryEmbedding": RotaryEmbedding,
    "ReduceMax": ReduceMax,
    "ReduceMin": ReduceMin,
    "Resize": Resize,
    "RoiAlign": RoiAlign,
    "Squeeze": Squeeze,
    "Sum": Sum,
    "Swish": Swish,
}


def converter_for(op_type: str, opset: int) -> type | None:
    """Our converter for a default-domain op at `opset`, or None (TVM's importer handles it, or nothing does)."""
    converter = CONVERTERS.get(op_type)
    if converter is None or opset < getattr(converter, "first_opset", 1):
        return None
    return converter


def unsupported_form(node: onnx.NodeProto, opset: int) -> str | None:
    """The name of `node`'s form (`Op(attr=value)`) when our converter for it cannot convert that form."""
    converter = converter_for(node.op_type, opset)
    check = getattr(converter, "unsupported_form", None)
    return check(node) if check is not None else None
