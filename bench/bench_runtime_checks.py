"""Regenerate the `runtime-checks` section of BENCHMARKS.md: what the run-time safety of issue 18 costs.

    python bench/bench_runtime_checks.py [--models resnet18,mobilenet_v2,bert_encoder,bert_embedding] [--runs 30]

Two checks are in every default build: index checks before Gather / GatherElements / GatherND / ScatterElements /
ScatterND (tvmcompress/onnx_ops/indexing.py) and NaN-propagating float max/min (schedules/propagate_nan.py:
Relu, Clip, Max, Min, max pooling, softmax's max). Each model is compiled twice, as the default build and as a
baseline without both (this script swaps them out in its own process only: the index check for TVM's own
negative-index normalization, PropagateNaN for a no-op), and the two artifacts are timed interleaved with
`tvmcompress.bench.benchmark` (ONNX Runtime fp32 alongside). The benchmark models of bench/models.py have no
Gather, so `bert_embedding` puts a BERT front on the encoder: token and segment ids (int64 [1, 128]) gathered
from a 30522 x 256 and a 2 x 256 table, added, then the 4-layer encoder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
from markdown_sections import replace_section  # noqa: E402

import tvmcompress  # noqa: E402
from tvmcompress.bench import BenchConfig, benchmark, describe_method  # noqa: E402
from tvmcompress.targets import cpu_features  # noqa: E402

VOCAB, SEGMENTS = 30522, 2


def build_bert_embedding(seed: int = 0, seq: int = 128, hidden: int = 256) -> onnx.ModelProto:
    """bench/models.py's encoder behind word + segment embedding Gathers of int64 ids."""
    encoder = bench_models.build_bert_encoder(seed, seq=seq, hidden=hidden)
    rng = np.random.default_rng(seed + 1)
    tables = [numpy_helper.from_array((0.02 * rng.standard_normal((n, hidden))).astype("float32"), name)
              for n, name in ((VOCAB, "word_embeddings"), (SEGMENTS, "segment_embeddings"))]
    front = [
        helper.make_node("Gather", ["word_embeddings", "input_ids"], ["words"], axis=0),
        helper.make_node("Gather", ["segment_embeddings", "segment_ids"], ["segments"], axis=0),
        helper.make_node("Add", ["words", "segments"], ["input"]),
    ]
    graph = encoder.graph
    ids = [helper.make_tensor_value_info(name, TensorProto.INT64, [1, seq]) for name in ("input_ids", "segment_ids")]
    model = helper.make_model(
        helper.make_graph(front + list(graph.node), "bert_embedding", ids, list(graph.output),
                          tables + list(graph.initializer)),
        opset_imports=list(encoder.opset_import), ir_version=encoder.ir_version,
    )
    onnx.checker.check_model(model)
    return model


@contextlib.contextmanager
def without_runtime_checks():
    """Compile as before issue 18: TVM's negative-index normalization only, no NaN propagation."""
    import tvm
    from tvm import relax

    from tvmcompress.onnx_ops import indexing
    from tvmcompress.schedules import cpu_pipeline

    def unchecked(bb, indices, extents, where, per_coordinate=False, allow_negative=True):
        k = len(extents) if per_coordinate else 1
        n = np.asarray(extents).reshape((1,) * (len(indices.ty.shape) - 1) + (k,)).astype(str(indices.ty.dtype))
        return bb.normalize(relax.op.where(relax.op.less(indices, relax.const(0, n.dtype)),
                                           relax.op.add(indices, relax.const(n)), indices))

    saved = indexing.checked_indices, cpu_pipeline.PropagateNaN
    indexing.checked_indices = unchecked
    cpu_pipeline.PropagateNaN = lambda: tvm.transform.Sequential([], name="no-op")
    try:
        yield
    finally:
        indexing.checked_indices, cpu_pipeline.PropagateNaN = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,bert_encoder,bert_embedding")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()

    features = cpu_features.detect()
    config = BenchConfig(runs=args.runs)
    rows_md = []
    with tempfile.TemporaryDirectory(prefix="tvmcompress-runtime-checks-") as tmp:
        paths = bench_models.write_models(pathlib.Path(tmp))
        paths["bert_embedding"] = pathlib.Path(tmp) / "bert_embedding.onnx"
        onnx.save(build_bert_embedding(), str(paths["bert_embedding"]))
        for name in args.models.split(","):
            checked, baseline = (os.path.join(tmp, f"{name}-{kind}") for kind in ("checked", "baseline"))
            start = time.perf_counter()
            tvmcompress.compile(str(paths[name]), "host", output=checked)
            with without_runtime_checks():
                tvmcompress.compile(str(paths[name]), "host", output=baseline)
            compile_s = time.perf_counter() - start
            rows = {r.name: r for r in benchmark(str(paths[name]), {"checked": checked, "baseline": baseline}, config)}
            with_checks, without = rows["tvmcompress checked"], rows["tvmcompress baseline"]
            cost = with_checks.median_ms / without.median_ms - 1
            rows_md.append(
                f"| {name} | {rows['onnxruntime fp32'].median_ms:.2f} | {without.median_ms:.2f} | "
                f"{with_checks.median_ms:.2f} | {100 * cost:+.1f}% | {compile_s:.0f} s |"
            )
            print(rows_md[-1], flush=True)

    command = "python bench/bench_runtime_checks.py " + " ".join(sys.argv[1:])
    text = f"""## Run-time checks: index bounds and NaN propagation (issue 18)

Regenerated by `{command.strip()}` on {datetime.date.today().isoformat()}.

Machine: {platform.processor() or platform.machine()}, LLVM CPU `{features.mcpu}`, {features.cores} cores. {describe_method(config)}
Default builds (no tuning) with the checks, against the same build without them (bench/bench_runtime_checks.py
says how the baseline is made). The cost column is median with / median without - 1; the target is at most 3%.
On this shared machine medians move by a few percent between runs, so a cost within +-3% is noise.

| model | ORT fp32 median ms | without checks ms | with checks ms | cost | both compiles |
|---|---|---|---|---|---|
{chr(10).join(rows_md)}
"""
    replace_section(args.output, "runtime-checks", text)
    print(f"wrote section 'runtime-checks' of {args.output}")


if __name__ == "__main__":
    main()
