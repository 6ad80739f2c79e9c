"""Verify a built artifact against ONNX Runtime running the source model: no compile hands back a silently
wrong model (issue 17).

    record = verify_build(artifact, source_model, canonical_model, options, compressed=..., calibration=...)

One job: run the artifact where it can run on this machine (natively, under qemu-user with a prepared TVM
runtime for the architecture, or on a CUDA GPU), run ONNX Runtime on the *source* model (not our canonical form,
so a frontend bug is caught too) on the same sample inputs, and compare.

- Sample inputs: the first calibration batches when the compile has some, else generated ones that respect each
  input's dtype and shape and the ranges the model implies (`generate_inputs`).
- float builds: every output must match within `tolerance_for(dtype)`; a mismatch raises TvmcompressError (the
  compile fails, exit 2, nothing at -o).
- compressed builds (quantized, pruned, clustered): each output's SQNR, cosine similarity and (for class-score
  outputs) top-1 agreement against the float model; below `CompileOptions.min_sqnr` the build fails, or for
  static int8 `BelowQualityFloor` carries the layers to return to float (`layers_to_float`) and api rebuilds.

The returned dict is the manifest's `verification` section (and report.json's).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from .errors import TvmcompressError
from .progress import stage

log = logging.getLogger(__name__)

# Generated samples when the compile has no calibration data, and calibration batches used when it has: a few
# model calls catch a wrong kernel (every output element depends on it) at a small cost: 2 extra ResNet-18 calls.
GENERATED_SAMPLES = 2
CALIBRATION_SAMPLES = 4
SEED = 0

# float builds: max|ours - ORT| <= ATOL + RTOL * max|ORT| per output. What our builds achieve (tests/e2e,
# tests/schedules): 1e-6..1e-5 relative, Winograd F(4x4) ~5e-6 per layer, so a ResNet-50 stays under 1e-4.
# 1e-3 leaves an order of magnitude for deep models and reduction order, while any wrong kernel (a wrong op,
# index or fusion) moves outputs by percent or more. float16 models: their own rounding is 2^-11 per op.
FLOAT_TOLERANCE = {"float64": (1e-6, 1e-9), "float32": (1e-3, 1e-5), "float16": (2e-2, 1e-3),
                   "bfloat16": (5e-2, 1e-2)}
# Integer outputs (ArgMax, TopK indices) of a float build may flip on an exact tie of two float scores computed in
# a different order; more than this share of changed elements is a wrong result.
INTEGER_MISMATCH_SHARE = 0.01



@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output compared with ONNX Runtime."""

    name: str
    max_abs_error: float
    max_abs_reference: float
    sqnr_db: float | None  # None for integer outputs
    cosine: float | None
    top1_agreement: float | None  # share of rows whose argmax agrees, for class-score outputs
    mismatch_share: float | None  # integer outputs: share of elements that differ

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "max_abs_error": _round(self.max_abs_error),
                "max_abs_reference": _round(self.max_abs_reference)}
        for key in ("sqnr_db", "cosine", "top1_agreement", "mismatch_share"):
            value = getattr(self, key)
            if value is not None:
                data[key] = _round(value)
        return data


class BelowQualityFloor(TvmcompressError):
    """A static int8 build below --min-sqnr: `layers` (most sensitive first) return to float and it is rebuilt."""

    def __init__(self, message: str, layers: tuple[str, ...], record: dict[str, Any]):
        super().__init__(message)
        self.layers = layers
        self.record = record


def _round(value: float) -> float:
    # 6 significant digits: the manifest stays byte-identical across identical builds (determinism promise) even
    # where the last float bits of a multithreaded reduction differ.
    if not math.isfinite(value) or value == 0:
        return float(value) if math.isfinite(value) else (1e30 if value > 0 else -1e30)
    return float(f"{value:.6g}")


# ------------------------------------------------------------------------------------------- sample inputs


