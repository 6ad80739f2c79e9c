"""`tvmcompress debug`: find the first tensor where our build and ONNX Runtime disagree (issue 17).

    report = find_first_disagreement("model.onnx", "host", options)
    print(format_report(report))

How: ONNX Runtime runs the source model once with every intermediate tensor exposed as an output (exposing does
not change what ORT computes). Our build cannot be checked that way, since an exposed tensor stops being fused
into its consumers and a fusion bug would hide; so we bisect over the topological order instead: the source
graph cut after node k (only the ancestors of its outputs, those outputs as the graph outputs) is compiled with
the user's options and compared with ORT. If the cut after node k is wrong and the cut before it is right, node k
is where the build first goes wrong. That takes log2(nodes) builds. At that node two more builds say where the
fault lives: with --no-winograd (direct convolutions), and unfused (TVM's default lowering without FuseOps or
any of our schedules: the imported Relax module as TVM itself computes it).

Compressed builds are judged by SQNR against --min-sqnr instead of the float tolerance.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from . import frontend, verify
from .config import CompileOptions
from .errors import TvmcompressError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TensorVerdict:
    """One tensor of one build, against ONNX Runtime."""

    tensor: str
    wrong: bool
    check: verify.OutputCheck
    why: str | None

    def to_json(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "wrong": self.wrong, "why": self.why, **self.check.to_json()}


@dataclasses.dataclass(frozen=True)
class DebugReport:
    nodes: int  # nodes of the source graph
    builds: int  # how many cut models were compiled
    wrong_outputs: list[str]
    first: dict[str, Any] | None  # {node, op_type, index, tensor, error, why}; None: every output matches
    inputs_of_first: list[dict[str, Any]]  # the first wrong node's inputs as ORT computes them vs our cut before
    no_winograd: dict[str, Any] | None  # the same cut, --no-winograd: {wrong, max_abs_error, why}
    unfused: dict[str, Any] | None  # the same cut, TVM's default lowering without fusion

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_first_disagreement(model, target: str = "host", options: CompileOptions | None = None,
                            work_dir: str | None = None) -> DebugReport:
    """See the module docstring. `model`: a path, bytes or ModelProto of the ONNX model."""
    options = dataclasses.replace(options or CompileOptions(), verify=False)
    source = frontend.load_model(model)
    canonical = frontend.canonicalize(source, dict(options.input_shapes), dict(options.const_inputs))
    inputs, _ = frontend.model_io(canonical)
    calibration = None
    if options.calibration:
        from .data import calibration_calls

        calibration = calibration_calls(options.calibration, inputs)
    calls, _ = verify.sample_calls(canonical, inputs, calibration)
    typed = _typed_source(source, dict(options.input_shapes))
    nodes = list(typed.graph.node)
    types = _tensor_types(typed)
    exposable = {name for name, (elem, _) in types.items() if _is_float(elem)}
    consts = dict(options.const_inputs)
    everything = [out for node in nodes for out in node.output if out in exposable]
    outputs = [o.name for o in typed.graph.output]
    references = verify.reference_outputs(_with_outputs(typed, list(dict.fromkeys(outputs + everything)), types),
                                          calls, consts)
    compressed = _compressed(options)
    with tempfile.TemporaryDirectory(prefix="tvmcompress-debug-", dir=work_dir) as tmp:
        builder = _CutBuilder(typed, types, target, options, calls, references, compressed, tmp)
        full = builder.judge(outputs, outputs)
        wrong_outputs = [v.tensor for v in full if v.wrong]
        if not wrong_outputs:
            return DebugReport(len(nodes), builder.builds, [], None, [], None, None)
        # Candidates: the float-producing ancestors of the first wrong output, in topological order.
        ancestors = _ancestor_nodes(nodes, [wrong_outputs[0]])
        candidates = [i for i in ancestors if any(o in exposable for o in nodes[i].output)]
        low, high = -1, len(candidates) - 1  # invariant: cut after candidates[high] is wrong; low's is right
        producer = {out: i for i, node in enumerate(nodes) for out in node.output}
        if producer.get(wrong_outputs[0]) != candidates[high]:
            high = len(candidates)  # the wrong output is not a float node output (e.g. an input passed through)
        while high - low > 1:
            mid = (low + high) // 2
            tensors = [o for o in nodes[candidates[mid]].output if o in exposable]
            log.info("debug: bisecting %d..%d: cut after node %r", low, high, nodes[candidates[mid]].name)
            if any(v.wrong for v in builder.judge(tensors, tensors)):
                high = mid
            else:
                low = mid
        if high >= len(candidates):
            return DebugReport(len(nodes), builder.builds, wrong_outputs, None, [], None, None)
        node = nodes[candidates[high]]
        tensors = [o for o in node.output if o in exposable]
        verdicts = builder.judge(tensors, tensors)
        worst = max(verdicts, key=lambda v: (v.wrong, v.check.max_abs_error))
        first = {"node": node.name, "op_type": node.op_type, "index": candidates[high], "tensor": worst.tensor,
                 "max_abs_error": worst.check.max_abs_error, "why": worst.why,
                 **({"sqnr_db": worst.check.sqnr_db} if worst.check.sqnr_db is not None else {})}
        float_inputs = [name for name in node.input if name in exposable and name in producer]
        inputs_of_first = [v.to_json() for v in builder.judge(float_inputs, float_inputs)] if float_inputs else []
        no_winograd = _summary(builder.judge(tensors, tensors, winograd=False)) if options.winograd else None
        unfused = _summary(builder.judge_unfused(tensors))
        return DebugReport(len(nodes), builder.builds, wrong_outputs, first, inputs_of_first, no_winograd, unfused)


def _summary(verdicts: Sequence[TensorVerdict]) -> dict[str, Any]:
    worst = max(verdicts, key=lambda v: (v.wrong, v.check.max_abs_error))
    return {"wrong": worst.wrong, "tensor": worst.tensor, "max_abs_error": worst.check.max_abs_error,
            "why": worst.why}


def _compressed(options: CompileOptions) -> bool:
    return options.quantize is not None or options.cluster_bits is not None or options.prune is not None


class _CutBuilder:
    """Compiles cuts of the typed source graph and judges their tensors against ORT's."""

    def __init__(self, typed, types, target, options, calls, references, compressed, tmp):
        self.typed, self.types, self.target, self.options = typed, types, target, options
        self.calls, self.references, self.compressed, self.tmp = calls, references, compressed, tmp
        self.builds = 0

    def _cut(self, tensors: Sequence[str]) -> onnx.ModelProto:
        return _with_outputs(_prune_to(self.typed, tensors), list(tensors), self.types)

    def judge(self, outputs: Sequence[str], tensors: Sequence[str], winograd: bool | None = None
              ) -> list[TensorVerdict]:
        from . import api

        options = self.options if winograd is None else dataclasses.replace(self.options, winograd=winograd)
        self.builds += 1
        out = os.path.join(self.tmp, f"cut{self.builds}")
        artifact = api.compile(self._cut(outputs), self.target, output=out, options=options)
        reason = verify.where_it_runs(artifact.target)
        if reason is not None:
            raise TvmcompressError(f"debug runs the build on this machine, and {reason}: debug a --target that "
                                   "runs here (host, or a foreign one with qemu and its runtime)")
        ours = [artifact.run(call) for call in self.calls]
        return [self._verdict(name, [o[name] for o in ours]) for name in tensors]

    def judge_unfused(self, tensors: Sequence[str]) -> list[TensorVerdict]:
        self.builds += 1
        values = _run_unfused(self._cut(tensors), self.options, self.calls)
        return [self._verdict(name, [v[name] for v in values], compressed=False) for name in tensors]

    def _verdict(self, name: str, ours: Sequence[np.ndarray], compressed: bool | None = None) -> TensorVerdict:
        reference = np.stack([np.asarray(r[name]) for r in self.references])
        check = verify.compare_output(name, reference, np.stack([np.asarray(o) for o in ours]))
        compressed = self.compressed if compressed is None else compressed
        if compressed and check.sqnr_db is not None:
            why = (f"tensor '{name}' has SQNR {check.sqnr_db:.1f} dB < --min-sqnr {self.options.min_sqnr:g}"
                   if check.sqnr_db < self.options.min_sqnr else None)
        else:
            why = verify.float_mismatch(check, str(reference.dtype))
            why = why.replace("output", "tensor", 1) if why else None
        return TensorVerdict(name, why is not None, check, why)


