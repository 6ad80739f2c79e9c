"""PicoDet-style and YOLOv8-style detectors with realistic activation statistics, for the int8 detector tests.

Both are small torch modules exported with torch's TorchScript ONNX exporter (opset 17, ir_version 8), batch 1,
input `image` [1, 3, 160, 160] normalized with the ImageNet mean and std, three levels (strides 8, 16, 32, 525
anchor points).

- PicoDet (PaddleDetection's layout detector shape): an ESNet/LCNet-like backbone (3x3 stem, depthwise 3x3 +
  pointwise 1x1 blocks with hard-swish, a hard-sigmoid squeeze-excite), a CSP-PAN neck (1x1 lateral convs to 64
  channels, nearest upsampling, Concat, depthwise 5x5 + pointwise blocks, top-down and bottom-up), and a GFL head:
  per level a conv tower (depthwise 5x5 + pointwise, hard-swish, twice), one 1x1 conv to NC + 4 x (REG_MAX + 1)
  channels, class scores through a sigmoid, box sides as a distribution (softmax over REG_MAX + 1 bins, integral
  by a MatMul with [0, 1, ..., REG_MAX]), times the level's stride, decoded around the anchor points into x1 y1
  x2 y2 pixels. Outputs: `boxes` [1, 525, 4] (pixels, 0..160) and `scores` [1, NC, 525] (sigmoid), the levels
  concatenated.
- YOLOv8 (ultralytics' head): a CSP backbone and PAN neck (3x3 conv + BN + SiLU, C2f-like Split/Concat blocks),
  a decoupled head per level (two 3x3 convs then a 1x1 conv for 4 x 16 DFL bins; the same for the class logits),
  DFL as softmax over 16 bins and a 1x1 conv with weights [0, ..., 15], decode into x y w h pixels times the
  stride, and one output `output` [1, 4 + NC, 525]: boxes (0..160) and sigmoid scores (0..1) in one Concat.

Statistics: weights are random (seeded), with the scale structure of trained nets: every conv is followed by a
BatchNorm whose running statistics are measured on the calibration images (so pre-activations are normalized as
in a trained net), BN gammas are log-normal with a few 8x outlier channels per layer (as trained depthwise
MobileNet/ESNet layers have), and the exporter folds BN into the conv weights. The final class conv has the GFL
/ YOLO prior bias (-4.6: scores about 0.01, a few cells higher), the box-bin logits are scaled so that the bin
distributions are peaked, as after training. Inputs are synthetic document pages (white background, dark text
lines, grey figures and sklearn digits), not noise: `pages(n, seed)`.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import onnx

SIZE, NC = 160, 5
STRIDES = (8, 16, 32)
PICO_REG_MAX, YOLO_BINS = 7, 16
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def pages(n: int, seed: int) -> np.ndarray:
    """n synthetic document pages [n, 3, SIZE, SIZE], float32, normalized like the detectors' training data."""
    from sklearn.datasets import load_digits

    digits = load_digits().images / 16.0
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, SIZE, SIZE), np.float32)
    for k in range(n):
        page = np.full((SIZE, SIZE, 3), rng.uniform(0.9, 1.0), np.float32)
        for _ in range(rng.integers(4, 12)):  # text lines
            y, x = rng.integers(0, SIZE - 6), rng.integers(0, SIZE // 2)
            page[y : y + rng.integers(2, 6), x : x + rng.integers(20, SIZE - x)] = rng.uniform(0.0, 0.3)
        for _ in range(rng.integers(0, 3)):  # figures and tables: coloured blocks
            y, x = rng.integers(0, SIZE - 40), rng.integers(0, SIZE - 40)
            page[y : y + rng.integers(20, 40), x : x + rng.integers(20, 40)] = rng.uniform(0.2, 0.9, 3)
        for _ in range(rng.integers(1, 5)):  # handwriting: digits scaled x2..x4
            d = digits[rng.integers(len(digits))]
            s = int(rng.integers(2, 5))
            glyph = np.kron(d, np.ones((s, s)))[..., None]
            y, x = rng.integers(0, SIZE - glyph.shape[0]), rng.integers(0, SIZE - glyph.shape[1])
            region = page[y : y + glyph.shape[0], x : x + glyph.shape[1]]
            region[:] = region * (1.0 - glyph) + glyph * rng.uniform(0.0, 0.2)
        out[k] = page.transpose(2, 0, 1)
    return (out - MEAN) / STD


def _modules(torch):
    nn = torch.nn

    class ConvBN(nn.Sequential):
        def __init__(self, cin, cout, k, stride=1, groups=1, act="hardswish"):
            layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
            if act == "hardswish":
                layers.append(nn.Hardswish())
            elif act == "silu":
                layers.append(nn.SiLU())
            super().__init__(*layers)

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.reduce, self.expand = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

        def forward(self, x):
            s = torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))
            return x * nn.functional.hardsigmoid(self.expand(s))

    class DWBlock(nn.Sequential):  # ESNet/LCNet: depthwise k x k, (SE), pointwise 1x1
        def __init__(self, cin, cout, k=3, stride=1, se=False):
            layers = [ConvBN(cin, cin, k, stride, groups=cin, act="hardswish")]
            if se:
                layers.append(SE(cin))
            layers.append(ConvBN(cin, cout, 1))
            super().__init__(*layers)

    class CSPLayer(nn.Module):  # CSP-PAN: two 1x1 branches, depthwise blocks on one, Concat, 1x1
        def __init__(self, cin, cout):
            super().__init__()
            mid = cout // 2
            self.main, self.short = ConvBN(cin, mid, 1), ConvBN(cin, mid, 1)
            self.blocks = nn.Sequential(DWBlock(mid, mid, 5), DWBlock(mid, mid, 5))
            self.fuse = ConvBN(2 * mid, cout, 1)

        def forward(self, x):
            return self.fuse(torch.cat([self.blocks(self.main(x)), self.short(x)], 1))

    def anchors(size, strides):
        points, scale = [], []
        for s in strides:
            n = size // s
            ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            points.append(torch.stack([xs, ys], -1).reshape(-1, 2).float() * s + s / 2)
            scale.append(torch.full((n * n, 1), float(s)))
        return torch.cat(points), torch.cat(scale)

    class PicoDet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBN(3, 16, 3, 2)
            self.stage1 = nn.Sequential(DWBlock(16, 32, 3, 2), DWBlock(32, 32))  # stride 4
            self.stage2 = nn.Sequential(DWBlock(32, 48, 3, 2), DWBlock(48, 48, se=True))  # 8
            self.stage3 = nn.Sequential(DWBlock(48, 96, 3, 2), DWBlock(96, 96, 5, se=True))  # 16
            self.stage4 = nn.Sequential(DWBlock(96, 160, 3, 2), DWBlock(160, 160, 5, se=True))  # 32
            self.lateral = nn.ModuleList([ConvBN(c, 64, 1) for c in (48, 96, 160)])
            self.top_down = nn.ModuleList([CSPLayer(128, 64), CSPLayer(128, 64)])
            self.down = nn.ModuleList([DWBlock(64, 64, 5, 2), DWBlock(64, 64, 5, 2)])
            self.bottom_up = nn.ModuleList([CSPLayer(128, 64), CSPLayer(128, 64)])
            self.tower = nn.ModuleList(
                [nn.Sequential(DWBlock(64, 96, 5), DWBlock(96, 96, 5)) for _ in STRIDES]
            )
            self.pred = nn.ModuleList([nn.Conv2d(96, NC + 4 * (PICO_REG_MAX + 1), 1) for _ in STRIDES])
            points, scale = anchors(SIZE, STRIDES)
            self.register_buffer("points", points)
            self.register_buffer("scale", scale)
            self.register_buffer("project", torch.arange(PICO_REG_MAX + 1, dtype=torch.float32))

        def forward(self, image):
            c3 = self.stage2(self.stage1(self.stem(image)))
            c4 = self.stage3(c3)
            c5 = self.stage4(c4)
            p3, p4, p5 = (lat(c) for lat, c in zip(self.lateral, (c3, c4, c5)))
            up = nn.functional.interpolate
            p4 = self.top_down[0](torch.cat([up(p5, scale_factor=2.0, mode="nearest"), p4], 1))
            p3 = self.top_down[1](torch.cat([up(p4, scale_factor=2.0, mode="nearest"), p3], 1))
            n4 = self.bottom_up[0](torch.cat([self.down[0](p3), p4], 1))
            n5 = self.bottom_up[1](torch.cat([self.down[1](n4), p5], 1))
            cls, reg = [], []
            for feature, tower, pred in zip((p3, n4, n5), self.tower, self.pred):
                out = pred(tower(feature)).flatten(2).transpose(1, 2)  # [1, HW, NC + 4 (R + 1)]
                cls.append(out[..., :NC])
                reg.append(out[..., NC:])
            scores = torch.sigmoid(torch.cat(cls, 1)).transpose(1, 2)  # [1, NC, N]
            bins = torch.cat(reg, 1).reshape(1, -1, 4, PICO_REG_MAX + 1).softmax(-1)
            distance = torch.matmul(bins, self.project) * self.scale  # [1, N, 4] pixels
            boxes = torch.cat([self.points - distance[..., :2], self.points + distance[..., 2:]], -1)
            return boxes, scores

    class C2f(nn.Module):
        def __init__(self, cin, cout, n=1):
            super().__init__()
            self.c = cout // 2
            self.cv1 = ConvBN(cin, 2 * self.c, 1, act="silu")
            self.blocks = nn.ModuleList(
                [nn.Sequential(ConvBN(self.c, self.c, 3, act="silu"), ConvBN(self.c, self.c, 3, act="silu"))
                 for _ in range(n)]
            )
            self.cv2 = ConvBN((2 + n) * self.c, cout, 1, act="silu")

        def forward(self, x):
            y = list(self.cv1(x).split((self.c, self.c), 1))
            for block in self.blocks:
                y.append(y[-1] + block(y[-1]))
            return self.cv2(torch.cat(y, 1))

    class YOLOv8(nn.Module):
        def __init__(self):
            super().__init__()
            silu = dict(act="silu")
            self.stem = nn.Sequential(ConvBN(3, 16, 3, 2, **silu), ConvBN(16, 32, 3, 2, **silu), C2f(32, 32))
            self.s8 = nn.Sequential(ConvBN(32, 64, 3, 2, **silu), C2f(64, 64))
            self.s16 = nn.Sequential(ConvBN(64, 96, 3, 2, **silu), C2f(96, 96))
            self.s32 = nn.Sequential(ConvBN(96, 128, 3, 2, **silu), C2f(128, 128))
            self.td16, self.td8 = C2f(128 + 96, 96), C2f(96 + 64, 64)
            self.dn16, self.dn32 = ConvBN(64, 64, 3, 2, **silu), ConvBN(96, 96, 3, 2, **silu)
            self.bu16, self.bu32 = C2f(64 + 96, 96), C2f(96 + 128, 128)
            self.box = nn.ModuleList(
                [nn.Sequential(ConvBN(c, 64, 3, **silu), ConvBN(64, 64, 3, **silu), nn.Conv2d(64, 4 * YOLO_BINS, 1))
                 for c in (64, 96, 128)]
            )
            self.cls = nn.ModuleList(
                [nn.Sequential(ConvBN(c, 64, 3, **silu), ConvBN(64, 64, 3, **silu), nn.Conv2d(64, NC, 1))
                 for c in (64, 96, 128)]
            )
            self.dfl = nn.Conv2d(YOLO_BINS, 1, 1, bias=False)
            self.dfl.weight.data[:] = torch.arange(YOLO_BINS, dtype=torch.float32).view(1, YOLO_BINS, 1, 1)
            self.dfl.weight.requires_grad_(False)
            points, scale = anchors(SIZE, STRIDES)
            self.register_buffer("points", points.T.unsqueeze(0))  # [1, 2, N]
            self.register_buffer("scale", scale.T.unsqueeze(0))  # [1, 1, N]

        def forward(self, image):
            up = nn.functional.interpolate
            p8 = self.s8(self.stem(image))
            p16 = self.s16(p8)
            p32 = self.s32(p16)
            t16 = self.td16(torch.cat([up(p32, scale_factor=2.0, mode="nearest"), p16], 1))
            t8 = self.td8(torch.cat([up(t16, scale_factor=2.0, mode="nearest"), p8], 1))
            b16 = self.bu16(torch.cat([self.dn16(t8), t16], 1))
            b32 = self.bu32(torch.cat([self.dn32(b16), p32], 1))
            outs = [torch.cat([box(f), cls(f)], 1).flatten(2) for f, box, cls in zip((t8, b16, b32), self.box, self.cls)]
            out = torch.cat(outs, 2)  # [1, 4 * 16 + NC, N]
            box, cls = out.split((4 * YOLO_BINS, NC), 1)
            n = box.shape[-1]
            bins = box.view(1, 4, YOLO_BINS, n).transpose(2, 1).softmax(1)  # [1, 16, 4, N]
            lt, rb = self.dfl(bins).view(1, 4, n).chunk(2, 1)
            x1y1, x2y2 = self.points / self.scale - lt, self.points / self.scale + rb
            xywh = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], 1) * self.scale
            return torch.cat([xywh, cls.sigmoid()], 1)

    return {"picodet": PicoDet, "yolov8": YOLOv8}


