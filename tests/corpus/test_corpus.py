"""The corpus of real architectures, each compiled default, --no-winograd and int8, checked against ONNX Runtime.

Exports are cached under pytest's cache dir (.pytest_cache/d/tvmcompress-corpus), keyed by the torch/timm/
ultralytics/onnx versions, arch and opset, so only the first run exports. The fast subset (small models, one
opset each) runs in the default suite; every arch at every opset runs with -m slow.

Known bugs are strict xfails: each turns into an XPASS failure when its fix lands, so the fixer deletes the line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import architectures
import check

# (arch, mode) -> the bug; an arch alone covers all its modes. Filed under issue 17.
KNOWN_BUGS: dict[tuple[str, str | None], str] = {
    # None open: the C2f/Fire-module Winograd fusion, conv2d_transpose in NHWC and Paddle -1 dims were fixed.
}



def _cases(fast: bool):
    cases = []
    for name, arch in architectures.ARCHS.items():
        for opset in arch.opsets:
            for mode in check.MODES:
                if fast != (opset == arch.opsets[0] and mode in arch.fast):
                    continue
                marks = [] if fast else [pytest.mark.slow]
                bug = KNOWN_BUGS.get((name, mode)) or KNOWN_BUGS.get((name, None))
                if bug:
                    marks.append(pytest.mark.xfail(strict=True, reason=bug))
                cases.append(pytest.param(name, opset, mode, marks=marks, id=f"{name}-opset{opset}-{mode}"))
    return cases


@pytest.fixture(scope="session")
def corpus_dir(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: export per session
    return str(cache.mkdir("tvmcompress-corpus") if cache else tmp_path_factory.mktemp("tvmcompress-corpus"))


def _check(name, opset, mode, corpus_dir, tmp_path, request):
    model, _feeds, expected, got = check.compile_mode(name, opset, mode, corpus_dir, str(tmp_path))
    names = [o.name for o in model.graph.output]
    assert len(got) == len(expected)
    if mode == "int8":
        sqnr = {n: check.sqnr_db(want, have) for n, want, have in zip(names, expected, got)}
        reference = [None] * len(names)
        if min(sqnr.values()) < check.INT8_SQNR_FLOOR_DB:  # ORT's int8 is the reference only below the fixed floor
            reference = check.ort_int8_sqnr(name, opset, corpus_dir, str(tmp_path)) or reference
        if getattr(request.config, "cache", None):  # for bench/corpus_sqnr.py --from-cache and BENCHMARKS.md
            request.config.cache.set(f"tvmcompress-corpus/sqnr/{name}-opset{opset}",
                                     {n: round(v, 2) for n, v in sqnr.items()})
        low = {n: f"{v:.1f} dB < floor {check.int8_floor(r):.1f} dB (ORT int8: {r if r is None else round(r, 1)})"
               for (n, v), r in zip(sqnr.items(), reference) if not v >= check.int8_floor(r)}
        assert not low, f"int8 SQNR too low: {json.dumps(low)}"
    else:
        problems = check.fp32_mismatches(expected, got, names)
        assert not problems, "; ".join(problems)


@pytest.mark.parametrize("name, opset, mode", _cases(fast=True))
def test_corpus_fast(name, opset, mode, corpus_dir, tmp_path, request):
    _check(name, opset, mode, corpus_dir, tmp_path, request)


@pytest.mark.parametrize("name, opset, mode", _cases(fast=False))
def test_corpus(name, opset, mode, corpus_dir, tmp_path, request):
    _check(name, opset, mode, corpus_dir, tmp_path, request)


def test_corpus_covers_the_families_and_opsets():
    """The issue's coverage: >= 30 architectures, the named families, at least opsets 13 and 17, ir_version <= 10."""
    archs = architectures.ARCHS
    assert len(archs) >= 30
    assert {13, 17} <= {o for a in archs.values() for o in a.opsets}
    families = {a.family for a in archs.values()}
    assert {"classifier", "detector", "decoder", "ocr", "transformer"} <= families
    for must in ("yolov8n", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                 "efficientnet_lite0", "regnetx_002", "convnext_atto", "vit_tiny", "dbnet", "unet", "picodet",
                 "crnn", "bert", "crnn_paddle"):
        assert must in archs
    assert architectures.IR_VERSION <= 10


def test_paddle_rewrite_writes_minus_one_dims(corpus_dir):
    """The Paddle-style variants really carry -1 dims (what Paddle2ONNX writes), so they test what they claim."""
    import onnx

    model = onnx.load(architectures.export("crnn_paddle", 17, corpus_dir), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [-1, 3, -1, -1]
    assert model.ir_version <= 10


def test_export_is_deterministic(tmp_path):
    """Fixed seeds: two exports of the same arch give the same weights (so cached and fresh exports agree)."""
    import onnx
    from onnx import numpy_helper

    a = onnx.load(architectures.export("unet", 17, str(tmp_path / "a")))
    b = onnx.load(architectures.export("unet", 17, str(tmp_path / "b")))
    for x, y in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y))
