"""weights_breakdown: each stage's bytes as documented in tvmcompress/weight_sizes.py, on a one-layer model."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "passes"))
from sparse_helpers import dense_model, import_prepared  # noqa: E402

from tvmcompress import weight_codec  # noqa: E402
from tvmcompress.passes.cluster_weights import ClusterWeights  # noqa: E402
from tvmcompress.passes.prune_block import PruneBlock  # noqa: E402
from tvmcompress.weight_sizes import weights_breakdown  # noqa: E402


def test_breakdown_of_pruned_and_clustered_dense_layer():
    weight = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    source = dense_model(weight, 2)
    pruned = PruneBlock(0.75, (1, 4))(import_prepared(source))  # 32 tiles of 4: 8 kept, 32 nonzeros of 128
    clustered = ClusterWeights(2)(pruned)  # 0 + 3 centroids
    final_weight = clustered["main"].body.blocks[0].bindings[0].value.args[1].value.numpy()
    sizes = weights_breakdown(source, pruned, None, clustered, cluster_bits=2)
    assert sizes["dense_fp32"] == 8 * 16 * 4
    assert sizes["after_pruning"] == 32 * 4 + 128 // 8  # nonzeros + presence bitmap
    assert sizes["after_quantization"] is None
    assert sizes["after_clustering"] == (32 * 2 + 128) // 8 + 4 * 4  # nonzeros' 2-bit indices + bitmap + 4 entries
    assert sizes["after_entropy_coding"] == len(weight_codec.encode_array(final_weight))
    assert sizes["ratio_to_dense_fp32"] == round(512 / sizes["after_entropy_coding"], 3)
