"""Shared by the schedule-rule tests: build a one-graph ONNX model, run it in onnxruntime and through our CPU
pipeline, and read the loop kinds a rule left in the scheduled TIR."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import tvm
import tvm.relax.frontend.onnx
import tvm_ffi
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, tirx

from tvmcompress.schedules.cpu_pipeline import cpu_lowering_passes, cpu_pipeline, cpu_schedule_passes, host_target

TARGET = host_target(num_cores=2)


def make_model(nodes, inputs, output_name, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def rand(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype("float32")


def run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)[0]
    mod = relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)
    ex = tvm.compile(mod, TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    actual = vm["main"](*[tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]).numpy()
    return actual, expected


def schedule_model(model: onnx.ModelProto) -> tvm.IRModule:
    mod = relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)
    with TARGET:
        return tvm.transform.Sequential(cpu_schedule_passes(TARGET))(mod)


def before_schedule(model: onnx.ModelProto) -> tvm.IRModule:
    """The module just before ApplyDefaultSchedule, to ask a rule directly whether it matches."""
    mod = relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)
    with TARGET:
        return tvm.transform.Sequential(cpu_lowering_passes(TARGET))(mod)


def loop_kinds(func: tirx.PrimFunc) -> dict[str, list[int]]:
    kinds: dict[str, list[int]] = {"parallel": [], "vectorized": [], "unrolled": []}

    def visit(loop: tirx.For):
        extent = int(loop.extent) if isinstance(loop.extent, tirx.IntImm) else -1
        if loop.kind == tirx.ForKind.PARALLEL:
            kinds["parallel"].append(extent)
        elif loop.kind == tirx.ForKind.VECTORIZED:
            kinds["vectorized"].append(extent)
        elif loop.kind == tirx.ForKind.UNROLLED:
            kinds["unrolled"].append(extent)

    tvm_ffi.structural_walk(func.body, [(tirx.For, visit)], order="post")
    return kinds


def funcs(mod: tvm.IRModule, name_part: str) -> list[tuple[str, tirx.PrimFunc]]:
    found = [(gv.name_hint, f) for gv, f in mod.functions_items()
             if isinstance(f, tirx.PrimFunc) and name_part in gv.name_hint]
    assert found, f"no PrimFunc named *{name_part}* in {[gv.name_hint for gv in mod.get_global_vars()]}"
    return found


def assert_rule(model, name_part, rule, *, parallel=True, vectorized=True, unrolled=False):
    """The rule matches the PrimFunc on its own, and the pipeline's result has the loop kinds."""
    before = dict(funcs(before_schedule(model), name_part))
    after = dict(funcs(schedule_model(model), name_part))
    for name, func in before.items():
        assert rule.apply(func, TARGET, False) is not None, f"{type(rule).__name__} did not match {name}"
        kinds = loop_kinds(after[name])
        assert after[name].attrs["tirx.is_scheduled"]
        assert not parallel or kinds["parallel"], f"{name}: no parallel loop"
        assert not vectorized or kinds["vectorized"], f"{name}: no vectorized loop"
        assert not unrolled or kinds["unrolled"], f"{name}: no unrolled loop"
        if vectorized:  # vectors are whole SIMD registers (8 fp32 lanes on AVX2) or a multiple
            lanes = 8 if tvm.target.codegen.target_has_features("avx", TARGET) else 4
            assert all(e % lanes == 0 or e < lanes for e in kinds["vectorized"]), kinds


# fp32 accumulation orders differ from onnxruntime's (blocked K loops, FMA contraction), so sums
# of ~600 products of N(0,1) values (magnitude ~25) agree to ~1e-4 absolute.
CONV_ATOL = 2e-3
