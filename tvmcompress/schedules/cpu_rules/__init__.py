"""Default (untuned) CPU schedule rules, dlight-style: each rule returns a Schedule or None to pass.

`default_rules()` is the ordered list that cpu_pipeline applies; the last rule (Fallback) matches
every PrimFunc, so nothing is left without at least parallel outer loops and vectorized inner loops.
"""

from __future__ import annotations

from .conv2d import Conv2D
from .dense import Dense
from .fallback import Fallback
from .injective import Injective
from .matmul import Matmul
from .normalization import Normalization
from .pooling import Pooling
from .depthwise_conv2d import DepthwiseConv2D
from .rule_base import CPURule
from .winograd import WinogradInputTransform, WinogradOutputTransform


def default_rules() -> list[CPURule]:
    """The rules in the order they are tried; the first one that returns a schedule wins."""
    return [
        Conv2D(), WinogradInputTransform(), WinogradOutputTransform(), DepthwiseConv2D(), Dense(), Matmul(),
        Injective(), Pooling(), Normalization(), Fallback(),
    ]


__all__ = [
    "CPURule", "Conv2D", "Dense", "DepthwiseConv2D", "Fallback", "Injective", "Matmul", "Normalization",
    "Pooling", "WinogradInputTransform", "WinogradOutputTransform", "default_rules",
]
