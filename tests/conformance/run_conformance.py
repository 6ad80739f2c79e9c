#!/usr/bin/env python
"""ONNX conformance: run onnx's node tests through tvmcompress (load, canonicalize, compile for host, run).

    python tests/conformance/run_conformance.py --jobs 2 --markdown CONFORMANCE.md   # full run, regenerate the report
    python tests/conformance/run_conformance.py --filter '^test_(conv|relu)' --jobs 2  # a subset while iterating
    python tests/conformance/run_conformance.py --from-json results.json --markdown CONFORMANCE.md  # report only

Each case runs in a worker process with a timeout; a worker that crashes or hangs is replaced, and the case is
recorded with the outcome of the stage it died in. Outcomes: pass, import error, compile error, runtime error,
wrong result, timeout. Out-of-scope cases (training ops; string, sequence and optional types) are counted but
not run.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import re
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance_cases import ATTRIBUTE_LIKE_INPUTS, attribute_like_inputs, load_cases, out_of_scope_reason  # noqa: E402
from conformance_worker import OUTCOMES, STAGE_OUTCOME, serve  # noqa: E402
from tolerance_overrides import OVERRIDES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# A worker is replaced after this many cases: TVM's compiler keeps caches that grow over hundreds of builds.
CASES_PER_WORKER = 150
# A case's timeout starts when the worker starts it (its first "stage" message). Until then the worker may still
# be importing TVM, which takes minutes on a loaded machine; this much longer is allowed for that.
WORKER_START_SECONDS = 600.0


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.case = None
        self.stage = None
        self.started = False  # whether the worker has started self.case (sent its first stage)
        self.timeout = 0.0
        self.deadline = None
        self.done = 0

    def send(self, case, bound, timeout: float) -> None:
        self.case, self.stage, self.started = case, "import", False
        self.timeout, self.deadline = timeout, time.monotonic() + timeout + WORKER_START_SECONDS
        self.conn.send((case, bound))

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def run_cases(planned: list[tuple], jobs: int, timeout: float, progress=None) -> dict[str, dict]:
    """Run (case, bound) pairs on `jobs` worker processes. Returns {case name: result dict}."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no TVM state is forked
    queue = collections.deque(planned)
    results: dict[str, dict] = {}
    workers = [_Worker(ctx) for _ in range(min(jobs, len(planned)) or 1)]
    idle = list(workers)
    busy: list[_Worker] = []
    bound_of = {case.name: bound for case, bound in planned}

    def finish(worker: _Worker, result: dict) -> None:
        result.setdefault("bound", bound_of[worker.case.name])
        results[worker.case.name] = result
        if progress:
            progress(worker.case, result, len(results), len(planned))
        worker.case = None
        worker.done += 1

    while queue or busy:
        while idle and queue:
            worker = idle.pop()
            if worker.done >= CASES_PER_WORKER:
                worker.stop()
                workers.remove(worker)
                worker = _Worker(ctx)
                workers.append(worker)
            case, bound = queue.popleft()
            worker.send(case, bound, timeout)
            busy.append(worker)
        now = time.monotonic()
        ready = wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - now))
        for worker in list(busy):
            replace = False
            if worker.conn in ready:
                try:
                    kind, payload = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join(5)
                    code = worker.process.exitcode
                    finish(worker, {"outcome": STAGE_OUTCOME.get(worker.stage, "runtime error"), "stage": worker.stage,
                                    "message": f"worker crashed in {worker.stage} (exit code {code})", "crash": True})
                    replace = True
                else:
                    if kind == "stage":
                        worker.stage = payload
                        if not worker.started:
                            worker.started, worker.deadline = True, time.monotonic() + worker.timeout
                        continue
                    finish(worker, payload)
            elif time.monotonic() >= worker.deadline:
                finish(worker, {"outcome": "timeout", "stage": worker.stage,
                                "message": f"no result after {timeout:.0f} s (in {worker.stage})"})
                replace = True
            else:
                continue
            busy.remove(worker)
            if replace:
                worker.kill()
                workers.remove(worker)
                worker = _Worker(ctx)
                workers.append(worker)
            idle.append(worker)
    for worker in workers:
        worker.stop()
    return results


