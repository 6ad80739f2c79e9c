import json

import numpy as np
import pytest
import tvm
from quant_helpers import host_target
from sparse_helpers import dense_model, import_prepared, run_ort
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvmcompress.passes.bsr_kernels import to_bsr
from tvmcompress.passes.prune_block import PruneBlock, block_mask
from tvmcompress.passes.sparse_dense import SparseDense, find_block_sparse_matmuls
from tvmcompress.schedules.cpu_pipeline import cpu_pipeline
from tvmcompress.passes.sparse_decision import decide_sparse_layers
from tvmcompress.targets import presets

# [K=4, N=8] in 2x4 tiles: tile (rows 0-1, cols 0-3) and tile (rows 2-3, cols 4-7) are nonzero.
W = np.zeros((4, 8), np.float32)
W[0:2, 0:4] = np.arange(1, 9).reshape(2, 4)
W[2:4, 4:8] = -np.arange(1, 9).reshape(2, 4)
DATA = np.stack([W[0:2, 0:4], W[2:4, 4:8]])
INDICES = np.array([0, 1], np.int32)
INDPTR = np.array([0, 1, 2], np.int32)


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 2, 4), "float32")) -> R.Tensor((1, 2, 8), "float32"):
        with R.dataflow():
            y = R.matmul(x, R.const(W))
            R.output(y)
        return y


@I.ir_module
class Expected:
    @T.prim_func(private=True)
    def bsr_matmul_y(
        x: T.Buffer((2, 4), "float32"), data: T.Buffer((2, 2, 4), "float32"), indices: T.Buffer((2,), "int32"),
        indptr: T.Buffer((3,), "int32"), y: T.Buffer((2, 8), "float32"),
    ):
        T.func_attr({"tir.noalias": True, "tir.is_scheduled": True, "op_pattern": 8})
        for j in T.parallel(2):
            acc = T.alloc_buffer((2, 4), "float32", scope="local")
            for mo in T.serial(1):
                for mi in T.unroll(2):
                    for cc in T.vectorized(4):
                        acc[mi, cc] = T.float32(0)
                for b in T.serial(indptr[j + 1] - indptr[j]):
                    for rr in T.serial(2):
                        for mi in T.unroll(2):
                            for cc in T.vectorized(4):
                                acc[mi, cc] = acc[mi, cc] + x[mo * 2 + mi, indices[indptr[j] + b] * 2 + rr] * data[indptr[j] + b, rr, cc]
                for mi in T.unroll(2):
                    for cc in T.vectorized(4):
                        y[mo * 2 + mi, j * 4 + cc] = acc[mi, cc]

    @R.function
    def main(x: R.Tensor((1, 2, 4), "float32")) -> R.Tensor((1, 2, 8), "float32"):
        cls = Expected
        with R.dataflow():
            y_rows = R.reshape(x, R.shape([2, 4]))
            y_bsr = R.call_tir(cls.bsr_matmul_y, (y_rows, R.const(DATA), R.const(INDICES), R.const(INDPTR)),
                               out_ty=R.Tensor((2, 8), "float32"))
            y = R.reshape(y_bsr, R.shape([1, 2, 8]))
            R.output(y)
        return y


def test_sparse_dense_rewrites_into_bsr_kernel_call():
    tvm.ir.assert_structural_equal(SparseDense({"y": (2, 4)})(Before), Expected)


def test_sparse_dense_leaves_unselected_layers():
    tvm.ir.assert_structural_equal(SparseDense({})(Before), Before)
    tvm.ir.assert_structural_equal(SparseDense({"other": (2, 4)})(Before), Before)


def test_find_prefers_the_largest_block_of_equal_sparsity():
    (cand,) = find_block_sparse_matmuls(Before, blocks=((1, 4), (2, 4), (4, 8)))
    assert (cand.layer, cand.block, cand.block_sparsity, cand.rows) == ("matmul_0", (2, 4), 0.5, 2)
    assert find_block_sparse_matmuls(Before, min_sparsity=0.6, blocks=((2, 4),)) == []


def test_to_bsr_round_trips_and_keeps_an_all_zero_weight_valid():
    bsr = to_bsr(W, (2, 4))
    np.testing.assert_array_equal(bsr.data, DATA)
    np.testing.assert_array_equal(bsr.to_dense(), W)
    empty = to_bsr(np.zeros((4, 8), np.float32), (2, 4))
    assert empty.indptr.tolist() == [0, 0, 0] and empty.data.shape == (1, 2, 4)


@pytest.mark.parametrize("block,rows", [((1, 16), 12), ((4, 8), 5)])
def test_bsr_model_matches_ort_on_equally_pruned_onnx(block, rows):
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(64, 48)).astype(np.float32)
    x = rng.normal(size=(rows, 64)).astype(np.float32)
    pruned = np.where(block_mask(weight, 0.8, block), weight, 0).astype(np.float32)
    mod = PruneBlock(0.8, block)(import_prepared(dense_model(weight, rows)))
    (cand,) = find_block_sparse_matmuls(mod, blocks=(block,))
    sparse = SparseDense({cand.binding: cand.block})(mod)
    assert any(isinstance(f, tvm.tirx.PrimFunc) for _, f in sparse.functions_items())
    # Through our CPU pipeline, which must leave the scheduled, opaque kernel as written.
    target = host_target()
    vm = relax.VirtualMachine(tvm.compile(sparse, target, relax_pipeline=cpu_pipeline(target)), tvm.cpu())
    actual = vm["main"](tvm.runtime.tensor(x)).numpy()
    # Same terms as ORT's dense product, summed in another order: float32 rounding of |y| ~ 10.
    np.testing.assert_allclose(actual, run_ort(dense_model(pruned, rows), x), rtol=1e-5, atol=1e-4)


def test_decisions_measure_on_host_and_keep_dense_on_foreign_targets():
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(128, 128)).astype(np.float32)
    mod = PruneBlock(0.9, (1, 16))(import_prepared(dense_model(weight, 64)))
    (foreign,) = decide_sparse_layers(mod, presets.resolve_preset("aarch64"))
    assert not foreign.sparse and foreign.dense_ms is None
    assert foreign.reason == "kept dense: cannot time kernels for aarch64 on this machine"
    (host,) = decide_sparse_layers(mod, presets.resolve_preset("host"), min_speedup=0.0)
    assert host.sparse and host.dense_ms > 0 and host.sparse_ms > 0 and host.block == [1, 16]
    (strict,) = decide_sparse_layers(mod, presets.resolve_preset("host"), min_speedup=1e9)
    assert not strict.sparse and strict.reason.startswith("kept dense: sparse kernel")
    # The manifest records them: plain JSON types only (numpy scalars would not serialize).
    assert json.loads(json.dumps([d.to_json() for d in (foreign, host, strict)]))[1]["sparse"] is True
