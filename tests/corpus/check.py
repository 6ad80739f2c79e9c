"""Compile a corpus model in one mode and measure it against ONNX Runtime (shared by the tests and
bench/corpus_sqnr.py).

Modes: "default" (our pipeline, Winograd on), "no_winograd", "int8" (static int8 calibrated on 8 random inputs).
Tolerances:
- fp32 (default, no_winograd): every output within rtol 1e-3 plus atol 1e-4 x max|ORT output|. Random-weight
  nets have outputs from ~0.05 to ~700; the scaled atol keeps the check relative for each output, and 1e-3 leaves
  room for reassociation (Winograd transforms, reduction order) through ~50 layers, nothing more;
- int8: each output's SQNR against ORT's fp32 output must reach INT8_SQNR_FLOOR_DB, or come within
  ORT_INT8_MARGIN_DB of what ONNX Runtime's own static int8 quantizer (per-channel weights, same calibration
  inputs) reaches on that output. Random weights are harder to quantize than trained ones: ORT itself gets
  3.9 dB on a random MobileNetV2 and 22.9 dB on a random ResNet-18, so a fixed floor alone would flag the
  model, not the compiler.
"""

from __future__ import annotations

import os

import numpy as np
import onnx

import architectures

FP32_RTOL = 1e-3
FP32_ATOL_SCALE = 1e-4
INT8_SQNR_FLOOR_DB = 15.0
ORT_INT8_MARGIN_DB = 3.0
CALIBRATION_SAMPLES = 8
MODES = ("default", "no_winograd", "int8")


def ort_run(path: str, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    noise = float(np.sum((ref - got) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(float(np.sum(ref**2)) / noise)


def _calibration(model, arch) -> list[dict]:
    return [architectures.feeds(model, arch, seed=10 + i) for i in range(CALIBRATION_SAMPLES)]


def ort_int8_sqnr(name: str, opset: int, cache_dir: str, workdir: str) -> list[float] | None:
    """Per-output SQNR of ONNX Runtime's static int8 QDQ quantization (per-channel weights, uint8 activations,
    the same calibration inputs); None when ORT cannot quantize the model."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    arch = architectures.ARCHS[name]
    path = architectures.export(name, opset, cache_dir)
    model = onnx.load(path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(_calibration(model, arch))

        def get_next(self):
            return next(self.items, None)

    quantized = os.path.join(workdir, "ort_int8.onnx")
    try:
        quantize_static(path, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception:  # noqa: BLE001 - no reference for this model: the fixed floor applies alone
        return None
    feeds = architectures.feeds(model, arch, seed=1)
    return [sqnr_db(a, b) for a, b in zip(ort_run(path, feeds), ort_run(quantized, feeds))]


def int8_floor(ort_sqnr: float | None) -> float:
    return INT8_SQNR_FLOOR_DB if ort_sqnr is None else min(INT8_SQNR_FLOOR_DB, ort_sqnr - ORT_INT8_MARGIN_DB)


def compile_mode(name: str, opset: int, mode: str, cache_dir: str, workdir: str):
    """(model proto, feeds, ORT outputs, our outputs as a list) for one corpus model and mode."""
    import tvmcompress
    from tvmcompress.passes.quantize_config import QuantizeConfig

    arch = architectures.ARCHS[name]
    path = architectures.export(name, opset, cache_dir)
    model = onnx.load(path)
    feeds = architectures.feeds(model, arch, seed=1)
    kwargs = {"input_shapes": dict(arch.compile_shapes)} if arch.compile_shapes else {}
    if mode == "no_winograd":
        kwargs["winograd"] = False
    elif mode == "int8":
        batches = _calibration(model, arch)
        calibration = os.path.join(workdir, "calibration.npz")
        np.savez(calibration, **{k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
        kwargs.update(quantize=QuantizeConfig(mode="int8"), calibration=calibration)
    options = tvmcompress.CompileOptions.create(**kwargs)
    artifact = tvmcompress.compile(path, "host", output=os.path.join(workdir, "out"), options=options)
    got = artifact.run(feeds)
    return model, feeds, ort_run(path, feeds), list(got.values())


def fp32_mismatches(expected: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> list[str]:
    problems = []
    for name, want, have in zip(names, expected, got):
        if have.shape != want.shape:
            problems.append(f"{name}: shape {have.shape}, ORT {want.shape}")
            continue
        atol = FP32_ATOL_SCALE * float(np.max(np.abs(want)))
        if not np.allclose(have, want, rtol=FP32_RTOL, atol=atol):
            err = float(np.max(np.abs(have.astype(np.float64) - want)))
            problems.append(f"{name}: max |diff| {err:.3g}, ORT max |x| {float(np.max(np.abs(want))):.3g}")
    return problems
