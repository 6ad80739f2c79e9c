"""The compile steps of weight clustering and block-sparse kernels, with their manifest records.

    mod, clustering = cluster(mod, options)          # before quantization: --cluster-bits / --compress-weights
    mod, sparse = sparse_kernels(mod, options, preset)   # after quantization: block-sparse float matmuls

NOTE on order: clustering runs on float weights after pruning (zeros stay zeros) and before quantization, so
that int8 quantizes the shared values (see passes/cluster_weights.py: with int8 the codebook is clustered in
each channel's int8 units and comes out as one shared int8 codebook per layer). Sparse kernels come last:
only float matmuls with constant block-sparse weights qualify, and the decision is measured per layer.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import CompileOptions

log = logging.getLogger(__name__)

__all__ = ["fold_affine", "fold_affine_applies", "cluster", "sparse_kernels"]


def fold_affine_applies(options: CompileOptions) -> bool:
    return (options.cluster_bits is not None or options.compress_weights) and not (
        options.prune is not None and options.prune.criterion == "bn")


def fold_affine(mod, options: CompileOptions):
    """With --cluster-bits / --compress-weights: fold per-channel scales and shifts (decomposed BatchNorm, conv
    bias) into the weights and one bias per layer, before pruning. Fewer constants to store, and magnitude
    pruning then ranks the weights as the layer really scales them. Kept for `--prune-criterion bn`, which reads
    the BatchNorm scales."""
    if not fold_affine_applies(options):
        return mod
    from .passes.fold_channel_affine import FoldChannelAffine
    from .passes.quantize import prepare_for_quantization

    return FoldChannelAffine()(prepare_for_quantization(mod))


def cluster(mod, options: CompileOptions, calibration=None) -> tuple[Any, dict | None]:
    """`--cluster-bits`: k-means weight sharing per layer; with calibration data (an iterable of input dicts)
    each codebook is then re-fitted to the layer outputs (passes/cluster_refit.py)."""
    if options.cluster_bits is None:
        return mod, None
    import numpy as np

    from .passes.cluster_weights import ClusterWeights
    from .passes.fold_channel_affine import FoldChannelAffine
    from .passes.quant_rules import find_quantizable_layers
    from .passes.quantize import prepare_for_quantization

    # Again after pruning: a no-op when fold_affine ran, and pruning's reconstruction may add channel shifts.
    mod = FoldChannelAffine()(prepare_for_quantization(mod))
    for_int8 = options.quantize is not None and options.quantize.mode == "int8"
    codebooks = {}
    if calibration is not None:
        from .passes.cluster_refit import apply_codebooks, fit_codebooks

        log.info("re-fitting cluster codebooks on the calibration data")
        codebooks, offsets = fit_codebooks(mod, options.cluster_bits, calibration, for_int8=for_int8)
        mod = apply_codebooks(mod, options.cluster_bits, codebooks, offsets, for_int8)
    else:
        mod = ClusterWeights(options.cluster_bits, for_int8=for_int8)(mod)
    layers = {}
    for layer in find_quantizable_layers(mod):
        call = next(b.value for blk in mod["main"].body.blocks for b in blk.bindings if b.var.name == layer.binding)
        weight = call.args[1].value.numpy()
        axis = layer.op == "relax.nn.conv2d" and 0 or weight.ndim - 1  # output channels: OIHW 0, matmul [K, N] 1
        per_channel = max(len(np.unique(np.take(weight, i, axis=axis))) for i in range(weight.shape[axis]))
        layers[layer.name] = {"binding": layer.binding, "size": int(weight.size),
                              "zeros": int(weight.size - np.count_nonzero(weight)),
                              "max_values_per_channel": int(per_channel), "refit": layer.binding in codebooks}
    record = {"bits": options.cluster_bits, "codebook_refit": calibration is not None,
              "codebook": ("int8 codes shared per layer, per-channel scales" if for_int8 else "float32 per layer"),
              "layers": layers}
    log.info("clustered %d layers to at most %d values each", len(layers), 2**options.cluster_bits)
    return mod, record


def sparse_kernels(mod, options: CompileOptions, preset) -> tuple[Any, list[dict] | None]:
    """Rewrite the block-sparse float matmuls that measure faster as BSR kernels; None when the model has no
    block-sparse layer (nothing was measured)."""
    import numpy as np

    from .passes.quantize import prepare_for_quantization
    from .passes.sparse_dense import SparseDense, find_block_sparse_matmuls
    from .sparse_decision import decide_sparse_layers

    from .weight_sizes import module_constants

    # Cheap first: most models have no half-zero 2-D float constant, and then nothing needs preparing.
    if not any(c.ndim == 2 and c.dtype.kind == "f" and np.mean(c == 0) >= 0.5 for c in module_constants(mod)):
        return mod, None
    prepared = prepare_for_quantization(mod)
    if not find_block_sparse_matmuls(prepared):
        return mod, None
    decisions = decide_sparse_layers(prepared, preset, options.sparse_min_speedup)
    chosen = {d.binding: tuple(d.block) for d in decisions if d.sparse}
    for d in decisions:
        log.info("%s (%s, block %dx%d, %.0f%% zero blocks): %s", d.layer, "x".join(map(str, d.shape)), *d.block,
                 100 * d.block_sparsity, d.reason)
    return (SparseDense(chosen)(prepared) if chosen else mod), [d.to_json() for d in decisions]
