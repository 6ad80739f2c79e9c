"""The corpus: real architectures built offline from packages (torchvision, timm, ultralytics) or written here in
torch, with seeded random weights, exported to ONNX with torch.onnx.export.

No weights are downloaded. BatchNorm statistics are set by two forward passes on random inputs in train mode
(cumulative averages), as training would leave them: with the init's identity statistics, activations of deep
random nets explode or vanish and the comparison would measure float overflow instead of the compiler.

`ARCHS` maps a name to an `Arch`: how to build the torch module, its example inputs, the opsets it is exported
at, and optional ONNX rewrites (Paddle2ONNX-style -1 dims, symbolic batch). `export(arch, opset, cache_dir)`
writes (once per torch version, package versions, arch and opset) and returns the .onnx path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import sys
import warnings
from typing import Callable

import numpy as np
import onnx

# Bump when a builder changes, so cached exports are rebuilt.
CORPUS_VERSION = 2
IR_VERSION = 8


def import_torchvision():
    """torchvision, importable with the CPU torch.

    PyPI's torchvision 0.28.0 wheel links the CUDA build of torch; next to the CPU torch its C ops fail to load
    and `import torchvision` stops at registering fake kernels for torchvision::nms/qnms. The model code we use is
    pure Python, so we declare those two op schemas (with no kernels) and import again."""
    import torch

    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        global _TV_LIB  # keep the library alive: the schemas go with it
        _TV_LIB = torch.library.Library("torchvision", "DEF")
        _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


def _timm(name: str, **kwargs):
    def build():
        import_torchvision()
        import timm

        return timm.create_model(name, pretrained=False, num_classes=kwargs.pop("num_classes", 10), **kwargs)
    return build


def _tv(name: str, **kwargs):
    def build():
        import functools

        tv = import_torchvision()
        return functools.reduce(getattr, name.split("."), tv.models)(weights=None, **kwargs)
    return build


def _ultralytics(yaml: str, cls: str = "DetectionModel"):
    def build():
        import tempfile

        import_torchvision()
        # ultralytics writes a settings file on import: keep it out of the user's home, in one reused folder.
        config_dir = os.path.join(tempfile.gettempdir(), "tvmcompress-tests-ultralytics")
        os.makedirs(config_dir, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", config_dir)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics.nn import tasks

        model = getattr(tasks, cls)(yaml, verbose=False)
        for m in model.modules():  # the deploy head, as `yolo export format=onnx` writes it
            if hasattr(m, "export") and hasattr(m, "format"):
                m.export, m.format, m.dynamic = True, "onnx", False
        return model
    return build


# --- architectures written here, in the style of the families the corpus must cover --------------------------
def _nn():
    import torch
    from torch import nn
    return torch, nn


def _conv_bn_act(nn, cin, cout, k=3, s=1, act=None, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act if act is not None else nn.ReLU())


def unet():
    """U-Net: encoder with max-pool, decoder with ConvTranspose 2x2/2 upsampling and skip Concats."""
    torch, nn = _nn()

    class UNet(nn.Module):
        def __init__(self, c=8):
            super().__init__()
            self.e1, self.e2, self.e3 = _conv_bn_act(nn, 3, c), _conv_bn_act(nn, c, 2 * c), _conv_bn_act(nn, 2 * c, 4 * c)
            self.pool = nn.MaxPool2d(2)
            self.u2, self.u1 = nn.ConvTranspose2d(4 * c, 2 * c, 2, 2), nn.ConvTranspose2d(2 * c, c, 2, 2)
            self.d2, self.d1 = _conv_bn_act(nn, 4 * c, 2 * c), _conv_bn_act(nn, 2 * c, c)
            self.out = nn.Conv2d(c, 2, 1)

        def forward(self, x):
            e1 = self.e1(x)
            e2 = self.e2(self.pool(e1))
            e3 = self.e3(self.pool(e2))
            d2 = self.d2(torch.cat([self.u2(e3), e2], 1))
            d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
            return torch.sigmoid(self.out(d1))

    return UNet()


def dbnet():
    """DBNet text detector: ResNet-style backbone, FPN neck (nearest Resize + Add), probability and threshold
    heads that upsample 4x with two ConvTranspose 2x2/2, and the differentiable binarization step."""
    torch, nn = _nn()
    import torch.nn.functional as F

    class DBNet(nn.Module):
        def __init__(self, c=16):
            super().__init__()
            self.stem = _conv_bn_act(nn, 3, c, 3, 2)
            self.s2, self.s3, self.s4 = (_conv_bn_act(nn, c, 2 * c, 3, 2), _conv_bn_act(nn, 2 * c, 4 * c, 3, 2),
                                         _conv_bn_act(nn, 4 * c, 8 * c, 3, 2))
            self.lat = nn.ModuleList(nn.Conv2d(k * c, c, 1) for k in (2, 4, 8))
            self.smooth = nn.ModuleList(nn.Conv2d(c, c // 4, 3, padding=1) for _ in range(3))

            def head():
                return nn.Sequential(_conv_bn_act(nn, 3 * c // 4, c // 4), nn.ConvTranspose2d(c // 4, c // 4, 2, 2),
                                     nn.BatchNorm2d(c // 4), nn.ReLU(), nn.ConvTranspose2d(c // 4, 1, 2, 2),
                                     nn.Sigmoid())
            self.prob, self.thresh = head(), head()

        def forward(self, x):
            c2 = self.s2(self.stem(x))
            c3 = self.s3(c2)
            c4 = self.s4(c3)
            p4 = self.lat[2](c4)
            p3 = self.lat[1](c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
            p2 = self.lat[0](c2) + F.interpolate(p3, scale_factor=2.0, mode="nearest")
            feats = [self.smooth[0](p2),
                     F.interpolate(self.smooth[1](p3), size=p2.shape[2:], mode="nearest"),
                     F.interpolate(self.smooth[2](p4), size=p2.shape[2:], mode="nearest")]
            fuse = torch.cat(feats, 1)
            prob, thresh = self.prob(fuse), self.thresh(fuse)
            binary = torch.reciprocal(1 + torch.exp(-50 * (prob - thresh)))
            return prob, thresh, binary

    return DBNet()


def picodet():
    """PicoDet-style detector: ESNet-like backbone (depthwise convs, hard-swish, SE), a PAN neck with bilinear
    Resize, and a GFL head per level whose class scores (sigmoid) and box distributions (softmax over bins,
    integral) are concatenated across levels: the shape that loses most under per-tensor int8."""
    torch, nn = _nn()
    import torch.nn.functional as F

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1)
            return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))

    def block(cin, cout, s):
        return nn.Sequential(_conv_bn_act(nn, cin, cin, 3, s, nn.Hardswish(), groups=cin), SE(cin),
                             _conv_bn_act(nn, cin, cout, 1, 1, nn.Hardswish()))

    class PicoDet(nn.Module):
        def __init__(self, nc=5, reg_max=7, c=32):
            super().__init__()
            self.nc, self.reg_max = nc, reg_max
            self.stem = _conv_bn_act(nn, 3, 16, 3, 2, nn.Hardswish())
            self.b3, self.b4, self.b5 = block(16, 24, 2), block(24, 48, 2), block(48, 96, 2)
            self.lat = nn.ModuleList(nn.Conv2d(k, c, 1) for k in (24, 48, 96))
            self.heads = nn.ModuleList(nn.Sequential(block(c, c, 1), nn.Conv2d(c, nc + 4 * (reg_max + 1), 1))
                                       for _ in range(3))
            self.register_buffer("bins", torch.arange(reg_max + 1, dtype=torch.float32))

        def forward(self, x):
            c3 = self.b3(self.stem(x))
            c4 = self.b4(c3)
            c5 = self.b5(c4)
            p5 = self.lat[2](c5)
            p4 = self.lat[1](c4) + F.interpolate(p5, scale_factor=2.0, mode="bilinear", align_corners=False)
            p3 = self.lat[0](c3) + F.interpolate(p4, scale_factor=2.0, mode="bilinear", align_corners=False)
            scores, boxes = [], []
            for head, p in zip(self.heads, (p3, p4, p5)):
                out = head(p).flatten(2).transpose(1, 2)  # [1, HW, nc + 4 * bins]
                cls, reg = out.split([self.nc, 4 * (self.reg_max + 1)], dim=2)
                scores.append(torch.sigmoid(cls))
                dist = F.softmax(reg.reshape(1, -1, 4, self.reg_max + 1), dim=3)
                boxes.append((dist * self.bins).sum(3))
            return torch.cat(scores, 1), torch.cat(boxes, 1)

    return PicoDet()


def crnn():
    """CRNN text recognizer: conv/BN/ReLU/pool stack to a height-1 feature map, then a 2-layer bidirectional
    LSTM over the width and a per-column classifier with log-softmax (the CTC head)."""
    torch, nn = _nn()

    class CRNN(nn.Module):
        def __init__(self, classes=37, hidden=32):
            super().__init__()
            self.cnn = nn.Sequential(
                _conv_bn_act(nn, 3, 16), nn.MaxPool2d(2, 2), _conv_bn_act(nn, 16, 32), nn.MaxPool2d(2, 2),
                _conv_bn_act(nn, 32, 64), nn.MaxPool2d((2, 1), (2, 1)), _conv_bn_act(nn, 64, 64),
                nn.MaxPool2d((4, 1), (4, 1)))
            self.rnn = nn.LSTM(64, hidden, num_layers=2, bidirectional=True)
            self.fc = nn.Linear(2 * hidden, classes)

        def forward(self, x):
            f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # [W, N, C]
            seq, _ = self.rnn(f)
            return torch.log_softmax(self.fc(seq), dim=2)

    return CRNN()


def bert():
    """BERT-style encoder: token + position + segment embeddings, LayerNorm, 2 post-norm layers of multi-head
    attention with an additive mask from attention_mask, GELU FFN, and a tanh pooler on the first token."""
    torch, nn = _nn()

    class Layer(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x, bias):
            b, t, d = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + bias, dim=-1)
            x = self.ln1(x + self.o((att @ v).transpose(1, 2).reshape(b, t, d)))
            return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    class Bert(nn.Module):
        def __init__(self, vocab=500, d=64, heads=4, layers=2, max_len=32):
            super().__init__()
            self.tok, self.pos, self.seg = nn.Embedding(vocab, d), nn.Embedding(max_len, d), nn.Embedding(2, d)
            self.ln = nn.LayerNorm(d)
            self.layers = nn.ModuleList(Layer(d, heads) for _ in range(layers))
            self.pool = nn.Linear(d, d)

        def forward(self, input_ids, attention_mask, token_type_ids):
            t = input_ids.shape[1]
            x = self.ln(self.tok(input_ids) + self.pos(torch.arange(t).unsqueeze(0)) + self.seg(token_type_ids))
            bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
            for layer in self.layers:
                x = layer(x, bias)
            return x, torch.tanh(self.pool(x[:, 0]))

    return Bert()


def _bert_inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 500, (1, 16), generator=g)
    mask = torch.ones(1, 16, dtype=torch.int64)
    mask[0, 12:] = 0
    return ids, mask, torch.zeros(1, 16, dtype=torch.int64)


# --- ONNX rewrites -------------------------------------------------------------------------------------------
def paddle_dims(dims: dict[str, list[int]]) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    """Write the named inputs' dims as Paddle2ONNX does: -1 for every dynamic dim (here, those listed as -1)."""
    def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
        for inp in model.graph.input:
            if inp.name in dims:
                for d, v in zip(inp.type.tensor_type.shape.dim, dims[inp.name]):
                    if v == -1:
                        d.Clear()
                        d.dim_value = -1
        return model
    return rewrite


