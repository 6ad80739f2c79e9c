"""`tvmcompress` command line: subcommands parse flags and call `tvmcompress.api`; nothing else lives here.

Exit codes: 0 ok, 2 user error (one line on stderr, no traceback unless --debug), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

from . import __version__
from .errors import TvmcompressError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 with usage text on bad flags; we want exactly one line, like every other user error."""

    def error(self, message: str):
        raise TvmcompressError(f"{message} (see `{self.prog} --help`)")


def _add_shape_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME=D1,D2,...", help="fix an input's dynamic dims"
    )


def _build_parser() -> argparse.ArgumentParser:
    # --debug and -q are global: main() takes them out of argv wherever they stand (argparse subparsers would
    # otherwise reset a flag given before the subcommand). They are declared here for --help only.
    common = _ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser = _ArgumentParser(
        prog="tvmcompress", description="Compile, compress and run ONNX models with TVM.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"tvmcompress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)

    p = sub.add_parser("compile", parents=[common], help="compile an ONNX model into an artifact directory")
    p.add_argument("model", help="path to the .onnx model")
    p.add_argument("-o", "--output", required=True, help="artifact directory to write (replaced atomically)")
    p.add_argument("--target", default="host", help="preset name (see `tvmcompress targets`) or TVM target JSON")
    _add_shape_flags(p)
    p.add_argument(
        "--const-input", action="append", default=[], metavar="NAME=VALUE", help="specialize an input to a constant"
    )
    p.add_argument("--cores", type=int, default=None, help="device core count for parallel code (default: preset's)")
    q = p.add_argument_group("quantization")
    q.add_argument("--quantize", choices=["int8", "fp16", "bf16", "dynamic-int8"], help="lower the model's precision")
    q.add_argument("--calibration", metavar="FILE.npz", help="calibration inputs for --quantize int8")
    q.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy", "mse"], default="minmax")
    q.add_argument("--percentile", type=float, default=99.99, help="for --calibration-method percentile")
    q.add_argument("--exclude", default="", metavar="LAYER,...", help="layers to keep in float (see the report)")
    t = p.add_argument_group("tuning (MetaSchedule, XGBoost cost model)")
    t.add_argument("--tune-trials", type=int, help="measured candidates in total")
    t.add_argument("--tune-minutes", type=float, help="wall-clock tuning budget")
    t.add_argument("--tuning-db", metavar="DIR", help="reuse and extend this tuning database (shared across builds)")
    t.add_argument("--rpc", metavar="HOST:PORT", help="measure on devices of this TVM RPC tracker")
    t.add_argument("--rpc-key", metavar="KEY", help="device key registered with the tracker")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")

    p = sub.add_parser("run", parents=[common], help="run a compiled artifact on inputs from an .npz")
    p.add_argument("artifact", help="artifact directory from `tvmcompress compile`")
    p.add_argument("--inputs", required=True, help=".npz whose keys are input names, samples stacked on axis 0")
    p.add_argument("--output", help="write outputs to this .npz (default: print a summary)")

    p = sub.add_parser("inspect", parents=[common], help="describe an ONNX model: ops, I/O, parameters, MACs, unsupported ops")
    p.add_argument("model", help="path to the .onnx model")
    _add_shape_flags(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("bench", parents=[common], help="time artifacts against ONNX Runtime, interleaved")
    p.add_argument("model", help="path to the .onnx model (ONNX Runtime runs it)")
    p.add_argument("--target", default="host", help="compile the model for this target when no --artifact is given")
    p.add_argument("--artifact", action="append", default=[], help="artifact directory to time (repeatable)")
    _add_shape_flags(p)
    p.add_argument("--ort-int8", action="store_true", help="also time ONNX Runtime static int8 (QDQ, per-channel)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per contender (>= 30)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    p = sub.add_parser("targets", parents=[common], help="list target presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_compile(args) -> int:
    from . import api
    from .config import CompileOptions, parse_const_input, parse_input_shape

    options = CompileOptions.create(
        input_shapes=dict(parse_input_shape(s) for s in args.input_shape),
        const_inputs=dict(parse_const_input(s) for s in args.const_input),
        cores=args.cores,
        tune=_tune_config(args),
        quantize=_quantize_config(args),
        calibration=args.calibration,
    )
    artifact = api.compile(args.model, args.target, output=args.output, options=options)
    if args.json:
        print(json.dumps(artifact.manifest, indent=2, sort_keys=True))
    else:
        sizes = artifact.manifest["sizes"]
        print(
            f"wrote {args.output}: {artifact.manifest['target']['preset']}, "
            f"library {sizes['library_bytes']:,} B, weights {sizes['weights_bytes']:,} B, "
            f"{artifact.manifest['build_seconds']:.1f} s"
        )
    return EXIT_OK


def _tune_config(args):
    from .config import RpcTarget, TuneConfig

    if args.tune_trials is None and args.tune_minutes is None and args.tuning_db is None:
        if args.rpc:
            raise TvmcompressError("--rpc measures tuning candidates: add --tune-trials or --tune-minutes")
        return None
    rpc = RpcTarget.parse(args.rpc, args.rpc_key or "") if args.rpc else None
    db = os.path.abspath(args.tuning_db) if args.tuning_db else None
    return TuneConfig(trials=args.tune_trials, minutes=args.tune_minutes, database_dir=db, rpc=rpc)


def _quantize_config(args):
    from .passes.quantize_config import QuantizeConfig

    if args.quantize is None:
        return None
    exclude = tuple(name for name in args.exclude.split(",") if name)
    return QuantizeConfig(
        mode=args.quantize, calibration_method=args.calibration_method, percentile=args.percentile, exclude=exclude
    )


def _cmd_run(args) -> int:
    import numpy as np

    from . import api
    from .data import load_npz

    artifact = api.load(args.artifact)
    outputs = artifact.run_batches(load_npz(args.inputs))
    if args.output:
        _write_npz_atomically(args.output, outputs, np)
        print(f"wrote {args.output}: " + ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in outputs.items()))
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {list(value.shape)} {value.dtype}, mean {float(np.mean(value)):.6g}")
    return EXIT_OK


def _write_npz_atomically(path: str, arrays: dict[str, Any], np) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise TvmcompressError(f"cannot write '{path}': its directory is missing or not writable")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _cmd_inspect(args) -> int:
    from . import api
    from .config import parse_input_shape

    stats = api.inspect(args.model, dict(parse_input_shape(s) for s in args.input_shape))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    print(format_stats(stats))
    return EXIT_OK


def format_stats(stats: dict[str, Any]) -> str:
    lines = ["inputs:"]
    lines += [f"  {t['name']}: {t['dtype']} {t['shape']}" for t in stats["inputs"]]
    lines.append("outputs:")
    lines += [f"  {t['name']}: {t['dtype']} {t['shape']}" for t in stats["outputs"]]
    lines.append(f"parameters: {stats['parameters']['count']:,} ({stats['parameters']['bytes']:,} bytes)")
    lines.append("ops:")
    lines += [f"  {op:<24} {n}" for op, n in sorted(stats["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0]))]
    lines.append(f"MACs: {stats['macs']['total']:,}")
    lines += [f"  {op:<24} {n:,}" for op, n in sorted(stats["macs"]["by_layer_type"].items())]
    unsupported = stats.get("unsupported_ops", [])
    lines.append(f"unsupported ops: {', '.join(unsupported) if unsupported else 'none'}")
    return "\n".join(lines)


def _cmd_bench(args) -> int:
    import tempfile

    from . import api
    from .bench import BenchConfig, benchmark, format_table, rows_to_json
    from .config import CompileOptions, parse_input_shape

    config = BenchConfig(runs=args.runs, threads=args.threads, ort_int8=args.ort_int8)
    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    with tempfile.TemporaryDirectory(prefix="tvmcompress-bench-") as tmp:
        artifacts = {directory: directory for directory in args.artifact}
        if not artifacts:
            out = os.path.join(tmp, "build")
            api.compile(args.model, args.target, output=out, options=CompileOptions.create(input_shapes=shapes))
            artifacts[f"{args.target} (default build)"] = out
        rows = benchmark(args.model, artifacts, config, input_shapes=shapes)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows_to_json(rows, config), f, indent=2)
    return EXIT_OK


def _cmd_targets(args) -> int:
    from . import api

    targets = api.list_targets()
    if args.json:
        print(json.dumps(targets, indent=2))
        return EXIT_OK
    for t in targets:
        print(f"{t['name']:<16} {t['description']}")
        print(f"{'':<16} compiler {t['compiler']} (Debian: {t['debian_package']}), runs here: {t['runner']}")
    return EXIT_OK


_GLOBAL_FLAGS = ("--debug", "-q", "--quiet")
_COMMANDS = {
    "compile": _cmd_compile,
    "run": _cmd_run,
    "inspect": _cmd_inspect,
    "bench": _cmd_bench,
    "targets": _cmd_targets,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = "-q" in argv or "--quiet" in argv
    argv = [a for a in argv if a not in _GLOBAL_FLAGS]
    try:
        args = _build_parser().parse_args(argv)
        level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        return _COMMANDS[args.command](args)
    except TvmcompressError as err:
        if debug:
            raise
        print(f"tvmcompress: error: {err}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("tvmcompress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
