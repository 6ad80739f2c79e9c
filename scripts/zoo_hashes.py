"""Record the sha256 of model.so for every zoo model (tests/zoo.py) under a handful of option sets.

A refactoring that must not change what gets built runs this before and after and compares the two JSON files:

    nice -n 19 .venv/bin/python scripts/zoo_hashes.py before.json
    ... change the code ...
    nice -n 19 .venv/bin/python scripts/zoo_hashes.py after.json --compare before.json

An option set a model does not support records its one-line error instead of a hash, so that the error must stay
the same too. Tuning is not in the matrix: it measures on this machine, so its result is not reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import tvmcompress  # noqa: E402
from tvmcompress.config import CompileOptions  # noqa: E402
from tvmcompress.passes.prune_config import PruneConfig  # noqa: E402
from tvmcompress.passes.quantize_config import QuantizeConfig  # noqa: E402

import zoo  # noqa: E402 - tests/ is not a package

# name -> CompileOptions.create keyword arguments; "CAL"/"EVAL" become the paths of the model's data files.
OPTION_SETS: dict[str, dict] = {
    "default": {},
    "int8": {"quantize": QuantizeConfig(mode="int8"), "calibration": "CAL"},
    "int8-smoothquant": {"quantize": QuantizeConfig(mode="int8", smoothquant=0.5), "calibration": "CAL"},
    "pruned": {"prune": PruneConfig.parse("channel:0.5"), "calibration": "CAL"},
    "pruned-block": {"prune": PruneConfig.parse("block:0.75:1x4")},
    # The same with the BSR kernel never chosen: whether pruned-block runs sparse kernels is measured (timing on
    # a busy machine can go either way), so only this variant's hash is reproducible from run to run.
    "pruned-block-dense": {"prune": PruneConfig.parse("block:0.75:1x4"), "sparse_min_speedup": 1e9},
    "clustered": {"cluster_bits": 4},
    "int8-weight": {"quantize": QuantizeConfig(mode="int8-weight")},
    "fp16": {"quantize": QuantizeConfig(mode="fp16")},
    "pruned-clustered-int8": {"prune": PruneConfig.parse("unstructured:0.5"), "cluster_bits": 6,
                              "quantize": QuantizeConfig(mode="int8"), "calibration": "CAL"},
    "int8-eval": {"quantize": QuantizeConfig(mode="int8"), "calibration": "CAL", "eval_data": "EVAL"},
}


def _data(model: onnx.ModelProto, shapes: dict, path: str, calls: int, seed: int) -> str:
    stacked: dict[str, list] = {}
    for i in range(calls):
        for name, value in zoo.random_inputs(model, shapes, seed=seed + i).items():
            stacked.setdefault(name, []).append(value)
    np.savez(path, **{name: np.concatenate(values) for name, values in stacked.items()})
    return path


def record(only: set[str] | None) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, shapes) in zoo.ZOO.items():
            model = build()
            model_path = os.path.join(tmp, f"{name}.onnx")
            onnx.save(model, model_path)
            cal = _data(model, shapes, os.path.join(tmp, f"{name}_cal.npz"), 8, 10)
            evaluation = _data(model, shapes, os.path.join(tmp, f"{name}_eval.npz"), 4, 100)
            for set_name, kwargs in OPTION_SETS.items():
                if only and set_name not in only:
                    continue
                kwargs = {k: {"CAL": cal, "EVAL": evaluation}.get(v, v) if isinstance(v, str) else v
                          for k, v in kwargs.items()}
                out = os.path.join(tmp, f"{name}-{set_name}")
                try:
                    options = CompileOptions.create(input_shapes=shapes, **kwargs)
                    artifact = tvmcompress.compile(model_path, "host", output=out, options=options)
                    with open(artifact.library_path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                except tvmcompress.TvmcompressError as err:
                    digest = f"error: {err}".replace(tmp, "TMP")
                except Exception as err:  # noqa: BLE001 - a crash is recorded too: it must stay the same crash
                    digest = f"crash: {type(err).__name__}: {str(err).splitlines()[0][:120]}".replace(tmp, "TMP")
                results.setdefault(name, {})[set_name] = digest
                print(f"{name:16s} {set_name:24s} {digest}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="JSON file to write {model: {option set: sha256 or error}}")
    parser.add_argument("--compare", metavar="BEFORE.json", help="exit 1 when any entry differs from this file")
    parser.add_argument("--only", default="", help="comma-separated option sets (default: all)")
    args = parser.parse_args()
    results = record({s for s in args.only.split(",") if s} or None)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        differ = [(m, s) for m in results for s in results[m] if before.get(m, {}).get(s) != results[m][s]]
        for model, set_name in differ:
            print(f"DIFFERS {model} {set_name}: {before.get(model, {}).get(set_name)} -> {results[model][set_name]}")
        print(f"{sum(len(v) for v in results.values()) - len(differ)} identical, {len(differ)} different")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
