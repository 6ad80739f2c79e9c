"""Regenerate the `runtime-checks` section of BENCHMARKS.md: what the run-time safety of issue 18 costs.

    TVM_NUM_THREADS=1 python bench/bench_runtime_checks.py [--models resnet18,...,bert_embedding] [--rounds 20]

Two checks are in every default build: index checks before Gather / GatherElements / GatherND / ScatterElements /
ScatterND (tvmcompress/onnx_ops/indexing.py) and NaN-propagating float max/min (schedules/propagate_nan.py:
Relu, Clip, Max, Min, max pooling, softmax's max). Each model is compiled twice, as the default build and as a
baseline without both (this script swaps them out in its own process only: the index check for TVM's own
negative-index normalization, PropagateNaN for a no-op), and the two artifacts are timed interleaved
(`time_pair`). One worker thread (TVM_NUM_THREADS=1) keeps the comparison stable on a shared machine; the checks
change per-element work, which one thread measures as well as two. The benchmark models of bench/models.py have
no Gather, so `bert_embedding` puts a BERT front on the encoder: token and segment ids (int64 [1, 128]) gathered
from a 30522 x 256 and a 2 x 256 table, added, then the 4-layer encoder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import pathlib
import platform
import statistics
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
    from tvmcompress.onnx_ops.relax_helpers import dtype_of, shape_of
    from tvmcompress.schedules import cpu_pipeline

    def unchecked(bb, indices, extents, where, per_coordinate=False, allow_negative=True):
        shape, dtype = shape_of(indices), dtype_of(indices)
        k = len(extents) if per_coordinate else 1
        n = np.asarray(extents, dtype).reshape((1,) * max(len(shape) - 1, 0) + (k,) if shape else ())
        return bb.normalize(relax.op.where(relax.op.less(indices, relax.const(0, dtype)),
                                           relax.op.add(indices, relax.const(n, dtype)), indices))

    saved = indexing.checked_indices, cpu_pipeline.PropagateNaN
    indexing.checked_indices = unchecked
    cpu_pipeline.PropagateNaN = lambda: tvm.transform.Sequential([], name="no-op")
    try:
        yield
    finally:
        indexing.checked_indices, cpu_pipeline.PropagateNaN = saved


def time_pair(model_path: str, artifacts: dict[str, str], rounds: int, turn: int = 5) -> dict[str, list[float]]:
    """Per-call milliseconds of each artifact on one set of random inputs, taking turns of `turn` calls (after one
    untimed call) for `rounds` rounds, so that both see the same load on a shared machine. CPU time of this thread,
    not wall time: with one worker (TVM_NUM_THREADS=1) TVM runs every kernel on the calling thread, and the CPU
    time leaves out the time other processes hold the core (this machine runs many jobs at once)."""
    from tvmcompress import frontend
    from tvmcompress.bench import _random_feeds

    feeds = _random_feeds(frontend.model_io(frontend.canonicalize(frontend.load_model(model_path)))[0])
    calls = {}
    for label, directory in artifacts.items():
        artifact = tvmcompress.load(directory)
        session = artifact.session()
        tensors = session.to_device([feeds[spec.name] for spec in artifact.inputs])
        calls[label] = lambda s=session, t=tensors: s.call_device(t)
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(3):
        for call in calls.values():
            call()
    for _ in range(rounds):
        for label, call in calls.items():
            call()
            for _ in range(turn):
                start = time.thread_time()
                call()
                times[label].append((time.thread_time() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,bert_encoder,bert_embedding")
    parser.add_argument("--rounds", type=int, default=20, help="turns of 5 timed calls per build")
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()

    features = cpu_features.detect()
    pool = os.environ.get("TVM_NUM_THREADS", "?")  # `import tvmcompress` sets it to the physical cores if unset
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
            times = time_pair(str(paths[name]), {"baseline": baseline, "checked": checked}, args.rounds)
            base, check = times["baseline"], times["checked"]
            rows_md.append(
                f"| {name} | {min(base):.2f} | {min(check):.2f} | {100 * (min(check) / min(base) - 1):+.1f}% | "
                f"{statistics.median(base):.2f} | {statistics.median(check):.2f} | "
                f"{100 * (statistics.median(check) / statistics.median(base) - 1):+.1f}% | {compile_s:.0f} s |"
            )
            print(rows_md[-1], flush=True)

    command = f"TVM_NUM_THREADS={pool} python bench/bench_runtime_checks.py " + " ".join(sys.argv[1:])
    text = f"""## Run-time checks: index bounds and NaN propagation (issue 18)

Regenerated by `{command.strip()}` on {datetime.date.today().isoformat()}.

Machine: {platform.processor() or platform.machine()}, LLVM CPU `{features.mcpu}`, {features.cores} cores, TVM_NUM_THREADS={pool}.
Default builds (no tuning) with the checks, against the same build without them (how the baseline is made: the
script's docstring). The two artifacts take turns of 5 timed calls (after one untimed call), {args.rounds} turns
each, in one process, timed in CPU time of the calling thread (one TVM worker: all kernels run on it); cost =
with / without - 1, on the fastest call (least disturbed by other load) and on the median. The target is at
most +3%. This machine is shared by other jobs: a difference within a few percent either way is noise.

| model | min ms without | min ms with | cost (min) | median ms without | median ms with | cost (median) | both compiles |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows_md)}
"""
    replace_section(args.output, "runtime-checks", text)
    print(f"wrote section 'runtime-checks' of {args.output}")


if __name__ == "__main__":
    main()
