"""Pruning orchestration: run the steps of a PruneConfig on a Relax module, in a fixed order, and record them.

    mod, record = prune(mod, PruneConfig.parse("channel:0.5"), calibration_batches)

NOTE on order (passes/prune_config.STEP_ORDER): whole residual blocks go first (layer), then channels
(so that sparsity is measured on the weights that remain), then unstructured sparsity, then block / N:M.
Reconstruction follows the step it repairs, while the teacher is the module as it was before any pruning.

The record (report.json's `pruning` section): per layer the kept / total output channels, the sparsity of its
weight, the criterion, and MACs before and after; the totals; and the reconstruction errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import tvm

from ..errors import TvmcompressError
from .prune_config import PruneConfig

log = logging.getLogger(__name__)

__all__ = ["prune", "prepare_for_pruning", "layer_macs", "activation_means", "RECORD_VERSION"]

RECORD_VERSION = 1


def prepare_for_pruning(mod: tvm.IRModule) -> tvm.IRModule:
    """BatchNorm decomposed into per-channel constants, constants folded (transposed Gemm weights become plain
    constants), unique binding names: the form the channel analysis reads."""
    from .quantize import prepare_for_quantization

    return prepare_for_quantization(mod)


def layer_macs(mod: tvm.IRModule) -> dict[str, dict[str, Any]]:
    """{binding: {op, macs, out_channels, weight_size, nonzero}} of every conv2d / matmul with a constant weight."""
    from .channel_groups import analyze_channels

    layers = {}
    shapes = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if hasattr(ty, "shape") and ty.shape is not None:
                try:
                    shapes[binding.var.name] = [int(d) for d in ty.shape.values]
                except (TypeError, AttributeError):
                    pass
    for name, layer in analyze_channels(mod).layers.items():
        out = shapes.get(name)
        if out is None:
            continue
        weight = layer.weight
        if layer.op == "matmul":
            macs, channels = int(np.prod(out)) * weight.shape[0], weight.shape[1]
        else:  # conv2d: every output element takes (C_in / groups) * KH * KW multiply-adds
            macs, channels = int(np.prod(out)) * int(np.prod(weight.shape[1:])), weight.shape[0]
        layers[name] = {"op": layer.op, "macs": macs, "out_channels": int(channels),
                        "weight_size": int(weight.size), "nonzero": int(np.count_nonzero(weight))}
    return layers


def activation_means(mod: tvm.IRModule, names: list[str], data) -> dict[str, np.ndarray]:
    """Mean |x| per channel (axis 1 of NCHW, last axis of matmul operands) of the named tensors."""
    from .reconstruct import collect_tensors

    values = collect_tensors(mod, names, data)
    means = {}
    for name, value in values.items():
        axis = 1 if value.ndim == 4 else value.ndim - 1
        means[name] = np.abs(value).mean(axis=tuple(i for i in range(value.ndim) if i != axis))
    return means


def _channel_contributions(mod: tvm.IRModule, analysis, data) -> dict[str, np.ndarray]:
    """Criterion 'activation' for channels: what each channel adds to the layers that read it, on calibration
    data: sum over consumers of E[x_c^2] * ||W[c]||^2 (the energy its removal takes from their outputs, ignoring
    correlations). Keyed by each source of the group, as channel_importance expects."""
    from .channel_groups import channel_positions
    from .reconstruct import collect_tensors

    roots = analysis.prunable_groups()
    consumers = {l.binding: l for r in roots for l in analysis.consumers(r)}
    inputs = collect_tensors(mod, sorted({l.input_var for l in consumers.values()}), data)
    scores = {}
    for root in roots:
        score = np.zeros(analysis.sizes[root])
        for layer in analysis.consumers(root):
            positions = channel_positions(analysis, layer.in_space, root)
            if positions is None:
                continue
            x = inputs[layer.input_var]
            axis = 1 if layer.op == "conv2d" else x.ndim - 1
            energy = (x.astype(np.float64) ** 2).mean(axis=tuple(i for i in range(x.ndim) if i != axis))
            squared = layer.weight.astype(np.float64) ** 2  # conv OIHW: per input channel; matmul [K, N]: per row
            contribution = energy * (squared.sum(axis=(0, 2, 3)) if layer.op == "conv2d" else squared.sum(axis=1))
            part = contribution[positions].sum(axis=1)
            score += part / max(float(part.mean()), 1e-12)
        for source in analysis.sources(root):
            scores[source.binding] = score
    return scores


def prune(
    mod: tvm.IRModule, config: PruneConfig, calibration: Iterable[Mapping[str, np.ndarray]] | None = None
) -> tuple[tvm.IRModule, dict[str, Any]]:
    """Apply `config` to `mod` (float32, weights bound as constants). `calibration`: items {input: array} for the
    activation criterion, layer removal and reconstruction. Returns the pruned module and its record."""
    from .channel_groups import analyze_channels, kept_indices
    from .prune_channels import PruneChannels, choose_channels, prunable_group_sizes
    from .prune_unstructured import PruneUnstructured, choose_masks
    from .reconstruct import reconstruct_layers

    data = list(calibration) if calibration is not None else None
    if data is not None and not data:
        raise TvmcompressError("calibration data is empty: give at least one sample for pruning")
    if config.needs_calibration and data is None:
        raise TvmcompressError("--prune-criterion activation needs --calibration FILE.npz: inputs to measure")
    mod = prepare_for_pruning(mod)
    teacher = mod
    before = layer_macs(mod)
    reconstruct = config.reconstruct and data is not None
    record: dict[str, Any] = {"version": RECORD_VERSION, "config": config.to_json(), "steps": [],
                              "reconstructed": reconstruct, "reconstruction": {}}
    # Per layer, the teacher's output channels it still produces (after channel pruning), for reconstruction.
    teacher_channels: dict[str, np.ndarray] = {}

    step = config.step("layer")
    if step is not None:
        from .prune_layers import PruneLayers, choose_blocks

        if data is None:
            raise TvmcompressError("--prune layer:K needs --calibration FILE.npz: blocks are ranked by their output")
        blocks = choose_blocks(mod, int(step.amount), data)
        mod = PruneLayers(blocks)(mod)
        record["steps"].append({"step": str(step), "removed_blocks": blocks})
        log.info("pruning: removed %d residual block(s): %s", len(blocks), ", ".join(blocks))

    step = config.step("channel")
    if step is not None:
        analysis = analyze_channels(mod)
        activations = None
        if config.criterion == "activation":
            activations = _channel_contributions(mod, analysis, data)
        ratio = step.amount
        if config.ratios("channel"):  # per-group overrides (--prune-budget); other groups take the spec's ratio
            overrides = config.ratios("channel")
            ratio = {name: overrides.get(name, step.amount) for name in prunable_group_sizes(mod)}
        decision = choose_channels(mod, ratio, config.criterion, config.multiple_of, activations)
        pruned = PruneChannels(decision)(mod)
        by_root = {analysis.find(analysis.layers[name].out_space): kept for name, kept in decision.items()}
        teacher_channels = {name: kept_indices(analysis, layer.out_space, by_root)
                            for name, layer in analysis.layers.items()}
        record["steps"].append({"step": str(step), "groups": len(decision)})
        log.info("pruning: %d channel groups pruned", len(decision))
        if reconstruct and by_root:  # nothing removed (every group overridden to 0): nothing to re-fit
            consumers = []
            for root in by_root:
                consumers += [l.binding for l in analysis.consumers(root) if l.binding not in consumers]
            order = [name for name in analysis.layers if name in consumers]
            pruned, errors = reconstruct_layers(pruned, teacher, order, data, teacher_channels, ridge=config.ridge)
            record["reconstruction"].update(errors)
        mod = pruned

    step = config.step("unstructured")
    if step is not None:
        activations = None
        if config.criterion == "activation":
            inputs = sorted({l.input_var for l in analyze_channels(mod).layers.values()})
            activations = activation_means(mod, inputs, data)
        masks = choose_masks(mod, step.amount, step.scope, activations, config.ratios("unstructured"))
        mod = PruneUnstructured(masks)(mod)
        record["steps"].append({"step": str(step), "layers": len(masks)})
        log.info("pruning: %d layers sparsified to %g", len(masks), step.amount)
        if reconstruct and masks:
            order = [name for name in analyze_channels(mod).layers if name in masks]
            # reselect: with data at hand, each layer keeps as many weights as its magnitude mask but chooses
            # them by their effect on its output (w^2 * E[x^2]) before the re-fit: the digits CNN at
            # unstructured:0.8 keeps 99.2% instead of 98.3% (same global per-layer sparsity).
            mod, errors = reconstruct_layers(mod, teacher, order, data, teacher_channels, masks, config.ridge,
                                             reselect=True)
            for name, err in errors.items():
                record["reconstruction"][name] = err

    for kind in ("block", "nm"):
        step = config.step(kind)
        if step is not None:
            mod = _apply_block_sparsity(mod, step, record)

    after = layer_macs(mod)
    layers = []
    for name, info in before.items():
        now = after.get(name)
        layers.append({
            "layer": name, "op": info["op"],
            "kept": now["out_channels"] if now else 0, "total": info["out_channels"],
            "weights": now["weight_size"] if now else 0,
            "sparsity": round(1.0 - now["nonzero"] / now["weight_size"], 4) if now else 1.0,
            "criterion": config.criterion,
            "macs_before": info["macs"], "macs_after": now["macs"] if now else 0,
        })
    record["layers"] = layers
    record["macs_before"] = sum(l["macs_before"] for l in layers)
    record["macs_after"] = sum(l["macs_after"] for l in layers)
    log.info("pruning: MACs %d -> %d (%.2fx fewer)", record["macs_before"], record["macs_after"],
             record["macs_before"] / max(record["macs_after"], 1))
    return mod, record


def _apply_block_sparsity(mod: tvm.IRModule, step, record: dict) -> tvm.IRModule:
    """block:S:RxC and N:M on Dense/MatMul weights (passes/prune_block.py)."""
    from .prune_block import PruneBlock, PruneNM, prunable_matmuls

    layers = prunable_matmuls(mod)
    if not layers:
        log.warning("pruning: %s has no Dense/MatMul layer with a constant weight to sparsify", step)
    mod = PruneBlock(step.amount, step.block)(mod) if step.kind == "block" else PruneNM(step.n, step.m)(mod)
    record["steps"].append({"step": str(step), "layers": len(layers)})
    log.info("pruning: %s applied to %d matmul(s)", step, len(layers))
    return mod
