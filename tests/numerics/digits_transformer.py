"""A small pre-LayerNorm transformer classifier trained on scikit-learn digits, for the SmoothQuant tests.

Each 8x8 image is 8 tokens (its rows) of 8 pixels, embedded to D = 32 with learned positions; one transformer
block (LayerNorm -> single-head attention with separate Q/K/V projections -> output projection -> residual;
LayerNorm -> 32-64-32 ReLU FFN -> residual), a final LayerNorm, mean pooling over tokens and a linear classifier.
Trained with torch (Adam, seeded, single thread, ~10 s), written as plain ONNX (opset 17, ir_version 9) by hand.

Outlier channels: two of the 32 channels of every LayerNorm start with gamma = 20 instead of 1 and are trained
with the rest. Trained transformers have such channels (Kovaleva et al., "BERT Busters: Outlier Dimensions that
Disrupt Transformers", 2021: a few LayerNorm dimensions with large scaling factors; Dettmers et al.,
"LLM.int8()", 2022; the SmoothQuant paper, Fig. 4); a model this small does not grow them in seconds of
training, so they are seeded where they arise. The model is still trained end to end, with them, and accurate.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvmcompress.frontend import load_model

D, HIDDEN, TOKENS, CLASSES = 32, 64, 8, 10
OUTLIER_CHANNELS = (5, 17)
OUTLIER_GAMMA = 20.0
EPOCHS = 60


@functools.cache
def train_transformer(seed: int = 0) -> onnx.ModelProto:
    """The trained classifier as ONNX, input `input` [1, 1, 8, 8] (the batch dim is set at import)."""
    import torch

    from digits_models import digits_split

    x_train, _, y_train, _ = digits_split()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is deterministic and fast enough
    try:
        model = _Model(torch)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        x = torch.from_numpy(x_train.reshape(-1, TOKENS, 8))
        y = torch.from_numpy(np.asarray(y_train, np.int64))
        generator = torch.Generator().manual_seed(seed)
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(x), generator=generator).split(64):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
        weights = {name: p.detach().numpy().astype(np.float32) for name, p in model.named_parameters()}
    finally:
        torch.set_num_threads(threads)
    return _to_onnx(weights)


def _Model(torch):
    nn = torch.nn

    def layer_norm():
        norm = nn.LayerNorm(D)
        with torch.no_grad():
            norm.weight[list(OUTLIER_CHANNELS)] = OUTLIER_GAMMA
        return norm

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(8, D)
            self.pos = nn.Parameter(torch.randn(TOKENS, D) * 0.1)
            self.ln1, self.ln2, self.ln_f = layer_norm(), layer_norm(), layer_norm()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
            self.fc1, self.fc2 = nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)
            self.head = nn.Linear(D, CLASSES)

        def forward(self, x):
            x = self.embed(x) + self.pos
            h = self.ln1(x)
            scores = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / D**0.5, dim=-1)
            x = x + self.o(scores @ self.v(h))
            x = x + self.fc2(torch.relu(self.fc1(self.ln2(x))))
            return self.head(self.ln_f(x).mean(dim=1))

    return Model()


def _to_onnx(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def linear(x: str, layer: str, out: str) -> str:
        # torch.nn.Linear stores W as [out, in]; MatMul wants [in, out].
        nodes.append(helper.make_node("MatMul", [x, const(f"{layer}.W", w[f"{layer}.weight"].T.copy())], [out + "_mm"]))
        nodes.append(helper.make_node("Add", [out + "_mm", const(f"{layer}.b", w[f"{layer}.bias"])], [out]))
        return out

    def layer_norm(x: str, layer: str, out: str) -> str:
        nodes.append(helper.make_node(
            "LayerNormalization", [x, const(f"{layer}.g", w[f"{layer}.weight"]), const(f"{layer}.beta", w[f"{layer}.bias"])],
            [out], axis=-1, epsilon=1e-5,
        ))
        return out

    nodes.append(helper.make_node("Reshape", ["input", const("tokens_shape", np.array([-1, TOKENS, 8], np.int64))],
                                  ["tokens"]))
    linear("tokens", "embed", "emb")
    nodes.append(helper.make_node("Add", ["emb", const("pos", w["pos"])], ["x0"]))
    h = layer_norm("x0", "ln1", "h1")
    q, k, v = (linear(h, name, name + "_out") for name in ("q", "k", "v"))
    nodes.append(helper.make_node("Transpose", [k], ["kt"], perm=[0, 2, 1]))
    nodes.append(helper.make_node("MatMul", [q, "kt"], ["qk"]))
    nodes.append(helper.make_node("Mul", ["qk", const("inv_sqrt_d", np.array(1.0 / np.sqrt(D), np.float32))],
                                  ["scores"]))
    nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=-1))
    nodes.append(helper.make_node("MatMul", ["probs", v], ["attn"]))
    linear("attn", "o", "o_out")
    nodes.append(helper.make_node("Add", ["x0", "o_out"], ["x1"]))
    h2 = layer_norm("x1", "ln2", "h2")
    linear(h2, "fc1", "f1")
    nodes.append(helper.make_node("Relu", ["f1"], ["f1r"]))
    linear("f1r", "fc2", "f2")
    nodes.append(helper.make_node("Add", ["x1", "f2"], ["x2"]))
    layer_norm("x2", "ln_f", "hf")
    nodes.append(helper.make_node("ReduceMean", ["hf"], ["pooled"], axes=[1], keepdims=0))
    linear("pooled", "head", "logits")
    graph = helper.make_graph(
        nodes, "digits_transformer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return load_model(model.SerializeToString())