def generate_inputs(model: onnx.ModelProto, specs: Sequence, count: int = GENERATED_SAMPLES,
                    seed: int = SEED) -> list[dict[str, np.ndarray]]:
    """`count` model calls of deterministic random inputs for `specs` (frontend.TensorSpec, static shapes).

    Ranges the model implies: integer inputs that index a Gather (token ids into an embedding table) stay below
    the table's size; inputs named like masks, and bool inputs, are 0/1; other integers are small non-negative
    numbers; floats are standard normal. `model` is the canonical model (static shapes, constants folded).
    """
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(model)
    calls = []
    for _ in range(count):
        call = {}
        for spec in specs:
            dtype = _numpy_dtype(spec.dtype)
            shape = tuple(spec.shape)
            if "mask" in spec.name.lower() or dtype == np.bool_:
                # Mostly ones, as real attention masks: a random half would mask out whole rows.
                value = (rng.random(shape) < 0.8).astype(dtype)
            elif spec.name in bounds:
                value = rng.integers(0, max(bounds[spec.name], 1), size=shape).astype(dtype)
            elif np.issubdtype(dtype, np.integer) or spec.dtype in ("int4", "uint4", "int2", "uint2"):
                value = rng.integers(0, 2 if spec.dtype in ("int4", "uint4", "int2", "uint2") else 8,
                                     size=shape).astype(dtype)
            else:
                value = rng.standard_normal(shape).astype(np.float32).astype(dtype)
            call[spec.name] = value
        calls.append(call)
    return calls


def _numpy_dtype(name: str) -> np.dtype:
    """numpy's dtype for a model dtype name; ml_dtypes' for bfloat16, float8 and the sub-byte types."""
    try:
        import ml_dtypes

        if hasattr(ml_dtypes, name):
            return np.dtype(getattr(ml_dtypes, name))
    except ImportError:
        pass
    return np.dtype(name)


# Ops that pass an index tensor through unchanged in value (what lies between a token-id input and its Gather).
_VALUE_PRESERVING = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose"}


def _index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> exclusive upper bound of the values it may hold, where it indexes a Gather."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is a hint here; without it no bound is known
        inferred = model
    shapes = {init.name: tuple(init.dims) for init in inferred.graph.initializer}
    for info in [*inferred.graph.value_info, *inferred.graph.input]:
        if info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                shapes[info.name] = tuple(d.dim_value for d in dims)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in inferred.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    bounds: dict[str, int] = {}
    for graph_input in inferred.graph.input:
        frontier, seen = [graph_input.name], set()
        while frontier:
            tensor = frontier.pop()
            seen.add(tensor)
            for node in consumers.get(tensor, []):
                if node.op_type in _VALUE_PRESERVING and node.input[0] == tensor:
                    frontier.extend(out for out in node.output if out not in seen)
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    data = shapes.get(node.input[0])
                    if data:
                        size = data[axis % len(data)]
                        bounds[graph_input.name] = min(bounds.get(graph_input.name, size), size)
    return bounds


def sample_calls(canonical: onnx.ModelProto, specs: Sequence, calibration: Sequence[Mapping] | None
                 ) -> tuple[list[dict[str, np.ndarray]], str]:
    """(model calls, where they came from): the first calibration batches, or generated inputs."""
    if calibration:
        return [dict(batch) for batch in list(calibration)[:CALIBRATION_SAMPLES]], "calibration"
    return generate_inputs(canonical, specs), "generated"


# --------------------------------------------------------------------------------------------- references


def reference_outputs(source: onnx.ModelProto, calls: Sequence[Mapping[str, np.ndarray]],
                      const_inputs: Mapping[str, Any] = (), output_names: Sequence[str] | None = None
                      ) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime's outputs of `source` for each call (const inputs fed as the compile bound them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's own warnings (unused initializers, ...) are not the user's concern
    session = ort.InferenceSession(source.SerializeToString(), options, providers=["CPUExecutionProvider"])
    consts = {}
    for info in session.get_inputs():
        if info.name in dict(const_inputs):
            value = np.asarray(dict(const_inputs)[info.name], dtype=_ort_dtype(info.type))
            static = [d for d in info.shape if isinstance(d, int)]
            if len(static) == len(info.shape) and value.size == math.prod(static):
                value = value.reshape(static)
            consts[info.name] = value
    names = list(output_names) if output_names is not None else [o.name for o in session.get_outputs()]
    results = []
    for call in calls:
        feeds = {info.name: call[info.name] for info in session.get_inputs() if info.name in call}
        values = session.run(names, {**feeds, **consts})
        results.append(dict(zip(names, values)))
    return results


def _ort_dtype(type_name: str) -> np.dtype:
    inner = type_name[len("tensor("):-1] if type_name.startswith("tensor(") else "float"
    return np.dtype({"float": "float32", "double": "float64", "bool": "bool"}.get(inner, inner))


# ---------------------------------------------------------------------------------------------- comparison


