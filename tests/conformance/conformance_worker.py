"""Run one conformance case through the real pipeline, and the worker process that runs many.

Stages, each with its own failure outcome:
  import   load_model -> canonicalize (attribute-like inputs bound as constants) -> import_to_relax
  compile  tvmcompress.compile(model, "host") (the same load/canonicalize/import, then the CPU pipeline)
  run      tvmcompress.load(dir).run(inputs)
  compare  every output against the reference: same dtype and shape, then allclose at the case's rtol/atol
           (what onnx's own backend runner checks), on the elements whose value ONNX defines (all but those of
           a float cast out of an int4 / uint4 / int2 / uint2 range: conformance_cases.defined_elements)
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback

import numpy as np
from conformance_cases import defined_elements
from tolerance_overrides import check_override

OUTCOMES = ("pass", "import error", "compile error", "runtime error", "wrong result", "timeout")
STAGE_OUTCOME = {"import": "import error", "compile": "compile error", "run": "runtime error", "compare": "wrong result"}


def run_case(case, bound: dict[str, str], report_stage=lambda stage: None) -> dict:
    """Run `case` with the graph inputs in `bound` turned into constants. Returns {outcome, stage, message}."""
    import tvmcompress
    from tvmcompress import frontend
    from tvmcompress.config import CompileOptions

    model = case.model()
    initializers = {t.name for t in model.graph.initializer}
    input_names = [vi.name for vi in model.graph.input if vi.name not in initializers]
    values = dict(zip(input_names, case.inputs))
    const_inputs = {name: values[name].tolist() for name in bound}
    feeds = {name: value for name, value in values.items() if name not in bound}

    stage = "import"
    report_stage(stage)
    try:
        loaded = frontend.load_model(model)
        canonical = frontend.canonicalize(loaded, {}, const_inputs)
        frontend.import_to_relax(canonical)

        stage = "compile"
        report_stage(stage)
        with tempfile.TemporaryDirectory(prefix="tvmc-conf-") as tmp:
            options = CompileOptions.create(const_inputs=const_inputs)
            tvmcompress.compile(model, "host", output=f"{tmp}/out", options=options)

            stage = "run"
            report_stage(stage)
            got = tvmcompress.load(f"{tmp}/out").run(feeds)
    except Exception as err:  # noqa: BLE001 - every failure is an outcome to record
        return {"outcome": STAGE_OUTCOME[stage], "stage": stage, "message": _one_line(err)}

    stage = "compare"
    report_stage(stage)
    names = [vi.name for vi in canonical.graph.output]
    outputs = [got.get(n) for n in names]
    defined = defined_elements(case)
    undefined = sum(int(np.size(m) - np.count_nonzero(m)) for m in defined if m is not None)
    extra = {"undefined_elements": undefined} if undefined else {}
    problem = compare_outputs(outputs, case.outputs, names, case.rtol, case.atol, defined)
    if problem:
        # A per-test tolerance override applies only when our output is at least as close to float64 as the
        # reference is (tolerance_overrides.py); either way the record keeps the measured distances.
        override = check_override(case.name, outputs, case.outputs, case.inputs,
                                  lambda g, e, rtol, atol: compare_outputs(g, e, names, rtol, atol))
        if override is None:
            return {"outcome": "wrong result", "stage": stage, "message": problem, **extra}
        if not override["applied"]:
            return {"outcome": "wrong result", "stage": stage, "message": f"{problem}; {override['message']}",
                    "override": override, **extra}
        return {"outcome": "pass", "stage": stage, "message": "", "override": {**override, "failed": problem},
                **extra}
    return {"outcome": "pass", "stage": stage, "message": "", **extra}


def compare_outputs(got, expected, names, rtol: float, atol: float, defined=None) -> str | None:
    """None when every output matches, else one line saying which output differs and how. `defined`: per output,
    None or a boolean mask of the elements to compare (the others hold values ONNX leaves undefined)."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for name, out, ref, mask in zip(names, got, expected, defined or [None] * len(expected)):
        if out is None:
            return f"output {name!r} missing"
        out, ref = np.asarray(out), np.asarray(ref)
        if out.dtype != ref.dtype:
            return f"output {name!r} has dtype {out.dtype}, expected {ref.dtype}"
        if out.shape != ref.shape:
            return f"output {name!r} has shape {list(out.shape)}, expected {list(ref.shape)}"
        if ref.dtype.kind == "V" or ref.dtype.name.startswith(("bfloat", "float8", "float4")):
            out, ref = out.astype(np.float32), ref.astype(np.float32)  # ml_dtypes floats: compare as float32
        if ref.dtype.kind in "fc":
            close = np.isclose(out, ref, rtol=rtol, atol=atol, equal_nan=True)
        else:
            close = out == ref
        if mask is not None:
            close = close | ~mask
        if not np.all(close):
            bad = int(np.size(close) - np.count_nonzero(close))
            index = np.unravel_index(int(np.argmin(close.reshape(-1))), close.shape) if close.ndim else ()
            return (f"output {name!r}: {bad}/{close.size} elements differ, first at {[int(i) for i in index]}: "
                    f"got {np.asarray(out[index]).tolist()!r}, expected {np.asarray(ref[index]).tolist()!r}")
    return None


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    # TVM errors put the useful line last ("...Check failed: ..." or "TVMError: ...").
    for line in reversed(lines):
        if "Error" in line or "Check failed" in line:
            text = line if len(lines) > 1 and line != lines[0] else text
            break
    return f"{type(err).__name__}: {text}"[:400]


def serve(conn) -> None:
    """Worker loop: receive (case, bound) pairs, send ("stage", s) while working and ("result", dict) at the end."""
    logging.disable(logging.WARNING)
    import warnings

    warnings.simplefilter("ignore")
    import tvmcompress  # noqa: F401 - pay the import before the first timed case

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        case, bound = message
        start = time.perf_counter()
        try:
            result = run_case(case, bound, lambda stage: conn.send(("stage", stage)))
        except BaseException as err:  # noqa: BLE001 - a harness bug must not kill the worker silently
            result = {"outcome": "runtime error", "stage": "harness",
                      "message": "harness: " + traceback.format_exception_only(err)[-1].strip()}
        result["seconds"] = round(time.perf_counter() - start, 2)
        conn.send(("result", result))