def _run_unfused(model: onnx.ModelProto, options: CompileOptions, calls) -> list[dict[str, np.ndarray]]:
    """The model imported as we import it, lowered by TVM's default CPU passes minus FuseOps/FuseTIR (so every op
    is its own unscheduled kernel), run on this CPU. Compression is not applied: this is the float model."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    canonical = frontend.canonicalize(model, dict(options.input_shapes), dict(options.const_inputs))
    mod = frontend.import_to_relax(canonical)
    from .passes.host_run import host_target

    target = host_target()

    @tvm.transform.module_pass(opt_level=0, name="tvmcompress.UnfusedLowering")
    def unfused(module, _ctx):
        with target:
            return tvm.transform.Sequential(
                cpu.library_dispatch_passes(target) + [relax.transform.LegalizeOps(), relax.transform.FoldConstant()]
                + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            )(module)

    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=unfused), tvm.cpu())
    names = [param.name for param in mod["main"].params]
    outputs = [o.name for o in canonical.graph.output]
    results = []
    for call in calls:
        value = vm["main"](*(tvm.runtime.tensor(np.require(call[n], requirements="C")) for n in names))
        flat = [value.numpy()] if hasattr(value, "numpy") else [v.numpy() for v in value]
        results.append(dict(zip(outputs, flat)))
    return results


# --------------------------------------------------------------------------------------------- graph edits


def _typed_source(source: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """The source model with --input-shape applied to its inputs and every tensor's type inferred."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    for info in model.graph.input:
        if info.name in input_shapes:
            dims = info.type.tensor_type.shape.dim
            del dims[:]
            for d in input_shapes[info.name]:
                dims.add().dim_value = int(d)
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # noqa: BLE001 - onnx raises several types
        raise TvmcompressError(f"debug needs ONNX shape inference of the model, which fails: {err}") from None