def compare_output(name: str, reference: np.ndarray, ours: np.ndarray) -> OutputCheck:
    """How `ours` differs from `reference` (the same output over all sample calls, concatenated)."""
    reference, ours = np.asarray(reference), np.asarray(ours)
    if reference.shape != ours.shape:
        raise TvmcompressError(
            f"verification failed: output '{name}' has shape {list(ours.shape)}, ONNX Runtime gives "
            f"{list(reference.shape)}; this is a tvmcompress bug: please report it"
        )
    if not np.issubdtype(reference.dtype, np.floating):
        differ = float(np.mean(reference != ours.astype(reference.dtype))) if reference.size else 0.0
        err = float(np.max(np.abs(reference.astype(np.float64) - ours.astype(np.float64)), initial=0.0))
        return OutputCheck(name, err, float(np.max(np.abs(reference.astype(np.float64)), initial=0.0)),
                           None, None, None, differ)
    ref = reference.astype(np.float64)
    got = ours.astype(np.float64)
    # Where both are the same non-finite value (inf from an overflow ORT shares, NaN of log(0)...) they agree.
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))
    finite = np.isfinite(ref) & np.isfinite(got)
    diff = np.where(same, 0.0, np.where(finite, np.abs(ref - got), np.inf))
    err = float(np.max(diff, initial=0.0))
    ref_clean = np.where(np.isfinite(ref), ref, 0.0)
    got_clean = np.where(np.isfinite(got), got, 0.0)
    noise = float(np.sum(np.where(same, 0.0, np.where(finite, ref - got, np.inf)) ** 2))
    signal = float(np.sum(ref_clean**2))
    sqnr = 10.0 * math.log10((signal + 1e-30) / (noise + 1e-30)) if math.isfinite(noise) else -1e30
    norms = float(np.linalg.norm(ref_clean)) * float(np.linalg.norm(got_clean))
    cosine = float(np.sum(ref_clean * got_clean)) / norms if norms > 0 else (1.0 if signal == 0 else 0.0)
    top1 = None
    if _looks_like_class_scores(reference[0] if reference.ndim else reference):
        rows_ref = ref_clean.reshape(-1, ref.shape[-1]).argmax(-1)
        rows_got = got_clean.reshape(-1, ref.shape[-1]).argmax(-1)
        top1 = float(np.mean(rows_ref == rows_got))
    return OutputCheck(name, err, float(np.max(np.abs(ref_clean), initial=0.0)), min(sqnr, 1e3), cosine, top1,
                       None)


def _looks_like_class_scores(array: np.ndarray) -> bool:
    """[batch, classes] (or [batch, 1, classes]): the shape a classifier's logits or probabilities have."""
    if array.ndim < 2 or array.shape[-1] < 2:
        return False
    return all(d == 1 for d in array.shape[1:-1])


def tolerance_for(dtype: str) -> tuple[float, float]:
    """(rtol, atol) of a float build's output of `dtype`, see FLOAT_TOLERANCE."""
    return FLOAT_TOLERANCE.get(dtype, FLOAT_TOLERANCE["float32"])


def float_mismatch(check: OutputCheck, dtype: str, against: str = "ONNX Runtime") -> str | None:
    """Why a float build's output is wrong (compared with `against`), or None when it matches."""
    if check.mismatch_share is not None:
        if check.mismatch_share > INTEGER_MISMATCH_SHARE:
            return (f"output '{check.name}' differs from {against} in {100 * check.mismatch_share:.3g}% of its "
                    f"elements (max abs error {check.max_abs_error:.3g})")
        return None
    rtol, atol = tolerance_for(dtype)
    bound = atol + rtol * check.max_abs_reference
    if not check.max_abs_error <= bound:
        return (f"output '{check.name}' differs from {against}: max abs error {check.max_abs_error:.3g} > "
                f"{bound:.3g} (= {atol:g} + {rtol:g} * max|ref| {check.max_abs_reference:.3g})")
    return None


# ------------------------------------------------------------------------------------------ running here