@dataclasses.dataclass(frozen=True)
class Arch:
    build: Callable
    input_shapes: tuple[tuple[int, ...], ...] = ((1, 3, 64, 64),)
    opsets: tuple[int, ...] = (17,)
    # Modes that run in the default suite (at opsets[0]); the rest run with -m slow.
    fast: tuple[str, ...] = ()
    # Keyword arguments for torch.onnx.export (input/output names, dynamic axes).
    export_kwargs: tuple = ()
    rewrite: Callable | None = None
    # --input-shape values tvmcompress needs (models with dynamic dims).
    compile_shapes: tuple = ()
    # Example inputs other than standard-normal images (token ids, masks).
    inputs: Callable | None = None
    family: str = ""


_IMG = ((1, 3, 64, 64),)
ARCHS: dict[str, Arch] = {
    # Classifiers: torchvision.
    "resnet18": Arch(_tv("resnet18", num_classes=10), opsets=(13, 17), family="classifier"),
    "resnet50": Arch(_tv("resnet50", num_classes=10), family="classifier"),
    "mobilenet_v2": Arch(_tv("mobilenet_v2", num_classes=10), opsets=(13,), family="classifier"),
    "mobilenet_v3_small": Arch(_tv("mobilenet_v3_small", num_classes=10), opsets=(13, 17), family="classifier"),
    "squeezenet1_1": Arch(_tv("squeezenet1_1", num_classes=10), opsets=(13,), family="classifier"),
    "shufflenet_v2_x0_5": Arch(_tv("shufflenet_v2_x0_5", num_classes=10), family="classifier"),
    "mnasnet0_5": Arch(_tv("mnasnet0_5", num_classes=10), opsets=(13,), family="classifier"),
    "densenet121": Arch(_tv("densenet121", num_classes=10), family="classifier"),
    "lraspp_mobilenet_v3": Arch(_tv("segmentation.lraspp_mobilenet_v3_large", num_classes=3, weights_backbone=None),
                                family="segmentation"),
    # Classifiers: timm.
    "mobilenetv3_large_100": Arch(_timm("mobilenetv3_large_100"), opsets=(13,), family="classifier"),
    "efficientnet_b0": Arch(_timm("efficientnet_b0"), opsets=(13, 17), family="classifier"),
    "efficientnet_lite0": Arch(_timm("efficientnet_lite0"), family="classifier"),
    "regnetx_002": Arch(_timm("regnetx_002"), opsets=(13,), family="classifier"),
    "regnety_002": Arch(_timm("regnety_002"), family="classifier"),
    "convnext_atto": Arch(_timm("convnext_atto"), opsets=(13, 17), family="classifier"),
    "ghostnet_100": Arch(_timm("ghostnet_100"), family="classifier"),
    "lcnet_050": Arch(_timm("lcnet_050"), opsets=(13,), family="classifier"),
    "resnet10t": Arch(_timm("resnet10t"), family="classifier"),
    "mobilevit_xxs": Arch(_timm("mobilevit_xxs"), family="classifier"),
    "vit_tiny": Arch(_timm("vit_tiny_patch16_224", img_size=64), opsets=(14, 17), family="transformer"),
    "deit_tiny": Arch(_timm("deit_tiny_patch16_224", img_size=64), family="transformer"),
    "swin_micro": Arch(_timm("swin_tiny_patch4_window7_224", img_size=112, window_size=7, embed_dim=24,
                             depths=(1, 1, 2), num_heads=(1, 2, 4)), input_shapes=((1, 3, 112, 112),),
                       family="transformer"),
    # Detectors: ultralytics from the yaml, and a PicoDet-style head written here.
    "yolov8n": Arch(_ultralytics("yolov8n.yaml"), input_shapes=((1, 3, 320, 320),), family="detector"),
    "yolov8n_seg": Arch(_ultralytics("yolov8n-seg.yaml", "SegmentationModel"), input_shapes=((1, 3, 160, 160),),
                        opsets=(13,), family="detector"),
    "yolov8n_cls": Arch(_ultralytics("yolov8n-cls.yaml", "ClassificationModel"), family="classifier"),
    "picodet": Arch(picodet, input_shapes=((1, 3, 96, 96),), opsets=(17, 13), family="detector",
                    fast=("default",)),
    # Text detection / segmentation decoders with ConvTranspose and Resize.
    "dbnet": Arch(dbnet, opsets=(13, 17), family="decoder", fast=("default",)),
    "unet": Arch(unet, input_shapes=((1, 3, 32, 32),), family="decoder", fast=("default", "no_winograd", "int8")),
    # Sequence models.
    "crnn": Arch(crnn, input_shapes=((1, 3, 32, 64),), opsets=(13, 17), family="ocr"),
    "bert": Arch(bert, input_shapes=((1, 16), (1, 16), (1, 16)), opsets=(17, 13), family="transformer",
                 fast=("default", "int8"), inputs=_bert_inputs,
                 export_kwargs=(("input_names", ["input_ids", "attention_mask", "token_type_ids"]),)),
    # Paddle2ONNX-style graphs: dynamic dims written as -1 (the frontend must treat them as symbolic).
    "crnn_paddle": Arch(crnn, input_shapes=((1, 3, 32, 64),), family="ocr",
                        export_kwargs=(("input_names", ["x"]),), rewrite=paddle_dims({"x": [-1, 3, -1, -1]}),
                        compile_shapes=(("x", (1, 3, 32, 64)),)),
    "picodet_paddle": Arch(picodet, input_shapes=((1, 3, 96, 96),), family="detector",
                           export_kwargs=(("input_names", ["image"]),),
                           rewrite=paddle_dims({"image": [-1, 3, -1, -1]}),
                           compile_shapes=(("image", (1, 3, 96, 96)),)),
    # A symbolic batch dim, as torch.onnx.export writes dynamic_axes.
    "resnet18_dynbatch": Arch(_tv("resnet18", num_classes=10), family="classifier",
                              export_kwargs=(("input_names", ["x"]), ("dynamic_axes", {"x": {0: "batch"}})),
                              compile_shapes=(("x", (1, 3, 64, 64)),)),
}


