import numpy as np
import pytest
import tvm
from quant_helpers import run
from sparse_helpers import dense_model, import_prepared, run_ort
from tvm.script import ir as I
from tvm.script import relax as R

from tvmcompress.errors import TvmcompressError
from tvmcompress.passes.cluster_weights import ClusterWeights, cluster_weight, kmeans_1d
from tvmcompress.passes.quantize_weights import quantize_per_channel

# Nonzeros {1.0, 1.5, 3.5, 3.0}, 2 bits with zeros: 3 centroids from linspace(1, 3.5) = [1, 2.25, 3.5]. The
# middle one wins nothing, the others move to 1.25 and 3.25; the empty one is re-seeded on the first worst-fitted
# value (1.0), which splits {1.0, 1.5}: final codebook [0, 1.0, 1.5, 3.25] (all exact in float32).
W = np.array([[0, 1.0, 1.5, 3.5], [0, 3.0, 0, 0]], np.float32)
W_CLUSTERED = np.array([[0, 1.0, 1.5, 3.25], [0, 3.25, 0, 0]], np.float32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W_CLUSTERED))
            R.output(y)
        return y


def test_cluster_weights_shares_values_and_keeps_zeros():
    tvm.ir.assert_structural_equal(ClusterWeights(2)(Before), Expected)


def test_cluster_weights_skips_unselected_and_activation_weights():
    tvm.ir.assert_structural_equal(ClusterWeights(2, layers=("matmul_9",))(Before), Before)

    @I.ir_module
    class TwoInputs:
        @R.function
        def main(x: R.Tensor((1, 2), "float32"), w: R.Tensor((2, 4), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ClusterWeights(2)(TwoInputs), TwoInputs)


def test_bad_bits_are_user_errors():
    with pytest.raises(TvmcompressError, match="--cluster-bits must be an integer from 1 to 8, got 0"):
        ClusterWeights(0)


def test_conv_weight_codebook_size_zeros_and_error():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    weight[np.abs(weight) < 0.5] = 0
    clustered = cluster_weight(weight, 4)
    values = clustered.values()
    assert len(clustered.codebook) == 16 and clustered.codebook[0] == 0
    np.testing.assert_array_equal(values == 0, weight == 0)
    # Lloyd never increases the squared error of its linear start (16 evenly spaced levels for the nonzeros).
    nonzero = weight[weight != 0]
    levels = np.linspace(nonzero.min(), nonzero.max(), 15)
    linear = levels[np.abs(nonzero[:, None] - levels).argmin(axis=1)]
    assert np.sum((values[weight != 0] - nonzero) ** 2) < np.sum((linear - nonzero) ** 2)


def test_kmeans_of_fewer_distinct_values_than_clusters_is_exact():
    np.testing.assert_array_equal(kmeans_1d(np.array([2.0, -1.0, 2.0]), 8), [-1.0, 2.0])


def test_int8_after_clustering_keeps_at_most_2_to_the_b_values_per_channel():
    weight = np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32)
    quantized, _ = quantize_per_channel(cluster_weight(weight, 3).values(), axis=1)
    assert max(len(np.unique(quantized[:, c])) for c in range(32)) <= 8


def test_clustered_module_matches_ort_on_equally_clustered_onnx():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(32, 16)).astype(np.float32)
    x = rng.normal(size=(4, 32)).astype(np.float32)
    expected = run_ort(dense_model(cluster_weight(weight, 4).values(), 4), x)
    actual = run(ClusterWeights(4)(import_prepared(dense_model(weight, 4))), x)
    # 32-term float32 dot products in another summation order.
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_given_codebook_replaces_centroids_keeping_the_assignment():
    @I.ir_module
    class ExpectedCodebook:
        @R.function
        def main(x: R.Tensor((1, 2), "float32")) -> R.Tensor((1, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(np.array([[0, 1.0, 2.0, 3.0], [0, 3.0, 0, 0]], np.float32)))
                R.output(y)
            return y

    codebook = np.array([0, 1.0, 2.0, 3.0], np.float32)  # entries 1.0, 1.5, 3.25 of the k-means codebook
    tvm.ir.assert_structural_equal(ClusterWeights(2, codebooks={"y": codebook})(Before), ExpectedCodebook)


def test_refit_codebooks_lower_the_output_error_and_stay_int8_codes():
    from tvmcompress.passes.cluster_refit import fit_codebooks

    rng = np.random.default_rng(5)
    weight = rng.normal(size=(32, 16)).astype(np.float32)
    weight[np.abs(weight) < 0.6] = 0
    x = np.abs(rng.normal(size=(64, 32))).astype(np.float32)  # ReLU-like inputs: nonzero mean
    mod = import_prepared(dense_model(weight, 64))
    data = [{"x": x}]
    for for_int8 in (False, True):
        codebooks, offsets = fit_codebooks(mod, 2, data, for_int8=for_int8)
        assert offsets == {}  # no bias after the layer to correct
        (codebook,) = codebooks.values()
        kmeans = run(ClusterWeights(2, for_int8=for_int8)(mod), x)
        refit = run(ClusterWeights(2, for_int8=for_int8, codebooks=codebooks)(mod), x)
        assert np.linalg.norm(refit - x @ weight) < np.linalg.norm(kmeans - x @ weight)
        assert codebook[0] == 0
        if for_int8:
            assert np.all(codebook == np.round(codebook)) and {-127.0, 127.0} <= set(codebook.tolist())


def test_refit_moves_the_remaining_mean_error_into_the_bias():
    from onnx import TensorProto, helper, numpy_helper

    from tvmcompress.passes.cluster_refit import apply_codebooks, fit_codebooks

    rng = np.random.default_rng(6)
    weight = rng.normal(size=(32, 8)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])], "dense_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 8])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    mod = import_prepared(model)
    x = np.abs(rng.normal(size=(64, 32))).astype(np.float32) + 1.0  # far from zero mean: clustering shifts y
    codebooks, offsets = fit_codebooks(mod, 1, [{"x": x}])
    assert len(offsets) == 1 and next(iter(offsets.values())).shape == (8,)
    exact = x @ weight + bias
    without = run(ClusterWeights(1, codebooks=codebooks)(mod), x)
    corrected = run(apply_codebooks(mod, 1, codebooks, offsets), x)
    # The correction removes the mean error per channel: what is left averages to ~0 (float32 sums of 64 rows).
    np.testing.assert_allclose((corrected - exact).mean(axis=0), 0, atol=1e-4)
    assert np.linalg.norm(corrected - exact) < np.linalg.norm(without - exact)
