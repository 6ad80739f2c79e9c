"""Train the bundled example: a small CNN on scikit-learn's 8x8 digits, written as ONNX.

    python examples/train_digits.py            # rewrites examples/digits_cnn.onnx and examples/digits_test.npz

The data ships inside scikit-learn (no download). Training is seeded and takes a few seconds on 2 cores. The ONNX
graph is written with onnx.helper from the trained weights, so the file depends on the weights alone.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def load_digits_split(seed: int = 0):
    """Digits scaled to [0, 1], as NCHW float32, with a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def train(x_train, y_train, epochs: int = 40, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def to_onnx(model) -> onnx.ModelProto:
    """Conv-BN-ReLU-MaxPool x2, Flatten, Gemm; BN kept as an op (our compiler folds it)."""
    conv1, bn1, _, _, conv2, bn2, _, _, _, fc = model
    inits, nodes = [], []

    def add(name, tensor):
        inits.append(numpy_helper.from_array(tensor.detach().numpy().astype(np.float32), name))
        return name

    x = "input"
    for i, (conv, bn) in enumerate([(conv1, bn1), (conv2, bn2)], start=1):
        nodes.append(helper.make_node("Conv", [x, add(f"conv{i}.weight", conv.weight), add(f"conv{i}.bias", conv.bias)],
                                      [f"conv{i}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
        nodes.append(helper.make_node(
            "BatchNormalization",
            [f"conv{i}", add(f"bn{i}.weight", bn.weight), add(f"bn{i}.bias", bn.bias),
             add(f"bn{i}.running_mean", bn.running_mean), add(f"bn{i}.running_var", bn.running_var)],
            [f"bn{i}"], epsilon=bn.eps))
        nodes.append(helper.make_node("Relu", [f"bn{i}"], [f"relu{i}"]))
        nodes.append(helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]))
        x = f"pool{i}"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", add("fc.weight", fc.weight), add("fc.bias", fc.bias)], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx_model.producer_name = "tvmcompress examples/train_digits.py"
    onnx.checker.check_model(onnx_model)
    return onnx_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=HERE)
    args = parser.parse_args()
    x_train, x_test, y_train, y_test = load_digits_split()
    model = train(x_train, y_train)
    import torch

    with torch.no_grad():
        acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    onnx.save(to_onnx(model), os.path.join(args.out_dir, "digits_cnn.onnx"))
    np.savez_compressed(os.path.join(args.out_dir, "digits_test.npz"), input=x_test, label=y_test)
    print(f"test accuracy {acc:.4f} on {len(y_test)} held-out digits; wrote digits_cnn.onnx and digits_test.npz")


if __name__ == "__main__":
    main()
