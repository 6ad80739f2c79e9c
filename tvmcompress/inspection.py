"""Looking at a model without compiling it: its op histogram, shapes, parameters and MACs (`inspect`), and the
int8 sensitivity of each layer (`analyze`)."""

from __future__ import annotations

import os
from typing import Any

import onnx

from . import frontend
from .data import Samples, as_samples, calibration_calls
from .data import eval_data as read_eval_data
from .errors import TvmcompressError
from .passes.quantize_config import QuantizeConfig
from .source import ModelSource

__all__ = ["analyze", "frontend_stats", "inspect"]


def analyze(
    model: ModelSource,
    calibration: str | os.PathLike | Samples,
    eval_data: str | os.PathLike | Samples | None = None,
    config: QuantizeConfig | None = None,
    input_shapes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """int8 sensitivity of each conv/matmul (passes/quant_analysis.py): output SQNR against fp32 and the
    eval metric with only that layer quantized; eval data defaults to the calibration data."""
    from .passes.quant_analysis import analyze_layers
    from .passes.quantize import is_prequantized

    canonical = frontend.canonicalize(frontend.load_model(model), input_shapes or {})
    frontend.check_supported(canonical)
    inputs, _ = frontend.model_io(canonical)
    batches = calibration_calls(as_samples(calibration), inputs)
    data = read_eval_data(as_samples(eval_data), inputs)
    mod = frontend.import_to_relax(canonical)
    if is_prequantized(mod):
        raise TvmcompressError("the model is already quantized: analyze its float version")
    return analyze_layers(mod, config or QuantizeConfig(), batches, data)


def frontend_stats(model: onnx.ModelProto) -> dict[str, Any]:
    from .model_stats import model_stats

    return model_stats(model)


def inspect(model: ModelSource, input_shapes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe an ONNX model without compiling it.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The ONNX model.
    input_shapes : dict, optional
        ``{input name: shape}`` fixing dynamic dims first, so that MACs can be counted; a model whose shapes cannot
        be fixed is described as loaded.

    Returns
    -------
    dict
        ``op_histogram``, ``inputs``/``outputs`` (name, shape, dtype), ``parameters`` (count, bytes), ``macs``
        (total, per layer, per layer type), ``unsupported_ops``, ``opsets``.

    Raises
    ------
    TvmcompressError
        The model cannot be read.

    Examples
    --------
    >>> stats = tvmcompress.inspect("examples/digits_cnn.onnx")
    >>> stats["macs"]["total"]
    84224
    """
    source_model = frontend.load_model(model)
    try:
        canonical = frontend.canonicalize(source_model, input_shapes or {})
    except TvmcompressError:
        # Inspection should still describe a model whose shapes are not fixed yet: report it as loaded.
        canonical = source_model
    return frontend_stats(canonical)
