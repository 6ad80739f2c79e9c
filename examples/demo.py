"""The quickstart demo: compile the bundled digits CNN for this machine and for aarch64, run both, and compare
their accuracy on 360 held-out digits with ONNX Runtime's.

    python examples/demo.py [--out-dir build/demo]

The aarch64 build runs under qemu-aarch64 with the aarch64 TVM runtime (fetched from PyPI and cached on first use).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

import tvmcompress
from tvmcompress.data import load_npz

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "digits_cnn.onnx")
DATA = os.path.join(HERE, "digits_test.npz")


def onnxruntime_logits(images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": images[i : i + 1]})[0] for i in range(len(images))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(HERE), "build", "demo"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.makedirs(args.out_dir, exist_ok=True)

    data = load_npz(DATA)
    images, labels = data["input"], data["label"]
    reference = onnxruntime_logits(images)
    rows = [("onnxruntime (fp32, x86-64)", reference, None)]

    for target in ("host", "aarch64"):
        start = time.perf_counter()
        artifact = tvmcompress.compile(MODEL, target, output=os.path.join(args.out_dir, target))
        built = time.perf_counter() - start
        start = time.perf_counter()
        logits = artifact.run_batches({"input": images})["logits"]
        ran = time.perf_counter() - start
        how = "native" if target == "host" else "under qemu-aarch64"
        rows.append((f"tvmcompress {target} ({how})", logits, f"built {built:.1f} s, ran {ran:.1f} s"))

    print(f"\n{os.path.relpath(MODEL)}: {len(labels)} held-out digits")
    print(f"{'runtime':<40} {'accuracy':>9} {'max |diff| vs ORT':>18}  notes")
    for name, logits, note in rows:
        accuracy = float((logits.argmax(1) == labels).mean())
        diff = "-" if note is None else f"{float(np.abs(logits - reference).max()):.2e}"
        print(f"{name:<40} {accuracy:>8.2%} {diff:>18}  {note or ''}")


if __name__ == "__main__":
    main()
