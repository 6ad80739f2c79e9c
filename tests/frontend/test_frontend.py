"""Tests for tvmcompress.frontend: load, canonicalize, op check, import into Relax.

Numeric checks build the canonical model with TVM (llvm) and compare with onnxruntime on the ORIGINAL model.
Tolerance: rtol = atol = 1e-5. The ops are fp32 with O(1) activations; TVM and onnxruntime sum conv and matmul
products in different orders, which moves results by a few ulps (~1e-6), well inside that bound.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from frontend_models import make_model, value
from onnx import TensorProto, helper, numpy_helper

from tvmcompress.errors import TvmcompressError
from tvmcompress.frontend import (
    TensorSpec,
    canonicalize,
    check_supported,
    import_to_relax,
    load_model,
    model_io,
    unsupported_ops,
)

RTOL = ATOL = 1e-5


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_tvm(canonical: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    inputs, _ = model_io(canonical)
    executable = tvm.compile(import_to_relax(canonical), tvm.target.Target({"kind": "llvm"}))
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(feeds[spec.name]) for spec in inputs])
    results = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
    return [r.numpy() for r in results]


def assert_matches_onnxruntime(original, canonical, feeds, original_feeds=None):
    expected = run_onnxruntime(original, original_feeds or feeds)
    actual = run_tvm(canonical, feeds)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def assert_canonical(model: onnx.ModelProto):
    """The postconditions of canonicalize."""
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"Constant", "Shape", "If"}, ops
    values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    shaped = {vi.name for vi in values}
    for node in model.graph.node:
        assert all(out in shaped for out in node.output if out), node
    for vi in values:
        dims = vi.type.tensor_type.shape.dim
        assert vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims), vi


def error_message(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------- numerics


def test_exporter_graph_needs_canonicalize_for_tvm(exporter_model):
    from tvm.relax.frontend.onnx import from_onnx

    # Documents why canonicalize folds: TVM 0.27 cannot import run-time shape computation through Cast or If.
    with pytest.raises(TypeError, match="Reshape requires the input new shape to be Shape"):
        from_onnx(exporter_model, shape_dict={"x": [2, 3, 8, 8]}, keep_params_in_input=False)


def test_exporter_graph_folds_and_matches_onnxruntime(exporter_model, rng):
    canonical = canonicalize(exporter_model, input_shapes={"x": [2, 3, 8, 8]})
    assert_canonical(canonical)
    assert [n.op_type for n in canonical.graph.node] == ["Conv", "Reshape", "MatMul", "Relu"]
    assert model_io(canonical) == (
        [TensorSpec("x", (2, 3, 8, 8), "float32")],
        [TensorSpec("y", (2, 5), "float32")],
    )
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert_matches_onnxruntime(exporter_model, canonical, {"x": x})


def test_torch_export_with_dynamic_batch_matches_onnxruntime(torch_exported_bytes, rng):
    original = load_model(torch_exported_bytes)
    assert model_io(original)[0] == [TensorSpec("x", (-1, 3, 8, 8), "float32")]
    canonical = canonicalize(original, input_shapes={"x": (3, 3, 8, 8)})
    assert_canonical(canonical)
    assert model_io(canonical)[1] == [TensorSpec("logits", (3, 10), "float32")]
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert_matches_onnxruntime(original, canonical, {"x": x})


def test_paddle_style_constant_weights_become_initializers(paddle_model, rng):
    from tvm.relax.frontend.onnx import from_onnx

    with pytest.raises(Exception):  # noqa: B017 - TVM's Constant converter reads only `value`
        from_onnx(paddle_model, keep_params_in_input=False)
    canonical = canonicalize(paddle_model)
    assert_canonical(canonical)
    assert {t.name for t in canonical.graph.initializer} >= {"W", "Wd"}
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert_matches_onnxruntime(paddle_model, canonical, {"x": x})


def test_const_inputs_are_bound_and_fold_the_if(const_input_model, rng):
    bias = [0.1, -0.2, 0.3, -0.4]
    canonical = canonicalize(const_input_model, const_inputs={"scale": 0.5, "bias": bias, "use_relu": False})
    assert_canonical(canonical)
    assert model_io(canonical)[0] == [TensorSpec("x", (2, 4), "float32")]
    assert [n.op_type for n in canonical.graph.node] == ["Mul", "Add", "Sigmoid"]
    x = rng.standard_normal((2, 4)).astype(np.float32)
    original_feeds = {"x": x, "scale": np.array(0.5, np.float32), "bias": np.array(bias, np.float32),
                      "use_relu": np.array(False)}
    assert_matches_onnxruntime(const_input_model, canonical, {"x": x}, original_feeds)


def test_external_data_is_loaded_from_the_model_directory(external_data_path, rng):
    model = load_model(external_data_path)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert weights["W"].shape == (64, 32)
    canonical = canonicalize(model)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    assert_matches_onnxruntime(model, canonical, {"x": x})


# --------------------------------------------------------------------------------------- canonicalize


def test_canonicalize_is_deterministic_and_leaves_its_argument_alone(exporter_model):
    before = exporter_model.SerializeToString(deterministic=True)
    first = canonicalize(exporter_model, input_shapes={"x": [1, 3, 8, 8]})
    second = canonicalize(exporter_model, input_shapes={"x": [1, 3, 8, 8]})
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)
    assert exporter_model.SerializeToString(deterministic=True) == before


def test_canonicalize_keeps_layer_structure():
    # Conv + BatchNormalization stays two nodes: BN folding is a compression pass, not canonicalization.
    rng = np.random.default_rng(1)
    c = 4
    inits = [numpy_helper.from_array((0.3 * rng.standard_normal((c, 3, 3, 3))).astype(np.float32), "W")]
    for name in ("scale", "bias", "mean"):
        inits.append(numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), name))
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "var"))
    model = make_model(
        [helper.make_node("Conv", ["x", "W"], ["c"]),
         helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])],
        [value("x", [1, 3, 6, 6])], [value("y", [1, c, 4, 4])], inits)
    assert [n.op_type for n in canonicalize(model).graph.node] == ["Conv", "BatchNormalization"]


def test_canonicalize_keeps_inputs_that_folding_leaves_unused(rng):
    # `mask` is read only for its shape; once that is folded the input is unused, but callers still feed it.
    model = make_model(
        [helper.make_node("Shape", ["mask"], ["s"]),
         helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["sf"], ["n"], keepdims=1),
         helper.make_node("Add", ["x", "n"], ["y"])],
        [value("x", [2]), value("mask", ["b", 3])], [value("y", [2])])
    canonical = canonicalize(model, input_shapes={"mask": [1, 3]})
    assert [spec.name for spec in model_io(canonical)[0]] == ["x", "mask"]
    feeds = {"x": rng.standard_normal(2).astype(np.float32), "mask": np.zeros((1, 3), np.float32)}
    assert_matches_onnxruntime(model, canonical, feeds)


def test_shape_of_a_static_tensor_as_graph_output_becomes_a_constant(rng):
    model = make_model(
        [helper.make_node("Shape", ["x"], ["s"], start=1), helper.make_node("Relu", ["x"], ["y"])],
        [value("x", [2, "n"])], [value("s", [1], TensorProto.INT64), value("y", [2, "n"])], opset=15)
    canonical = canonicalize(model, input_shapes={"x": [2, 5]})
    assert_canonical(canonical)
    assert_matches_onnxruntime(model, canonical, {"x": rng.standard_normal((2, 5)).astype(np.float32)})


def test_canonicalize_reports_unknown_ops_before_shapes():
    with pytest.raises(TvmcompressError, match="com.example::Swish"):
        canonicalize(unsupported_model())


def test_unknown_name_in_input_shapes_is_an_error(exporter_model):
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(exporter_model, input_shapes={"images": [1, 3, 8, 8]})
    message = error_message(excinfo)
    assert "'images'" in message and "not an input" in message and "x" in message


def test_dynamic_dims_without_input_shapes_is_an_error(exporter_model):
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(exporter_model)
    assert error_message(excinfo) == "input 'x' has dynamic dims [batch, 3, 8, 8]; pass --input-shape x=1,3,8,8"


def test_input_shape_of_wrong_rank_is_an_error(exporter_model):
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(exporter_model, input_shapes={"x": [1, 3, 8]})
    message = error_message(excinfo)
    assert "'x'" in message and "rank 4" in message and "give 4 dims" in message


def test_input_shape_contradicting_a_static_dim_is_an_error(exporter_model):
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(exporter_model, input_shapes={"x": [1, 4, 8, 8]})
    message = error_message(excinfo)
    assert "dim 1" in message and "'x'" in message and "fixed at 3" in message and "keep 3" in message


def test_const_input_of_wrong_shape_is_an_error(const_input_model):
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(const_input_model, const_inputs={"scale": [1.0, 2.0]})
    message = error_message(excinfo)
    assert "'scale'" in message and "[2]" in message


def test_data_dependent_shape_is_an_error():
    model = make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [value("x", [4])],
                       [value("y", [1, "nnz"], TensorProto.INT64)])
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(model)
    message = error_message(excinfo)
    assert "'y'" in message and "NonZero" in message and "static" in message


def test_reshape_with_a_traced_size_is_an_error():
    # A tracer turned x.size(0) into the constant 2; at batch 3 the element counts disagree.
    target = numpy_helper.from_array(np.array([2, 3, 2], np.int64), "target")
    model = make_model([helper.make_node("Reshape", ["x", "target"], ["y"], name="view")],
                       [value("x", ["b", 6])], [value("y", [2, 3, 2])], [target])
    with pytest.raises(TvmcompressError) as excinfo:
        canonicalize(model, input_shapes={"x": [3, 6]})
    message = error_message(excinfo)
    assert "'view'" in message and "[3, 6]" in message and "[2, 3, 2]" in message and "re-export" in message
    canonicalize(model, input_shapes={"x": [2, 6]})


# ------------------------------------------------------------------------------------------- loading


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(TvmcompressError) as excinfo:
        load_model(tmp_path / "nope.onnx")
    message = error_message(excinfo)
    assert "nope.onnx" in message and "does not exist" in message and "check the path" in message


def test_non_onnx_bytes_are_an_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"PK\x03\x04 this is a zip, not an ONNX model" * 4)
    with pytest.raises(TvmcompressError) as excinfo:
        load_model(path)
    message = error_message(excinfo)
    assert str(path) in message and "not an ONNX model" in message and "export" in message
    with pytest.raises(TvmcompressError, match="not an ONNX model"):
        load_model(b"hello world")


def test_truncated_file_is_an_error(tmp_path, exporter_model):
    data = exporter_model.SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TvmcompressError) as excinfo:
        load_model(path)
    message = error_message(excinfo)
    assert str(path) in message and "truncated" in message and "again" in message


def test_opset_below_supported_range_is_converted():
    # Upsample (opset 7) has no converter in TVM; onnx's version converter makes it a Resize of opset 11.
    model = make_model([helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 2.0])],
                       [value("x", [1, 1, 2, 2])], [value("y", [1, 1, 4, 4])], opset=7)
    loaded = load_model(model)
    assert [(o.domain, o.version) for o in loaded.opset_import] == [("", 11)]
    assert [n.op_type for n in loaded.graph.node if n.op_type != "Constant"] == ["Resize"]
    assert unsupported_ops(loaded) == []


def test_opset_that_cannot_be_converted_is_an_error():
    # Dropout-1 in training mode (is_test=0) has no adapter to later opsets.
    model = make_model([helper.make_node("Dropout", ["x"], ["y"], is_test=0)], [value("x", [1])], [value("y", [1])],
                       opset=1)
    with pytest.raises(TvmcompressError) as excinfo:
        load_model(model)
    message = error_message(excinfo)
    assert "opset 1" in message and "11..21" in message and "version converter cannot convert it" in message


def test_missing_external_data_is_an_error(external_data_path):
    (external_data_path.parent / "model.onnx.data").unlink()
    with pytest.raises(TvmcompressError) as excinfo:
        load_model(external_data_path)
    message = error_message(excinfo)
    assert "model.onnx.data" in message and "copy" in message


def test_load_accepts_path_string_bytes_and_proto(tmp_path, exporter_model):
    path = tmp_path / "m.onnx"
    onnx.save(exporter_model, path)
    for source in (path, str(path), path.read_bytes(), exporter_model):
        assert load_model(source).graph.node[0].op_type == "Conv"


# ----------------------------------------------------------------------------------------- op support


def unsupported_model():
    return make_model(
        [helper.make_node("FancyOp", ["x"], ["a"], domain="com.example"),
         helper.make_node("Swish", ["a"], ["b"], domain="com.example"),
         helper.make_node("BetterOp", ["b"], ["c"], domain="com.example"),
         helper.make_node("FancyOp", ["c"], ["y"], domain="com.example")],
        [value("x", [1, 4])], [value("y", [1, 4])], extra_opsets=[("com.example", 1)])


def test_unsupported_ops_are_sorted_unique_and_domain_qualified():
    assert unsupported_ops(unsupported_model()) == [
        "com.example::BetterOp", "com.example::FancyOp", "com.example::Swish"]


def test_check_supported_names_all_unsupported_ops():
    with pytest.raises(TvmcompressError) as excinfo:
        check_supported(unsupported_model())
    message = error_message(excinfo)
    assert "com.example::BetterOp, com.example::FancyOp, com.example::Swish" in message and "replace them" in message


def test_op_and_type_pairs_tvm_cannot_run_are_named():
    topk = make_model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"])],
        [value("x", [3, 4], TensorProto.UINT64)], [value("v", [3, 2], TensorProto.UINT64), value("i", [3, 2], TensorProto.INT64)],
        initializers=[numpy_helper.from_array(np.array([2], np.int64), "k")],
    )
    assert unsupported_ops(topk) == ["TopK(UINT64)"]
    # The same op on a type TVM sorts is fine.
    topk.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    topk.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    assert unsupported_ops(topk) == []


def test_ops_inside_if_branches_are_checked():
    branch = helper.make_graph([helper.make_node("FancyOp", ["x"], ["out"], domain="com.example")], "b", [],
                               [value("out", [1, 4])])
    model = make_model([helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
                       [value("x", [1, 4]), value("cond", [], TensorProto.BOOL)], [value("y", [1, 4])],
                       extra_opsets=[("com.example", 1)])
    assert unsupported_ops(model) == ["com.example::FancyOp"]


def test_supported_model_passes_check(exporter_model):
    check_supported(exporter_model)
    assert unsupported_ops(exporter_model) == []


def test_import_error_names_the_node():
    # LRN is in TVM's convert map, but its converter rejects 5-D inputs.
    model = make_model([helper.make_node("LRN", ["x"], ["y"], size=3, name="norm5d")],
                       [value("x", [1, 4, 2, 2, 2])], [value("y", [1, 4, 2, 2, 2])])
    with pytest.raises(TvmcompressError) as excinfo:
        import_to_relax(canonicalize(model))
    message = error_message(excinfo)
    assert "'norm5d' (LRN)" in message and "5D" in message and "replace the op" in message


# ------------------------------------------------------------------------------------------------ io


def test_model_io_excludes_initializers_listed_as_inputs():
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"])],
                       [value("x", ["n", 4]), value("W", [4, 4])], [value("y", ["n", 4])], [weight])
    inputs, outputs = model_io(model)
    assert inputs == [TensorSpec("x", (-1, 4), "float32")]
    assert outputs == [TensorSpec("y", (-1, 4), "float32")]
    canonical = canonicalize(model, input_shapes={"x": [2, 4]})
    assert [vi.name for vi in canonical.graph.input] == ["x"]
