"""Typed, frozen configuration of the quantization passes, and the quantization parameters they exchange.

`QuantizeConfig` is validated when it is constructed, so a bad value fails at the CLI/recipe boundary and not
halfway through calibration. `QParams` is the one record that calibration produces and the rewrite passes read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ..errors import OptionError, TvmcompressError

QuantMode = Literal["int8", "fp16", "bf16", "int8-weight", "int4-weight", "dynamic-int8", "ternary-weight",
                    "binary-weight"]
CalibrationMethod = Literal["minmax", "percentile", "entropy", "mse"]
IntDType = Literal["int8", "uint8"]

MODES: tuple[str, ...] = ("int8", "fp16", "bf16", "int8-weight", "int4-weight", "dynamic-int8", "ternary-weight",
                          "binary-weight")
IMPLEMENTED_MODES: tuple[str, ...] = ("int8", "fp16", "bf16", "dynamic-int8", "int8-weight", "int4-weight",
                                      "ternary-weight", "binary-weight")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-(2**31), 2**31 - 1)}


def int_range(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of an integer storage dtype."""
    return _INT_RANGES[dtype]


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization: real = scale * (q - zero_point), q in `dtype`."""

    scale: float
    zero_point: int = 0
    dtype: IntDType = "int8"

    def __post_init__(self):
        if not (self.scale > 0.0):
            raise ValueError(f"QParams.scale must be > 0, got {self.scale}")
        qmin, qmax = int_range(self.dtype)
        if not qmin <= self.zero_point <= qmax:
            raise ValueError(f"QParams.zero_point {self.zero_point} is outside {self.dtype} [{qmin}, {qmax}]")

    @classmethod
    def from_range(cls, low: float, high: float, dtype: IntDType = "int8", symmetric: bool = False) -> "QParams":
        """The parameters that map [low, high] (widened to contain 0, so that 0 is exact) onto `dtype`.

        Symmetric: zero_point is the dtype's midpoint (0 for int8, 128 for uint8) and the scale covers
        max(|low|, |high|) with 127 steps, as onnxruntime does.
        """
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        qmin, qmax = int_range(dtype)
        tiny = 1e-8  # an all-zero tensor still gets a valid (irrelevant) scale
        if symmetric:
            scale = max(abs(low), abs(high)) / 127.0
            return cls(max(scale, tiny), 0 if dtype == "int8" else 128, dtype)
        scale = max((high - low) / (qmax - qmin), tiny)
        zero_point = int(min(max(round(qmin - low / scale), qmin), qmax))
        return cls(scale, zero_point, dtype)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuantizeConfig:
    """What to quantize and how.

    - `mode`: int8 (static: calibrated activations per tensor, weights per output channel, int32 bias),
      fp16 / bf16 (conv and matmul in the low precision, fp32 accumulation), dynamic-int8 (activation scales
      computed at run time, symmetric; no calibration), int8-weight / int4-weight (weight-only: weights stored
      int8 or packed int4, symmetric per output channel, dequantized inside the conv/matmul kernel; float
      activations; no calibration); ternary-weight / binary-weight (the same with {-a, 0, +a} codes at 2 bits
      or sign codes at 1 bit and a per-channel a: passes/ternary_weights.py; usable only with --distill).
    - `calibration_method`: how an activation's range is chosen from its histogram (int8 only).
    - `percentile`: the kept fraction, in percent, for "percentile".
    - `symmetric_activations`: zero_point at the dtype midpoint instead of fitted to [min, max].
    - `activation_dtype`: integer type of quantized activations. "uint8" is what x86 VNNI (vpdpbusd: u8 x s8)
      needs; "int8" is what aarch64 sdot (s8 x s8) needs. Weights are always int8.
    - `exclude`: layers kept in fp32, named by their Relax binding (`lv9`) or by op and index (`conv2d_1`,
      `matmul_0`; see `find_quantizable_layers`).
    - `num_bins`: histogram resolution of the calibration observers (bounded memory per observed tensor).
    - `bias_correction`: add back each int8 layer's mean output error due to weight rounding, measured on the
      calibration data (int8 only; passes/bias_correction.py).
    - `weight_bits`: 8, or 7 (weights in [-63, 63]) for x86 CPUs without VNNI, whose int8 dot product
      (AVX2 vpmaddubsw) sums u8 x s8 byte pairs in saturating int16: 7-bit weights never saturate (ONNX Runtime's
      `reduce_range`). api.compile picks it from the target (schedules/int8_intrinsics.py). int8 only.
    - `smoothquant`: SmoothQuant's alpha in (0, 1) (0.5 is typical), or None: before calibration, divide each
      matmul's activation channels by s = max|X|^alpha / max|W|^(1-alpha) and multiply the weight rows by s, so
      that outlier channels stop dominating the per-tensor activation scale (int8 and dynamic-int8; needs
      calibration data to measure max|X|; passes/smooth_quant.py, applied by api.compile).
    - `equalize_channels`: before calibration, rescale the input channels of convs whose channel ranges differ
      by 8x or more, moving the spread into the per-channel weights (int8 only; passes/equalize_conv_inputs.py).
      Without it a depthwise/hard-swish detector (PicoDet) loses its class scores entirely.
    """

    mode: QuantMode = "int8"
    calibration_method: CalibrationMethod = "minmax"
    percentile: float = 99.99
    symmetric_activations: bool = False
    activation_dtype: IntDType = "int8"
    exclude: tuple[str, ...] = ()
    num_bins: int = 2048
    bias_correction: bool = True
    weight_bits: int = 8
    smoothquant: float | None = None
    equalize_channels: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise TvmcompressError(f"unknown quantization mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise TvmcompressError(
                f"unknown calibration method {self.calibration_method!r}: use one of {', '.join(CALIBRATION_METHODS)}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise TvmcompressError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.activation_dtype not in ("int8", "uint8"):
            raise TvmcompressError(f"activation_dtype must be int8 or uint8, got {self.activation_dtype!r}")
        if not isinstance(self.exclude, tuple) or not all(isinstance(name, str) for name in self.exclude):
            raise TvmcompressError("exclude must be a tuple of layer names")
        if not 256 <= self.num_bins <= 1 << 16:
            raise TvmcompressError(f"num_bins must be in [256, 65536], got {self.num_bins}")
        if isinstance(self.weight_bits, bool) or self.weight_bits not in (7, 8):
            raise TvmcompressError(f"weight_bits must be 7 or 8, got {self.weight_bits!r}")
        if not isinstance(self.equalize_channels, bool):
            raise TvmcompressError(f"equalize_channels must be true or false, got {self.equalize_channels!r}")
        if self.smoothquant is not None:
            if isinstance(self.smoothquant, bool) or not isinstance(self.smoothquant, (int, float)) \
                    or not 0.0 < self.smoothquant < 1.0:
                raise OptionError(
                    f"{{smoothquant}} ALPHA must be between 0 and 1, exclusive (0.5 is typical), got {self.smoothquant!r}"
                )
            if self.mode not in ("int8", "dynamic-int8"):
                raise OptionError(
                    f"{{smoothquant}} applies to {{quantize=}}int8 or dynamic-int8 only, not {self.mode}: drop it or "
                    "change {quantize}"
                )

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "int8" or self.smoothquant is not None  # SmoothQuant measures max|X| per channel

    def to_json(self) -> dict:
        record = asdict(self)
        record["exclude"] = list(self.exclude)
        return record

    def to_dict(self) -> dict:
        """Plain values (a recipe's [options.quantize] table); from_dict gives back an equal config."""
        return self.to_json()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantizeConfig":
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise TvmcompressError(f"unknown field(s) {', '.join(unknown)} in quantize: the fields are {', '.join(names)}")
        values = dict(data)
        if isinstance(values.get("exclude"), list):
            values["exclude"] = tuple(values["exclude"])
        return cls(**values)
