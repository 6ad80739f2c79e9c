"""The clustering driver: cluster every conv/matmul weight of a module (with or without codebook re-fitting on
calibration data) and record what it did, for the manifest's `clustering` section.

    mod, record = cluster_layers(mod, bits=4, for_int8=False, calibration=calls)

Called by tvmcompress/pipeline.py after pruning and before quantization (see its NOTE on the order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import tvm

from .cluster_refit import apply_codebooks, fit_codebooks
from .cluster_weights import ClusterWeights
from .quant_rules import find_quantizable_layers

__all__ = ["cluster_layers"]

log = logging.getLogger(__name__)


def cluster_layers(mod: tvm.IRModule, bits: int, for_int8: bool,
                   calibration: Iterable[Mapping[str, np.ndarray]] | None = None) -> tuple[tvm.IRModule, dict]:
    """Cluster every quantizable layer's weight to 2^bits shared values, and the manifest's `clustering` record.

    Pre: the module is in prepare_for_quantization's form with channel affines folded (FoldChannelAffine). With
    calibration data (an iterable of input dicts) each codebook is then re-fitted to the layer outputs
    (passes/cluster_refit.py); without, plain k-means per layer (ClusterWeights)."""
    codebooks: dict = {}
    if calibration is not None:
        log.info("re-fitting cluster codebooks on the calibration data")
        codebooks, offsets = fit_codebooks(mod, bits, calibration, for_int8=for_int8)
        mod = apply_codebooks(mod, bits, codebooks, offsets, for_int8)
    else:
        mod = ClusterWeights(bits, for_int8=for_int8)(mod)
    layers = {}
    for layer in find_quantizable_layers(mod):
        call = next(b.value for blk in mod["main"].body.blocks for b in blk.bindings if b.var.name == layer.binding)
        weight = call.args[1].value.numpy()
        axis = layer.op == "relax.nn.conv2d" and 0 or weight.ndim - 1  # output channels: OIHW 0, matmul [K, N] 1
        per_channel = max(len(np.unique(np.take(weight, i, axis=axis))) for i in range(weight.shape[axis]))
        layers[layer.name] = {"binding": layer.binding, "size": int(weight.size),
                              "zeros": int(weight.size - np.count_nonzero(weight)),
                              "max_values_per_channel": int(per_channel), "refit": layer.binding in codebooks}
    record = {"bits": bits, "codebook_refit": calibration is not None,
              "codebook": ("int8 codes shared per layer, per-channel scales" if for_int8 else "float32 per layer"),
              "layers": layers}
    log.info("clustered %d layers to at most %d values each", len(layers), 2**bits)
    return mod, record