def example_inputs(arch: Arch, seed: int = 0):
    import torch

    if arch.inputs is not None:
        return arch.inputs()
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s, generator=g) for s in arch.input_shapes)


def build_module(arch: Arch, seed: int = 0):
    """The torch module with seeded weights and BatchNorm statistics from random inputs, in eval mode."""
    import torch

    torch.manual_seed(seed)
    model = arch.build()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
        model.train()
        with torch.no_grad():
            for i in range(2):
                model(*example_inputs(arch, seed=100 + i))
    return model.eval()


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for pkg in ("torch", "torchvision", "timm", "ultralytics", "onnx"):
        try:
            parts.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg}=none")
    return ",".join(parts)


def cache_key(name: str, opset: int) -> str:
    digest = hashlib.sha256(f"{CORPUS_VERSION}|{_versions()}".encode()).hexdigest()[:12]
    return f"{name}-opset{opset}-{digest}.onnx"


def export(name: str, opset: int, cache_dir: str) -> str:
    """The exported model's path, exporting on first use (atomically: a killed run leaves no partial file)."""
    path = os.path.join(cache_dir, cache_key(name, opset))
    if os.path.exists(path):
        return path
    import torch

    arch = ARCHS[name]
    model = build_module(arch)
    kwargs = dict(arch.export_kwargs)
    # torch names unnamed inputs "input.1"; int8 calibration trips on such names (a bug with its own regression
    # test in test_corpus_regressions.py), so the corpus names them like exporters that set input_names do.
    kwargs.setdefault("input_names", [f"x{i}" if i else "x" for i in range(len(arch.input_shapes))])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs(arch), buf, opset_version=opset, dynamo=False,
                          do_constant_folding=True, **kwargs)
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    if arch.rewrite is not None:
        proto = arch.rewrite(proto)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    onnx.save(proto, tmp)
    os.replace(tmp, path)
    return path


def feeds(model: onnx.ModelProto, arch: Arch, seed: int) -> dict[str, np.ndarray]:
    """Inputs for one run: the arch's own generator (ids in range, masks 0/1) or standard-normal images."""
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    values = example_inputs(arch, seed)
    if arch.inputs is not None and seed:  # vary token ids with the seed, keep the mask pattern
        import torch

        g = torch.Generator().manual_seed(seed)
        values = (torch.randint(0, 500, tuple(values[0].shape), generator=g),) + tuple(values[1:])
    return {n: v.numpy() for n, v in zip(names, values)}