# ------------------------------------------------------------------------------------------------ report


# A case that matches only under its per-test tolerance override (tolerance_overrides.py) is not counted as a
# pass: the summary and the per-op table count it here, and the report lists it apart.
OVERRIDE_PASS = "pass under a tolerance override"


def report_outcome(record: dict) -> str:
    """The record's outcome as the report counts it: OVERRIDE_PASS for a pass that needed its override."""
    if record["outcome"] == "pass" and (record.get("override") or {}).get("applied"):
        return OVERRIDE_PASS
    return record["outcome"]


def summarize(records: list[dict]) -> dict:
    in_scope = [r for r in records if not r.get("scope")]
    counts = collections.Counter(report_outcome(r) for r in in_scope)
    passed = counts.get("pass", 0)
    return {
        "total": len(records),
        "in_scope": len(in_scope),
        "passed": passed,
        "in_scope_rate": passed / len(in_scope) if in_scope else 0.0,
        "overall_rate": passed / len(records) if records else 0.0,
        "outcomes": {o: counts.get(o, 0) for o in (OUTCOMES[0], OVERRIDE_PASS, *OUTCOMES[1:])},
        "out_of_scope": dict(collections.Counter(r["scope"] for r in records if r.get("scope"))),
        "crashes": sum(1 for r in records if r.get("crash")),
    }