def where_it_runs(target: Mapping[str, Any]) -> str | None:
    """None when the artifact of manifest `target` can run on this machine, else why not (one line)."""
    runner, arch = target["runner"], target["arch"]
    if runner == "native":
        from .targets import cpu_features

        missing = sorted(set(target.get("requires", [])) - cpu_features.detect().flags)
        return f"this CPU lacks {', '.join(missing)}" if missing else None
    if runner == "gpu":
        import tvm

        return None if tvm.cuda(0).exist else "no CUDA GPU on this machine"
    if runner.startswith("qemu-"):
        from .targets import qemu, runtime_cache

        missing = qemu.qemu_available(arch)
        if missing is not None:
            return missing
        # NOTE: preparing a foreign runtime downloads ~100 MB of wheels (aarch64) or builds it for minutes
        # (armv7, riscv64): a compile does not do that behind the user's back. `tvmcompress run` on any artifact
        # of the architecture prepares it once; later compiles are verified under qemu.
        if not (runtime_cache.runtime_dir(arch) / "stamp.json").is_file():
            return (f"the {arch} TVM runtime is not prepared here (`tvmcompress run` on an {arch} artifact "
                    "prepares it once, then compiles are verified under qemu)")
        return None
    return f"no TVM runtime for {arch} runs on this machine (runner {runner})"


def _mode(runner: str) -> str:
    return {"native": "native", "gpu": "gpu"}.get(runner, "qemu" if runner.startswith("qemu-") else runner)


# ---------------------------------------------------------------------------------------------- the check


@stage("verify against ONNX Runtime")  # timed as one of the build's stages (progress.py)
def verify_build(
    artifact,
    source: onnx.ModelProto,
    canonical: onnx.ModelProto,
    options,
    compressed: str | None,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    int8_fallback=None,
    reference=None,
) -> dict[str, Any]:
    """Run `artifact` (an Artifact over the directory being written) and ONNX Runtime on `source`; return the
    manifest's `verification` section, or raise TvmcompressError when a float build is wrong or a compressed one
    falls below `options.min_sqnr`.

    `compressed`: what lowered precision or removed weights ("int8", "fp16", "prune", "cluster", ...), None for a
    float build. `int8_fallback()`: for a static int8 build, returns the layers to return to float (most
    sensitive first) so that the floor holds; the build below the floor then raises BelowQualityFloor with them.
    `reference`: what the build is compared with when the source is no ONNX model (torch_import.TorchReference:
    `name`, `sample_calls(calibration, count)`, `run(calls, output names)`); `source`/`canonical` are then None.
    """
    target = artifact.target
    record: dict[str, Any] = {"mode": _mode(target["runner"]), "runner": target["runner"]}
    if not options.verify:
        return {"mode": "none", "runner": target["runner"], "reason": "--no-verify"}
    reason = where_it_runs(target)
    if reason is not None:
        log.warning("not verified: %s", reason)
        return {**record, "mode": "skipped", "reason": reason}
    from .frontend import model_io

    names = [spec.name for spec in artifact.outputs]
    against = reference.name if reference is not None else "ONNX Runtime"
    if reference is not None:
        calls, origin = reference.sample_calls(calibration, CALIBRATION_SAMPLES if calibration else GENERATED_SAMPLES)
        references = reference.run(calls, names)
        record["reference"] = reference.name
    else:
        specs, _ = model_io(canonical)
        calls, origin = sample_calls(canonical, specs, calibration)
        try:
            references = reference_outputs(source, calls, dict(options.const_inputs), names)
        except Exception as err:  # noqa: BLE001 - ORT cannot run every model we can compile (opset, custom ops)
            reason = f"ONNX Runtime cannot run the source model ({str(err).splitlines()[0][:200]})"
            log.warning("not verified: %s", reason)
            return {**record, "mode": "skipped", "reason": reason}
    # One call at a time (Artifact.run): a model of rank-0 inputs has no stacked form.
    ours = [artifact.run(call) for call in calls]
    checks = []
    for spec in artifact.outputs:
        reference = np.stack([np.asarray(r[spec.name]) for r in references])
        checks.append(compare_output(spec.name, reference, np.stack([np.asarray(o[spec.name]) for o in ours])))
    record.update({"samples": len(calls), "inputs": origin, "outputs": [c.to_json() for c in checks]})
    if compressed is None:
        rtol, atol = tolerance_for("float32")
        record["tolerance"] = {"rtol": rtol, "atol": atol, "rule": "max|ours - ort| <= atol + rtol * max|ort|"}
        for spec, check in zip(artifact.outputs, checks):
            why = float_mismatch(check, spec.dtype, against)
            if why is not None:
                raise TvmcompressError(
                    f"verification failed: {why}; the build is wrong, nothing was written: try --no-winograd, "
                    f"run `tvmcompress debug MODEL` to find the first wrong tensor, and report the bug"
                )
        return record
    record["compressed"] = compressed
    kinds = compressed.split("+")
    if "pruned" in kinds or "distilled" in kinds:
        # NOTE: pruning changes the function on purpose, by the ratio the user chose (--prune-budget bounds its
        # accuracy cost): against the unpruned model a good pruned build may sit at 3-15 dB (zoo, measured), and
        # quantizing it on top cannot be told apart. Its numbers are recorded; no floor applies. So for a distilled
        # build: training matches the teacher's softened class distribution, not its logits' scale (digits CNN,
        # binary-weight --distill: 8.5 dB at 97.7% agreement).
        record["min_sqnr_db"] = None
        return record
    record["min_sqnr_db"] = options.min_sqnr
    floats = [c for c in checks if c.sqnr_db is not None]
    worst = min(floats, key=lambda c: c.sqnr_db) if floats else None
    if worst is not None and worst.sqnr_db < options.min_sqnr:
        message = (f"output '{worst.name}' of the {compressed} build has SQNR {worst.sqnr_db:.1f} dB against the "
                   f"float model, below --min-sqnr {options.min_sqnr:g}")
        if int8_fallback is not None:
            layers = tuple(int8_fallback())
            if layers:
                raise BelowQualityFloor(message, layers, {"sqnr_db_before": _round(worst.sqnr_db),
                                                          "layers_to_float": list(layers)})
        raise TvmcompressError(
            f"{message}: the model loses too much accuracy; "
            + ("exclude its most sensitive layers (`tvmcompress analyze`), " if "int8" in kinds else "")
            + "use a milder setting, or lower --min-sqnr"
        )
    return record