def _tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.TypeProto]]:
    types = {}
    for info in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = (info.type.tensor_type.elem_type, info.type)
    return types


def _is_float(elem_type: int) -> bool:
    return elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16)


def _with_outputs(model: onnx.ModelProto, tensors: Sequence[str], types) -> onnx.ModelProto:
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.output[:]
    for name in tensors:
        info = cut.graph.output.add()
        info.name = name
        info.type.CopyFrom(types[name][1])
    return cut


def _prune_to(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """`model` with only the nodes that `tensors` depend on (graph inputs are kept: the signature stays)."""
    keep = set(_ancestor_nodes(list(model.graph.node), tensors))
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[:]
    cut.graph.node.extend(node for i, node in enumerate(model.graph.node) if i in keep)
    used = {name for node in cut.graph.node for name in node.input} | set(tensors)
    kept_init = [init for init in model.graph.initializer if init.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(kept_init)
    return cut


def _ancestor_nodes(nodes: Sequence[onnx.NodeProto], tensors: Sequence[str]) -> list[int]:
    """Indices (topological order) of the nodes that `tensors` depend on."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    needed, stack = set(), [producer[t] for t in tensors if t in producer]
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack.extend(producer[name] for name in nodes[i].input if name in producer)
    return sorted(needed)


# --------------------------------------------------------------------------------------------------- text


def format_report(report: DebugReport) -> str:
    if report.first is None and not report.wrong_outputs:
        return (f"our build matches ONNX Runtime at every output ({report.nodes} nodes, {report.builds} build): "
                "nothing to bisect")
    if report.first is None:
        return f"outputs {', '.join(report.wrong_outputs)} are wrong, but no single node's cut is: see --json"
    first = report.first
    lines = [
        f"wrong outputs: {', '.join(report.wrong_outputs)}",
        f"first wrong tensor: '{first['tensor']}' of node '{first['node']}' ({first['op_type']}, node "
        f"{first['index'] + 1} of {report.nodes}): {first['why']}",
    ]
    for entry in report.inputs_of_first:
        state = "WRONG" if entry["wrong"] else "right"
        lines.append(f"  its input '{entry['tensor']}': {state} (max abs error {entry['max_abs_error']:.3g})")
    if report.no_winograd is not None:
        lines.append(_line("with --no-winograd", report.no_winograd))
    if report.unfused is not None:
        lines.append(_line("unfused (TVM's default lowering, no FuseOps, none of our schedules)", report.unfused))
    lines.append(_conclusion(report))
    lines.append(f"({report.builds} builds)")
    return "\n".join(lines)


def _line(label: str, summary: Mapping[str, Any]) -> str:
    state = "still wrong" if summary["wrong"] else "right"
    return f"  {label}: {state} at '{summary['tensor']}' (max abs error {summary['max_abs_error']:.3g})"


def _conclusion(report: DebugReport) -> str:
    if report.no_winograd is not None and not report.no_winograd["wrong"]:
        return "  => the Winograd convolutions (or their fusion) are at fault: --no-winograd is a workaround"
    if report.unfused is not None and not report.unfused["wrong"]:
        return "  => our CPU pipeline (fusion, layout, schedules or memory plan) is at fault; the import is right"
    if report.unfused is not None:
        return "  => the imported Relax module is already wrong: the ONNX import of this op is at fault"
    return ""