def _set_statistics(torch, model, images: np.ndarray, seed: int) -> None:
    """BN gammas and betas with a trained net's spread (log-normal, 2 outlier channels of 8x per layer), running
    statistics measured on `images`, the detection priors on the last convs."""
    nn = torch.nn
    generator = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        c = bn.num_features
        gamma = torch.exp(0.5 * torch.randn(c, generator=generator))
        gamma[torch.randperm(c, generator=generator)[:2]] *= 8.0
        bn.weight.data = gamma
        bn.bias.data = 0.5 * torch.randn(c, generator=generator)
        bn.momentum = None  # cumulative average over the statistics pass
        bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        for image in images:  # one at a time: the graphs' reshapes are written for batch 1
            model(torch.from_numpy(image[None]))
    model.eval()


def _set_head_priors(torch, model, heads, images: np.ndarray) -> None:
    """Scale each prediction conv's output channels as a trained detector's: class logits with std 1.5 around
    the GFL/YOLO prior -4.6 (scores mostly about 0.01, some cells confident), box-bin logits with std 3 (peaked
    bin distributions). Measured on `images` with hooks on the convs."""
    outputs = {}
    hooks = [conv.register_forward_hook(lambda m, i, o: outputs.setdefault(m, []).append(o.detach()))
             for conv, _, _ in heads]
    with torch.no_grad():
        for image in images:
            model(torch.from_numpy(image[None]))
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for conv, cls, reg in heads:
            out = torch.cat(outputs[conv])
            for channels, std, mean in ((cls, 1.5, -4.6), (reg, 3.0, 0.0)):
                if channels is None:
                    continue
                o = out[:, channels]
                factor = std / o.std((0, 2, 3))
                conv.weight.data[channels] *= factor.view(-1, 1, 1, 1)
                conv.bias.data[channels] = mean - (o.mean((0, 2, 3)) - conv.bias.data[channels]) * factor


@functools.cache
def detector(name: str, seed: int = 0) -> onnx.ModelProto:
    """The `name` ("picodet" or "yolov8") detector as ONNX, statistics set on 32 pages of seed 1000 + seed."""
    import torch

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared
    try:
        model = _modules(torch)[name]()
        _set_statistics(torch, model, pages(32, 1000 + seed), seed)
        if name == "picodet":
            heads = [(pred, slice(0, NC), slice(NC, None)) for pred in model.pred]
        else:
            heads = [(cls[-1], slice(0, NC), None) for cls in model.cls]
            heads += [(box[-1], None, slice(0, 4 * YOLO_BINS)) for box in model.box]
        _set_head_priors(torch, model, heads, pages(8, 2000 + seed))
        buffer = io.BytesIO()
        names = ["boxes", "scores"] if name == "picodet" else ["output"]
        torch.onnx.export(model, (torch.from_numpy(pages(1, 0)),), buffer, input_names=["image"],
                          output_names=names, opset_version=17, dynamo=False)
    finally:
        torch.set_num_threads(threads)
    model_proto = onnx.load_from_string(buffer.getvalue())
    model_proto.ir_version = min(model_proto.ir_version, 8)
    return model_proto