def layers_to_float(mod, config, calibration: Sequence[Mapping[str, np.ndarray]], floor_db: float,
                    margin_db: float = 1.0) -> list[str]:
    """Static int8 layers to keep in float, most sensitive first, so that the model output's SQNR against fp32
    reaches `floor_db` (+ `margin_db`: the built artifact rounds a little differently from the fake-quantized
    module measured here). No labels: sensitivity is each layer's effect on the output alone
    (quant_analysis.analyze_layers), then layers return to float in that order until the floor holds."""
    from .passes.quant_analysis import EvalData, analyze_layers, evaluate, fp32_reference
    from .passes.quantize import prepare_for_quantization, quantize

    calibration = list(calibration)
    data = EvalData(tuple(dict(b) for b in calibration[:CALIBRATION_SAMPLES]))
    analysis = analyze_layers(mod, config, calibration, data)
    order = [row["name"] for row in sorted(analysis["layers"], key=lambda r: (r["output_sqnr_db"], r["sqnr_db"]))
             if row["name"] not in config.exclude and row["binding"] not in config.exclude]
    reference = fp32_reference(prepare_for_quantization(mod), data)
    chosen: list[str] = []
    for name in order:
        chosen.append(name)
        quantized, _ = quantize(mod, dataclasses.replace(config, exclude=config.exclude + tuple(chosen)),
                                calibration)
        metric, _ = evaluate(quantized, data, reference)
        log.info("quality floor: %s back to float -> output SQNR %.1f dB", name, metric["sqnr_db"])
        if metric["sqnr_db"] >= floor_db + margin_db:
            break
    return chosen


def verify_compressed(artifact, source: onnx.ModelProto | None, canonical: onnx.ModelProto | None, options, steps,
                      calibration, fallback: dict | None, reference=None) -> dict[str, Any]:
    """verify_build for the build in `artifact` that pipeline.compress's `steps` made; `calibration()` reads the
    calibration calls. `fallback`: the record of the quality-floor fallback that led to this build, if any."""
    from .pipeline import section, stage_input

    quantization, pruning, clustering = (section(steps, name) for name in ("quantization", "pruning", "clustering"))
    compressed = "+".join(
        ([quantization["config"]["mode"] if "config" in quantization else "prequantized"] if quantization else [])
        + (["pruned"] if pruning is not None else []) + (["clustered"] if clustering is not None else [])
        + (["distilled"] if section(steps, "distillation") is not None else []))
    int8 = quantization is not None and quantization.get("config", {}).get("mode") == "int8"
    fallback_layers = (lambda: layers_to_float(stage_input(steps, "quantize"), options.quantize, calibration(),
                                               options.min_sqnr)) if int8 and fallback is None else None
    record = verify_build(artifact, source, canonical, options, compressed or None,
                          calibration() if options.calibration else None, fallback_layers, reference)
    return {**record, "quality_floor_fallback": fallback} if fallback is not None else record