def render_markdown(records: list[dict], meta: dict) -> str:
    s = summarize(records)
    lines = [
        "# ONNX conformance",
        "",
        "Generated by `python tests/conformance/run_conformance.py --jobs 2 --markdown CONFORMANCE.md`; do not edit.",
        "",
        f"onnx {meta.get('onnx')} node tests (`onnx.backend.test.loader.load_node_model_tests()`), run through "
        "tvmcompress's real pipeline: `load_model` -> `canonicalize` -> `import_to_relax`, then "
        "`tvmcompress.compile(model, \"host\")` and `tvmcompress.load(dir).run(inputs)`. Outputs must have the "
        "reference dtype and shape and match at the test's tolerance (rtol 1e-3, atol 1e-7), as onnx's own runner "
        "checks, on every element whose value ONNX defines (see *Casts out of range*). No tolerance override counts "
        "as a pass (see *Tolerance overrides*). "
        f"Machine: {meta.get('machine', '?')}; tvm {meta.get('tvm')}; ml_dtypes {meta.get('ml_dtypes', '?')}; "
        f"run took {meta.get('minutes', '?')} min "
        f"with {meta.get('jobs')} job(s), timeout {meta.get('timeout')} s per test."
        + (f" Tests matching {', '.join(f'`{m}`' for m in meta['merged'])} were run again afterwards (`--merge`)."
           if meta.get("merged") else ""),
        "",
        "## Summary",
        "",
        f"- **In scope: {s['passed']} / {s['in_scope']} pass ({100 * s['in_scope_rate']:.1f}%).**",
        f"- Overall: {s['passed']} / {s['total']} ({100 * s['overall_rate']:.1f}%).",
        f"- Worker crashes: {s['crashes']}.",
        f"- Not counted as passes: {s['outcomes'][OVERRIDE_PASS]} test(s) that match only under a tolerance "
        "override (see *Tolerance overrides*).",
        "",
        "| outcome | in-scope tests |",
        "|---|---:|",
        *[f"| {o} | {n} |" for o, n in s["outcomes"].items()],
        "",
        "### Out of scope",
        "",
        "Counted, not run: training-only ops (losses: SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss; "
        "optimizers and gradients of the `ai.onnx.preview.training` domain), and tests whose graph has string, "
        "sequence, map or optional values (a compiled library takes and returns dense numeric tensors only).",
        "",
        "| reason | tests |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in sorted(s["out_of_scope"].items())],
        "",
        "### Inputs bound as constants",
        "",
        "The node tests feed some attribute-like values as graph inputs (axes, shapes, pads, sizes, scales, k, "
        "split, ...); exported inference models hold them as constants. For these slots only, the runner binds "
        "the test's value as a constant with `canonicalize(..., const_inputs=...)` (the `--const-input` of the "
        "CLI). A graph input is bound only when every use of it is such a slot; data inputs are never bound.",
        "",
        "| op | slots bound when fed as graph inputs | tests that bound one |",
        "|---|---|---:|",
    ]
    bound_tests = collections.Counter()
    for r in records:
        for kind in set((r.get("bound") or {}).values()):
            bound_tests[kind.split(".")[0]] += 1
    for op, slots in sorted(ATTRIBUTE_LIKE_INPUTS.items()):
        lines.append(f"| {op} | {', '.join(f'{i}: {k}' for i, k in sorted(slots.items()))} | {bound_tests.get(op, 0)} |")
    lines += ["", "### Tolerance overrides", "", *_override_lines(records)]
    lines += ["", "### Casts out of range", "", *_undefined_lines(records)]
    lines += ["", "## What the frontend does for conformance", "", *_FRONTEND_NOTES]
    lines += ["", "## Failures by class", ""]
    classes = collections.Counter()
    for r in records:
        if not r.get("scope") and r["outcome"] != "pass":  # override passes are listed apart, above
            classes[(r["outcome"], failure_class(r["message"]))] += 1
    lines += ["| outcome | class | tests |", "|---|---|---:|"]
    lines += [f"| {o} | {c} | {n} |" for (o, c), n in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "## Failures not rejected by name", "",
              "In-scope failures whose op `unsupported_ops` (and so `tvmcompress inspect`) does not report and "
              "whose form the importer does not reject by name: compile and runtime errors, wrong results, and "
              "import errors raised inside TVM's importer or by canonicalization.", "",
              "| op | tests | outcomes |", "|---|---:|---|"]
    unnamed = collections.defaultdict(collections.Counter)
    for r in records:
        if not r.get("scope") and r["outcome"] != "pass" and not _rejected_by_name(r["message"]):
            unnamed[r["op"]][r["outcome"]] += 1
    for op, counts in sorted(unnamed.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        lines.append(f"| {op} | {sum(counts.values())} | {', '.join(f'{o}: {n}' for o, n in sorted(counts.items()))} |")
    if not unnamed:
        lines.append("| (none) | 0 | |")
    lines += ["", "## Per op", "",
              "In-scope tests per op (the op a test is named after). Failing tests list their outcome and first line.",
              "", "| op | pass | in scope | rate | out of scope |", "|---|---:|---:|---:|---:|"]
    by_op = collections.defaultdict(list)
    for r in records:
        by_op[r["op"]].append(r)
    for op in sorted(by_op, key=str.lower):
        rs = by_op[op]
        ins = [r for r in rs if not r.get("scope")]
        p = sum(report_outcome(r) == "pass" for r in ins)
        rate = f"{100 * p / len(ins):.0f}%" if ins else "-"
        lines.append(f"| {op} | {p} | {len(ins)} | {rate} | {len(rs) - len(ins)} |")
    lines += ["", "## Failing tests", "", "| test | outcome | message |", "|---|---|---|"]
    for r in sorted(records, key=lambda r: r["name"]):
        if not r.get("scope") and r["outcome"] != "pass":
            message = r["message"].replace("|", "\\|").replace("\n", " ")[:220]
            lines.append(f"| {r['name']} | {r['outcome']} | {message} |")
    return "\n".join(lines) + "\n"


def _undefined_lines(records: list[dict]) -> list[str]:
    """The tests whose reference holds values ONNX leaves undefined (conformance_cases.defined_elements)."""
    lines = [
        "ONNX leaves a float cast out of an integer type's range undefined. onnx's node tests of float -> int4 / "
        "uint4 / int2 / uint2 feed such values, and their reference is what the installed ml_dtypes gives (the "
        "low bits before 0.7, 0 since), so these tests compare only the elements ONNX defines: the same result "
        "under any ml_dtypes. (Ours out of range: truncate toward zero, keep the low bits, as integer casts do; "
        "tests/frontend/test_sub_byte.py.)",
        "",
        "| test | outcome | elements not compared |",
        "|---|---|---:|",
    ]
    rows = [r for r in records if r.get("undefined_elements")]
    lines += [f"| {r['name']} | {report_outcome(r)} | {r['undefined_elements']} |"
              for r in sorted(rows, key=lambda r: r["name"])]
    if not rows:
        lines.append("| (none) | | |")
    return lines


def _override_lines(records: list[dict]) -> list[str]:
    """Every per-test tolerance override (tolerance_overrides.py), whether this run applied it, and the distances
    to float64 that decided it."""
    lines = [
        "These tests are not counted as passes. "
        "A few tests compare against a reference computed in the test's low precision that is farther from the "
        "exact answer than our output. For these, `tests/conformance/tolerance_overrides.py` gives a wider "
        "tolerance, which the runner applies only when our output is at least as close to a float64 computation "
        "of the same graph as the reference output is (max abs distance below); otherwise the test stays a wrong "
        "result. onnxruntime's backend test runner widens the same way (default atol 1e-5; `test_dft`, "
        "`test_dft_axis`: atol 1e-4, in `onnxruntime/test/testdata/onnx_backend_test_series_overrides.jsonc`).",
        "",
        "| test | rtol | atol | applied | failed at the test's own tolerance | ours vs float64 | reference vs float64 "
        "| reason | source |",
        "|---|---:|---:|---|---|---:|---:|---|---|",
    ]
    by_name = {r["name"]: r for r in records}
    for name, override in sorted(OVERRIDES.items()):
        record = by_name.get(name, {})
        measured = record.get("override")
        if measured is None:
            applied = "not needed (passed at its own tolerance)" if record.get("outcome") == "pass" else (
                f"no ({record.get('outcome', 'not run')})")
            distances = ["-", "-"]
            failed = "-"
        else:
            applied = "yes (not counted as a pass)" if measured["applied"] else "**no: wrong result**"
            distances = [f"{measured['ours_vs_float64']:.3g}", f"{measured['reference_vs_float64']:.3g}"]
            failed = measured.get("failed", record.get("message", "")).replace("|", "\\|")[:160]
        lines.append(f"| {name} | {override.rtol:g} | {override.atol:g} | {applied} | {failed} | "
                     f"{' | '.join(distances)} | {override.reason} | {override.source} |")
    return lines


_FRONTEND_NOTES = [
    "- Opsets 22..28 are accepted node by node: an op whose newer form sets no attribute and uses no input that "
    "its opset-21 form lacks (most of 22..28 only adds types) is converted as before; other newer forms are "
    "rejected at import as `Op-<version>`. Models of opsets below 11 are converted to opset 11 at load by "
    "`onnx.version_converter` (whose adapters keep the semantics: Upsample becomes Resize, Scatter "
    "ScatterElements); a model it cannot convert is rejected with its opset.",
    "- `tvmcompress/onnx_ops/` converts what TVM 0.27 lacks or gets wrong: the standard `Attention` (23..25; TVM "
    "routes it to com.microsoft's), LSTM / GRU / RNN, RotaryEmbedding, RMSNormalization, LayerNormalization's "
    "Mean and InvStdDev outputs, QLinearMatMul, DFT, CenterCropPad, OneHot with non-constant values, "
    "ReduceMax / ReduceMin with -inf / +inf identities (TVM returns -3.4e38 for all -inf rows and empty sets) "
    "and on bools, IsInf's detect_* attributes, BitShift by the type's width or more, Mod by an infinity, Pow "
    "of mixed and integer types, Squeeze with negative axes, Dropout outputs, ConvTranspose's output_shape, "
    "Max / Min / Sum / Mean without `relax.stack` (which the CPU pipeline's ConvertLayout fails on), Swish; "
    "Cast / CastLike to and from the four float8 types (TVM flushes their subnormals, wraps overflow and "
    "misreads the fnuz types: the conversions are integer-exact code, checked bit for bit against onnx's "
    "reference), the sub-byte types int4 / uint4 / int2 / uint2 / float4e2m1 in Cast, CastLike, "
    "QuantizeLinear and DequantizeLinear (TVM 0.27 cannot hold sub-byte tensors: their values are carried in "
    "int8 / uint8 / float32 inside the library, and the artifact converts at its inputs and outputs, recording "
    "both dtypes in the manifest; float8e8m0 in Cast / CastLike the same way, as float32), QuantizeLinear / "
    "DequantizeLinear on float8 and blocked (`block_size`), "
    "LinearAttention, CausalConvWithState, CumProd, BitCast, Celu, SwiGLU, LpNormalization, the "
    "Hann / Hamming / Blackman windows, EyeLike with a dtype, Elu on float16, Resize with `axes`, Split with "
    "zero-size parts, SpaceToDepth's CRD mode (opset 28), TensorScatter (24), and float16 MatMul / Conv / ReduceSum / Softmax accumulated in float32 (as numpy and "
    "onnxruntime do; float32 models import exactly as TVM imports them).",
    "- The CPU schedule rules pass on PrimFuncs they cannot schedule (extern calls without a root block such as "
    "TopK, CumSum and ScatterElements; rank-0 and zero-size tensors): a failing rule falls through to the next, "
    "and a PrimFunc no rule takes is built unscheduled.",
    "- Forms that would give wrong numbers are rejected at import with a message that names them: float8, "
    "float4, int4 and int2 tensors in ops other than Cast / CastLike / QuantizeLinear / DequantizeLinear "
    "(`Neg(INT4)`; float8e8m0 in ops other than Cast / CastLike), QuantizeLinear's `precision` attribute, "
    "MaxUnpool's output_shape input (TVM places the values wrongly), BatchNormalization(training_mode=1), "
    "Resize with scales that give a fractional size in cubic or align_corners form, antialiased downsampling or "
    "keep_aspect_ratio_policy, "
    "RoiAlign(mode=max), MaxPool's Indices output, LSTM(input_forget=1), recurrent ops with sequence_lens in "
    "reverse, Dropout in training mode, DFT(inverse=1, onesided=1), Attention on bfloat16.",
    "- NonMaxSuppression is rejected at import: its row count depends on the data, and TVM 0.27's padded "
    "selection does not fit the static output shape of a canonical model.",
    "- Shape values (`Shape`, `Size`) and `Constant` nodes of every value form are folded into initializers by "
    "`canonicalize`, so TVM never sees a ShapeExpr where it wants a tensor.",
    "- A Slice's starts / ends / axes / steps and an Expand's shape must be constants once canonicalized: TVM 0.27 "
    "cannot build them from run-time values (its shape functions fail inside the build). Left as graph inputs "
    "(as these tests feed them unless the runner binds them), `canonicalize` rejects the graph with one line "
    "naming the node and the inputs to bind with `--const-input`.",
]

_CLASS_PATTERNS = [
    (r"op type\(s\) that TVM's ONNX importer cannot convert: (.*?);", lambda m: "unsupported op: " + m.group(1)),
    (r"uses ONNX opset (\d+)", lambda m: "opset outside the supported range"),
    (r"opset-(\d+) form", lambda m: "op form of a newer opset"),
    (r"importer failed on node .*?\((\w+)\)", lambda m: f"importer failed: {m.group(1)}"),
    (r"non-static shape", lambda m: "data-dependent (non-static) shape"),
    (r"has dtype .* expected", lambda m: "wrong output dtype"),
    (r"has shape .* expected", lambda m: "wrong output shape"),
    (r"elements differ", lambda m: "wrong values"),
    (r"worker crashed", lambda m: "crash"),
    (r"tuple index out of range", lambda m: "Artifact.run: 0-d input (IndexError in data.validate_inputs)"),
    (r"integer modulo by zero", lambda m: "Artifact.run: input with a zero first dim (ZeroDivisionError)"),
    (r"inputs hold 0 samples", lambda m: "Artifact.run: model without inputs"),
    (r"Index out of range\. size: 0, got index -1", lambda m: "CPU pipeline: rank-0 tensor (IndexError at compile)"),
    (r"Cannot find a block with the name: root", lambda m: "CPU schedule rules: no root block (ScheduleError)"),
    (r"Divide by zero", lambda m: "CPU pipeline: zero-size tensor (Divide by zero at compile)"),
    (r"no result after", lambda m: "timeout"),
    (r"samples; Artifact.run", lambda m: "runner: zero-size or batched input"),
]


def _rejected_by_name(message: str) -> bool:
    """Import errors that name what is unsupported: an op or form (`check_supported`), an opset, a form one of
    our converters rejects (`... is not supported: ...`), a data-dependent shape (canonicalize names the tensor
    and the node that makes it)."""
    return any(key in message for key in (
        "op type(s) that TVM's ONNX importer cannot convert", "uses ONNX opset", "imports no opset",
        " is not supported: ", "keep a non-static shape after canonicalization",
    ))


def failure_class(message: str) -> str:
    for pattern, name in _CLASS_PATTERNS:
        m = re.search(pattern, message)
        if m:
            return name(m)
    return re.sub(r"[\d'\"].*", "", message)[:80].strip() or "other"


# -------------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--filter", default=None, help="run only tests whose name matches this regex (re.search)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per test (default 180)")
    parser.add_argument("--json", default=None, help="write per-test results to this file")
    parser.add_argument("--markdown", default=None, help="write the report (CONFORMANCE.md) to this file")
    parser.add_argument("--from-json", default=None, help="do not run: read results from this file and report")
    parser.add_argument("--quiet", action="store_true", help="no per-test lines")
    parser.add_argument("--merge", default=None,
                        help="start from the results in this JSON file and replace those of the tests run now "
                             "(with --filter: refresh a few tests of a full run)")
    args = parser.parse_args(argv)

    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        records, meta = data["results"], data["meta"]
    else:
        records, meta = run_all(args)
        if args.merge:
            previous = json.loads(Path(args.merge).read_text())
            fresh = {r["name"]: r for r in records}
            records = [fresh.pop(r["name"], r) for r in previous["results"]] + list(fresh.values())
            # The versions of this install fill in what an older results file did not record.
            meta = {**{k: v for k, v in meta.items() if k in ("ml_dtypes",)}, **previous["meta"],
                    "merged": sorted(set(previous["meta"].get("merged", [])) | {args.filter or ""})}
    s = summarize(records)
    print(f"\nin scope: {s['passed']}/{s['in_scope']} pass ({100 * s['in_scope_rate']:.1f}%); "
          f"overall {s['passed']}/{s['total']} ({100 * s['overall_rate']:.1f}%); crashes {s['crashes']}")
    print("  " + ", ".join(f"{o}: {n}" for o, n in s["outcomes"].items()))
    print("  out of scope: " + (", ".join(f"{k}: {v}" for k, v in sorted(s["out_of_scope"].items())) or "none"))
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": records}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(records, meta))
        print(f"wrote {args.markdown}")
    return 0


def run_all(args) -> tuple[list[dict], dict]:
    import platform

    import onnx

    cases = load_cases()
    if args.filter:
        cases = [c for c in cases if re.search(args.filter, c.name)]
    records, planned = {}, []
    for case in cases:
        reason = out_of_scope_reason(case)
        if reason:
            records[case.name] = {"name": case.name, "op": case.op, "outcome": "out of scope", "scope": reason,
                                  "message": reason, "bound": {}}
        else:
            planned.append((case, attribute_like_inputs(case)))

    def progress(case, result, done, total):
        if args.quiet and done % 100 == 0:
            print(f"[{done}/{total}]", flush=True)
        if not args.quiet:
            detail = f"  {result['message'][:150]}" if result["outcome"] != "pass" else ""
            print(f"[{done}/{total}] {case.name}: {result['outcome']} ({result.get('seconds', '-')} s){detail}",
                  flush=True)

    start = time.perf_counter()
    results = run_cases(planned, args.jobs, args.timeout, progress)
    for case, _ in planned:
        records[case.name] = {"name": case.name, "op": case.op, **results[case.name]}
    import tvm  # only for the version in the report; the workers did the work

    import ml_dtypes

    meta = {"onnx": onnx.__version__, "tvm": tvm.__version__, "ml_dtypes": ml_dtypes.__version__,
            "jobs": args.jobs, "timeout": args.timeout,
            "filter": args.filter, "minutes": round((time.perf_counter() - start) / 60, 1),
            "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores"}
    return [records[c.name] for c in cases], meta


if __name__ == "__main__":
    sys.exit(main())
