"""Compile generated graphs with tvmcompress and compare them with ONNX Runtime.

Outcomes, per graph:
- match: every output within tolerance of ORT's;
- refused: tvmcompress raised TvmcompressError with a one-line message (an unsupported feature, said plainly);
- wrong: it compiled, but an output differs from ORT's (shape, dtype or values): a silent wrong result;
- internal: any other exception (exit 1 in the CLI), or a refusal that is not one line.

Compiling is the expensive part (each compile builds and links a library), so `run_batch` merges many graphs
into one model of disjoint subgraphs and compiles that once; only when the merged build fails or disagrees does
it compile graphs one by one, so each failure is pinned to its own seed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import traceback

import numpy as np
import onnx
from onnx import helper

import graphgen

# fp32 compared with fp32: the only differences are reassociation (different summation order in reductions,
# FMA contraction, Winograd transforms), which stay within ~1e-5 relative at these sizes.
RTOL = 1e-4
ATOL = 1e-4


@dataclasses.dataclass
class Outcome:
    seed: int
    kind: str  # match | refused | wrong | internal
    detail: str = ""


def compare(expected: list[np.ndarray], got: dict[str, np.ndarray], names: list[str]) -> str:
    """'' when `got` matches ORT's `expected` outputs, else a description of the first difference."""
    for name, want in zip(names, expected):
        if name not in got:
            return f"output {name} missing"
        have = np.asarray(got[name])
        if have.shape != want.shape or have.dtype != want.dtype:
            return f"{name}: shape/dtype {have.shape}/{have.dtype}, ORT {want.shape}/{want.dtype}"
        atol = ATOL * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
        if not np.allclose(have, want, rtol=RTOL, atol=atol):
            err = np.abs(have.astype(np.float64) - want)
            return f"{name}: max |diff| {err.max():.3g} (ORT max |x| {np.abs(want).max():.3g})"
    return ""


def compile_and_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: str, **option_kwargs):
    """('ok', outputs) | ('refused', message) | ('internal', traceback text)."""
    import tvmcompress
    from tvmcompress.errors import TvmcompressError

    path = os.path.join(workdir, "model.onnx")
    onnx.save(model, path)
    try:
        options = tvmcompress.CompileOptions.create(**option_kwargs)
        artifact = tvmcompress.compile(path, "host", output=os.path.join(workdir, "out"), options=options)
        return "ok", artifact.run(feeds)
    except TvmcompressError as err:
        message = str(err)
        if "\n" in message.strip() or not message.strip():
            return "internal", f"refusal is not one line: {message!r}"
        return "refused", message
    except Exception as err:  # noqa: BLE001 - anything but a TvmcompressError is an internal error: the finding
        return "internal", _summary(err)


