"""Minimal reproductions of bugs the corpus turned up, beyond those issue 17 lists (each was a strict xfail until its fix landed; now plain regression tests).
The dotted-input-name one (torch's "input.1") is tests/e2e/test_regression_dotted_input_name.py."""

from __future__ import annotations

import io
import warnings

import numpy as np

import tvmcompress


def test_fire_module_concat_with_winograd_matches_onnxruntime(tmp_path):
    """SqueezeNet 1.1's features.9 at 64x64 input, cut down to one Fire module; the corpus's squeezenet1_1 is
    wrong from its first such Concat on. With 16 or 64 channels it is right: the size matters."""
    import torch
    import onnxruntime as ort

    class Fire(torch.nn.Module):
        def __init__(self, cin=256, squeeze=48, expand=192):
            super().__init__()
            self.squeeze = torch.nn.Conv2d(cin, squeeze, 1)
            self.e1, self.e3 = torch.nn.Conv2d(squeeze, expand, 1), torch.nn.Conv2d(squeeze, expand, 3, padding=1)

        def forward(self, x):
            x = torch.relu(self.squeeze(x))
            return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)

    torch.manual_seed(0)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Fire().eval(), (torch.randn(1, 256, 3, 3),), buf, opset_version=13, dynamo=False,
                          input_names=["x"])
    path = tmp_path / "fire.onnx"
    path.write_bytes(buf.getvalue())
    x = np.random.default_rng(0).standard_normal((1, 256, 3, 3)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = list(tvmcompress.compile(str(path), "host", output=str(tmp_path / "out")).run({"x": x}).values())[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