def _summary(err: BaseException) -> str:
    """The exception type and the line of its message that says what failed (TVM puts it after a backtrace)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and "Metadata omitted" not in ln]
    key = next((ln for ln in lines if "Check failed" in ln), lines[0] if lines else "")
    if "Offending call:" in lines[:-1]:  # CodeGenVM names the operator it could not emit on the next line
        key += " " + lines[lines.index("Offending call:") + 1].split("(")[0]
    where = traceback.extract_tb(err.__traceback__)
    frame = next((f for f in reversed(where) if "tvmcompress" in f.filename or "/passes/" in f.filename), None)
    at = f" (at {os.path.basename(frame.filename)}:{frame.lineno} {frame.name})" if frame else ""
    return f"{type(err).__name__}: {key[:300]}{at}"


def run_one(seed: int, model: onnx.ModelProto | None = None) -> Outcome:
    model = model if model is not None else graphgen.generate(seed)
    feeds = graphgen.random_feeds(model, seed)
    expected = graphgen.check(model, feeds)
    with tempfile.TemporaryDirectory(prefix=f"fuzz{seed}-") as tmp:
        status, result = compile_and_run(model, feeds, tmp)
    if status != "ok":
        return Outcome(seed, status, result)
    diff = compare(expected, result, [o.name for o in model.graph.output])
    return Outcome(seed, "wrong" if diff else "match", diff)


def merge(models: list[onnx.ModelProto], prefixes: list[str]) -> onnx.ModelProto:
    """One model holding each of `models` as a disjoint subgraph, every name prefixed (all share one opset)."""
    opsets = {m.opset_import[0].version for m in models}
    assert len(opsets) == 1, opsets

    def rn(prefix, name):
        return prefix + name if name else name

    nodes, inits, inputs, outputs = [], [], [], []
    for prefix, m in zip(prefixes, models):
        g = m.graph
        for n in g.node:
            new = onnx.NodeProto()
            new.CopyFrom(n)
            new.input[:] = [rn(prefix, i) for i in n.input]
            new.output[:] = [rn(prefix, o) for o in n.output]
            nodes.append(new)
        for t in g.initializer:
            new = onnx.TensorProto()
            new.CopyFrom(t)
            new.name = prefix + t.name
            inits.append(new)
        for src, dst in ((g.input, inputs), (g.output, outputs)):
            for vi in src:
                new = onnx.ValueInfoProto()
                new.CopyFrom(vi)
                new.name = prefix + vi.name
                dst.append(new)
    graph = helper.make_graph(nodes, "fuzz_batch", inputs, outputs, inits)
    merged = helper.make_model(graph, opset_imports=list(models[0].opset_import), ir_version=models[0].ir_version)
    merged.producer_name = "tvmcompress-fuzz"
    return merged


def run_batch(seeds: list[int]) -> list[Outcome]:
    """Each seed's outcome. Graphs of one opset are compiled together; a merged build that fails is split in
    halves until each failure is pinned to its seed, and a graph that disagrees is re-run alone."""
    models = {s: graphgen.generate(s) for s in seeds}
    outcomes: dict[int, Outcome] = {}
    by_opset: dict[int, list[int]] = {}
    for s, m in models.items():
        by_opset.setdefault(m.opset_import[0].version, []).append(s)
    for group in by_opset.values():
        _run_group(group, models, outcomes)
    return [outcomes[s] for s in seeds]


def _run_group(group: list[int], models: dict, outcomes: dict[int, Outcome]) -> None:
    if len(group) == 1:
        outcomes[group[0]] = run_one(group[0], models[group[0]])
        return
    prefixes = [f"g{s}_" for s in group]
    feeds, expected = {}, {}
    for s, p in zip(group, prefixes):
        f = graphgen.random_feeds(models[s], s)
        expected[s] = graphgen.check(models[s], f)
        feeds.update({p + k: v for k, v in f.items()})
    with tempfile.TemporaryDirectory(prefix="fuzzbatch-") as tmp:
        status, result = compile_and_run(merge([models[s] for s in group], prefixes), feeds, tmp)
    if status != "ok":
        half = len(group) // 2
        _run_group(group[:half], models, outcomes)
        _run_group(group[half:], models, outcomes)
        return
    for s, p in zip(group, prefixes):
        names = [p + o.name for o in models[s].graph.output]
        # A disagreement is confirmed alone, so the recorded outcome is that of the graph itself.
        outcomes[s] = Outcome(s, "match") if not compare(expected[s], result, names) else run_one(s, models[s])


def cone(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """The subgraph of `model` that computes `outputs` (shapes from shape inference), as a model of its own."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    needed, nodes = set(outputs), []
    for node in reversed(model.graph.node):
        if needed & set(node.output):
            nodes.insert(0, node)
            needed |= set(node.input)
    inits = [t for t in model.graph.initializer if t.name in needed]
    inputs = [i for i in model.graph.input if i.name in needed]
    graph = helper.make_graph(nodes, model.graph.name + "_cone", inputs, [infos[o] for o in outputs], inits)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def minimize(seed: int) -> tuple[onnx.ModelProto, Outcome] | None:
    """The smallest prefix cone of a failing graph that still fails the same way (same kind, same first
    words), and its outcome: the op whose output first goes wrong, with what feeds it."""
    model = graphgen.generate(seed)
    first = run_one(seed, model)
    if first.kind in ("match", "refused"):
        return None
    signature = first.detail.split(":")[0] if first.kind == "internal" else None
    for node in model.graph.node:
        small = cone(model, list(node.output))
        outcome = run_one(seed, small)
        if outcome.kind == first.kind and (signature is None or outcome.detail.split(":")[0] == signature):
            return small, outcome
    return model, first
