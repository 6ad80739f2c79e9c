"""`tvmcompress` command line: subcommands parse flags and call `tvmcompress.api`; nothing else lives here.

Exit codes: 0 ok, 2 user error (one line on stderr, no traceback unless --debug), 1 internal error, 130 after
Ctrl-C; SIGTERM and SIGHUP end it by that signal (exit status 143 and 129 in a shell) once what it was writing
is removed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any, Sequence

from . import __version__
from .errors import OptionError, TvmcompressError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, like Ctrl-C's KeyboardInterrupt: the `with` blocks that
    write OUT (ArtifactWriter) and the cache remove their temporary directories on the way out. A
    KeyboardInterrupt subclass, so code that already lets Ctrl-C through lets these through too."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _install_signal_handlers(received: list[int]) -> dict:
    """Route SIGTERM/SIGHUP to _Terminated and SIGINT to KeyboardInterrupt, noting each in `received`: TVM turns
    an exception raised inside a Python callback it called into a RuntimeError, and main() must still see the
    interrupt behind it. Returns the handlers to put back (main() may run inside a program)."""
    import threading

    def on_signal(signum, _frame):
        received.append(signum)
        raise KeyboardInterrupt() if signum == signal.SIGINT else _Terminated(signum)

    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # only the main thread may set handlers; Python runs them there anyway
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(signum)
        # An ignored signal stays ignored (`nohup tvmcompress ...`, SIGINT in a background job); a program that
        # set its own SIGINT handler keeps it.
        if handler is signal.SIG_IGN or signum == signal.SIGINT and handler is not signal.default_int_handler:
            continue
        previous[signum] = handler
        signal.signal(signum, on_signal)
    return previous


def _interrupted(signum: int) -> int:
    if signum == signal.SIGINT:
        print("tvmcompress: interrupted", file=sys.stderr)
        return 130
    print(f"tvmcompress: terminated by {signal.Signals(signum).name}", file=sys.stderr)
    _die_by(signum)
    return 128 + signum  # not reached: the signal ends the process


def _die_by(signum: int) -> None:
    """End the process by `signum` itself, so the caller sees the signal (not an exit code) as the cause."""
    logging.shutdown()
    sys.stdout.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 with usage text on bad flags; we want exactly one line, like every other user error."""

    def error(self, message: str):
        raise TvmcompressError(f"{message} (see `{self.prog} --help`)")


class _PrintCmakeDir(argparse.Action):
    """`tvmcompress --cmake-dir`: like --version, it prints and exits, whatever else is on the line."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cmake"))
        parser.exit(EXIT_OK)


def _add_shape_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME=D1,D2,...", help="fix an input's dynamic dims"
    )


def _add_verify_flags(parser: argparse.ArgumentParser) -> None:
    v = parser.add_argument_group("verification (against ONNX Runtime on the source model)")
    v.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not run the build against ONNX Runtime (the manifest says verification: none)")
    v.add_argument("--min-sqnr", type=float, metavar="DB",
                   help="quality floor of compressed builds: each output's SQNR against the float model in dB "
                        "(default 10); static int8 below it returns its most sensitive layers to float, "
                        "others fail")


def _build_parser() -> argparse.ArgumentParser:
    # --debug, -q and -v are global: main() takes them out of argv wherever they stand (argparse subparsers would
    # otherwise reset a flag given before the subcommand). They are declared here for --help only.
    common = _ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", help="only errors: no progress, no warnings")
    common.add_argument("-v", "--verbose", action="store_true", help="progress logs even when stderr is not a terminal, and TVM's and MetaSchedule's own output")
    parser = _ArgumentParser(
        prog="tvmcompress", description="Compile, compress and run ONNX models with TVM.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"tvmcompress {__version__}")
    parser.add_argument(
        "--cmake-dir", action=_PrintCmakeDir,
        help="print the folder of tvmcompress's CMake package (for -Dtvmcompress_DIR=...) and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)

    p = sub.add_parser("compile", parents=[common], help="compile an ONNX model into an artifact directory")
    p.add_argument("model", nargs="?",
                   help="path to the .onnx model, or a .pt2 saved by torch.export.save (needs the torch extra)")
    p.add_argument("-o", "--output", required=True, help="artifact directory to write (replaced atomically)")
    e = p.add_argument_group("ensemble (instead of MODEL: `tvmcompress merge` and compile in one step)")
    e.add_argument("--ensemble", metavar="A.onnx,B.onnx,...", help="merge these models into one graph and compile it")
    e.add_argument("--combine", default="mean", metavar="HOW",
                   help="mean, vote, weighted:W1,W2,..., concat or stack (default mean)")
    e.add_argument("--input-map", action="append", default=[], metavar="MEMBER:THEIRS=OURS",
                   help="rename input THEIRS of member MEMBER (1-based) to OURS")
    # None, not "host": a --target given with --recipe must be told from the default (host, or the recipe's).
    p.add_argument("--target", default=None, help="preset name (see `tvmcompress targets`) or TVM target JSON "
                                                  "(default: host, or the recipe's)")
    _add_shape_flags(p)
    p.add_argument(
        "--dim", action="append", default=[], metavar="NAME=MIN..MAX",
        help="a symbolic dim that --input-shape names (x=N,3,H,W): one artifact runs every size in the range; "
             "an inline range (x=1..8,3,224,224) works too",
    )
    p.add_argument(
        "--const-input", action="append", default=[], metavar="NAME=VALUE", help="specialize an input to a constant"
    )
    p.add_argument("--cores", type=int, default=None, help="device core count for parallel code (default: preset's)")
    q = p.add_argument_group("quantization")
    q.add_argument("--quantize", choices=["int8", "fp16", "bf16", "dynamic-int8", "int8-weight", "int4-weight",
                                          "ternary-weight", "binary-weight"],
                   help="lower the model's precision")
    q.add_argument("--calibration", metavar="FILE.npz", help="calibration inputs for --quantize int8 and --prune")
    q.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy", "mse"], default="minmax")
    q.add_argument("--percentile", type=float, default=99.99, help="for --calibration-method percentile")
    q.add_argument("--exclude", default="", metavar="LAYER,...", help="layers to keep in float (see the report)")
    q.add_argument("--no-bias-correction", action="store_true",
                   help="int8: do not add back each layer's mean output error from weight rounding (on by default)")
    q.add_argument("--smoothquant", type=float, metavar="ALPHA",
                   help="int8/dynamic-int8: move activation outlier channels into the matmul weights (SmoothQuant, "
                        "0 < ALPHA < 1, 0.5 is typical; measured on --calibration)")
    q.add_argument("--eval-data", metavar="FILE.npz",
                   help="evaluation inputs (+ optional 'label') that --accuracy-budget and --prune-budget measure on")
    q.add_argument("--accuracy-budget", type=float, metavar="POINTS",
                   help="int8 may lose at most POINTS of top-1 accuracy (agreement with fp32 without labels) on "
                        "--eval-data; the most sensitive layers return to float until it holds")
    pr = p.add_argument_group("pruning")
    pr.add_argument("--prune", metavar="SPEC", help="channel:R, unstructured:S[:global], layer:K, block:S:RxC, N:M "
                    "(comma-separated); --calibration enables reconstruction")
    pr.add_argument("--prune-criterion", choices=["l1", "l2", "bn", "activation"], default="l1",
                    help="how channels/weights are ranked (activation needs --calibration)")
    pr.add_argument("--no-reconstruct", action="store_true",
                    help="do not re-fit weights by least squares on the --calibration data after pruning")
    pr.add_argument("--prune-budget", type=float, metavar="POINTS",
                    help="pruning may lose at most POINTS of top-1 accuracy (agreement without labels) on "
                         "--eval-data: each channel group / layer's ratio (the spec's, half of it or 0) is chosen "
                         "from its measured sensitivity")
    d = p.add_argument_group("distillation")
    d.add_argument("--distill", action="store_true",
                   help="after pruning/clustering/quantization, fine-tune the compressed model to match the float "
                        "one on --train-data (or --calibration); labels are used when the .npz has 'label'")
    d.add_argument("--distill-minutes", type=float, metavar="M",
                   help="wall-clock budget of --distill (default 3)")
    d.add_argument("--train-data", metavar="FILE.npz", help="inputs (+ optional 'label') that --distill trains on")
    t = p.add_argument_group("tuning (MetaSchedule, XGBoost cost model)")
    t.add_argument("--tune-trials", type=int, help="measured candidates in total")
    t.add_argument("--tune-minutes", type=float, help="wall-clock tuning budget")
    t.add_argument("--tuning-db", metavar="DIR", help="reuse and extend this tuning database (shared across builds)")
    t.add_argument("--rpc", metavar="HOST:PORT", help="measure on devices of this TVM RPC tracker")
    t.add_argument("--rpc-key", metavar="KEY", help="device key registered with the tracker")
    p.add_argument(
        "--no-winograd", dest="winograd", action="store_false",
        help="keep 3x3 convolutions direct on CPU: Winograd's transformed weights take 1.8-4x the bytes of those "
             "layers, and its float32 rounding differs from a direct convolution (~5e-6 relative)",
    )
    _add_verify_flags(p)
    p.add_argument(
        "--allow-nonfinite-weights", action="store_true",
        help="compile a model whose weights hold NaN or Inf (rejected by default: they make every output NaN)",
    )
    p.add_argument(
        "--separate-weights", action="store_true",
        help="write the weights to OUT/weights.bin, loaded at run time, instead of embedding them in model.so",
    )
    w = p.add_argument_group("weight compression and sparse kernels")
    w.add_argument("--cluster-bits", type=int, metavar="B",
                   help="k-means weight sharing: at most 2^B distinct values per conv/matmul weight (1-8)")
    w.add_argument("--compress-weights", action="store_true",
                   help="entropy-code the weights into OUT/weights.bin (implies --separate-weights); "
                        "decoded at load time")
    w.add_argument("--sparse-min-speedup", type=float, default=1.2, metavar="X",
                   help="run a block-sparse matmul as a BSR kernel only where it measures X times faster than "
                        "dense (default 1.2)")
    c = p.add_argument_group("cache and budgets")
    c.add_argument(
        "--cache-dir", metavar="DIR", help="reuse an identical earlier build from this artifact cache (and add this one)"
    )
    c.add_argument("--cache", action="store_true", help="use the default cache ($XDG_CACHE_HOME/tvmcompress/artifacts)")
    c.add_argument("--max-ram", metavar="BYTES", help="fail (exit 2) if peak activation memory exceeds this (e.g. 256K)")
    c.add_argument("--max-flash", metavar="BYTES", help="fail (exit 2) if library + weights + runtime exceed this (e.g. 8M)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (artifact, sizes, memory, cache hit) on stdout")
    p.add_argument("--recipe", metavar="FILE.toml",
                   help="target and options from a recipe (`tvmcompress recipe OUT` prints one); flags given as "
                        "well override it")

    p = sub.add_parser("recipe", parents=[common], help="print the recipe (TOML) that an artifact was compiled with")
    p.add_argument("artifact", help="artifact directory from `tvmcompress compile`")

    p = sub.add_parser(
        "debug", parents=[common],
        help="find the first tensor where the build and ONNX Runtime disagree (bisects the graph; compile's flags)",
    )
    p.add_argument("model", help="path to the .onnx model")
    p.add_argument("compile_options", nargs=argparse.REMAINDER, metavar="[compile options]",
                   help="--target, --input-shape, --no-winograd, --quantize ... as for compile (no -o); "
                        "--json prints the report as JSON")

    p = sub.add_parser("run", parents=[common], help="run a compiled artifact on inputs from an .npz")
    p.add_argument("artifact", help="artifact directory from `tvmcompress compile`")
    p.add_argument("--inputs", required=True, help=".npz whose keys are input names, samples stacked on axis 0")
    p.add_argument("--output", help="write outputs to this .npz (default: print a summary)")

    p = sub.add_parser(
        "inspect", parents=[common],
        help="describe an ONNX model (ops, I/O, parameters, MACs, unsupported ops) or an artifact directory (sizes, memory)",
    )
    p.add_argument("model", help="path to the .onnx model, or an artifact directory from `tvmcompress compile`")
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

    p = sub.add_parser("cache", parents=[common], help="show or clear the artifact cache of --cache / --cache-dir")
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--cache-dir", metavar="DIR", help="the cache directory (default: $XDG_CACHE_HOME/tvmcompress/artifacts)")
    p.add_argument(
        "--all", action="store_true", help="clear: all of $XDG_CACHE_HOME/tvmcompress (also prepared foreign runtimes)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("export", parents=[common], help="write a deploy bundle (C API, TVM runtime, CMake) of an artifact")
    p.add_argument("artifact", help="artifact directory from `tvmcompress compile`")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write (replaced atomically)")
    p.add_argument("--static", action="store_true", help="link the model into lib<name>.a instead of shipping model.so")
    p.add_argument("--name", help="C name of the model's API (<name>_create, ...); default: the model file's name")
    p.add_argument("--aot", action="store_true",
                   help="ahead-of-time C program over one static arena: no Relax VM, no TVM runtime library")
    p.add_argument("--board", metavar="NAME",
                   help="with --aot: build for a microcontroller (cortex-m4, cortex-m7, cortex-m55) instead of the "
                        "artifact's target, with a bare-metal firmware/ that runs under qemu-system-arm")
    p.add_argument("--keep-checks", action="store_true",
                   help="with --aot: keep the kernels' run-time assertions (argument and index checks; larger code)")
    p.add_argument("--max-ram", metavar="BYTES", help="with --aot: fail (exit 2) if the arena exceeds this (e.g. 32K)")
    p.add_argument("--max-flash", metavar="BYTES",
                   help="with --aot: fail (exit 2) if code + weights exceed this (e.g. 64K)")
    p.add_argument("--json", action="store_true", help="print bundle path, files and sizes as JSON")

    p = sub.add_parser(
        "analyze", parents=[common], help="int8 sensitivity per layer: output SQNR and the metric with it alone quantized"
    )
    p.add_argument("model", help="path to the .onnx model")
    p.add_argument("--calibration", required=True, metavar="FILE.npz", help="calibration inputs")
    p.add_argument("--eval-data", metavar="FILE.npz", help="evaluation inputs (+ optional 'label'); default: calibration")
    p.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy", "mse"], default="minmax")
    p.add_argument("--percentile", type=float, default=99.99, help="for --calibration-method percentile")
    p.add_argument("--no-bias-correction", action="store_true", help="measure int8 without bias correction")
    _add_shape_flags(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("merge", parents=[common],
                       help="merge ONNX models on the same inputs into one graph whose outputs combine theirs")
    p.add_argument("models", nargs="+", help="the member .onnx models (2 or more)")
    p.add_argument("-o", "--output", required=True, help="the merged .onnx to write")
    p.add_argument("--combine", default="mean", metavar="HOW",
                   help="mean, vote, weighted:W1,W2,... (one weight per model), concat (last axis) or stack (new "
                        "leading axis); default mean")
    p.add_argument("--input-map", action="append", default=[], metavar="MEMBER:THEIRS=OURS",
                   help="rename input THEIRS of member MEMBER (1-based) to OURS, for members whose input names differ")
    p.add_argument("--eval-data", metavar="FILE.npz",
                   help="inputs + 'label': print each member's and the ensemble's top-1 accuracy (ONNX Runtime)")
    p.add_argument("--json", action="store_true", help="print what was merged (and accuracies) as JSON")

    p = sub.add_parser("report", parents=[common],
                       help="regenerate an artifact's report.html, or compare artifacts side by side")
    p.add_argument("artifact", help="artifact directory from `tvmcompress compile`")
    p.add_argument("--compare", nargs="+", default=[], metavar="OUT2",
                   help="more artifact directories: print size, memory, latency and accuracy side by side")
    p.add_argument("--html", metavar="FILE", help="with --compare: also write the comparison as a page")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--time", action="store_true",
                   help="with --compare: also time one call of each artifact that runs here (median of 30, zero inputs)")

    p = sub.add_parser("targets", parents=[common], help="list target presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_compile(args) -> int:
    import time

    from .config import Budgets, parse_bytes

    start = time.perf_counter()
    model = _compile_model(args)
    args.target, options = _compile_target_and_options(args)
    budgets = Budgets(
        max_ram_bytes=parse_bytes(args.max_ram, "--max-ram") if args.max_ram else None,
        max_flash_bytes=parse_bytes(args.max_flash, "--max-flash") if args.max_flash else None,
    )
    cache_dir = args.cache_dir
    if cache_dir is None and args.cache:
        from .cache import default_cache_dir

        cache_dir = default_cache_dir()
    from .artifact import check_output_dir_writable
    from .cache import files_read

    # Before TVM and ONNX load (seconds): a refused -o answers at once. api.compile checks again.
    members = args.ensemble.split(",") if args.ensemble else [args.model]
    check_output_dir_writable(args.output, [*(p for m in members for p in files_read(m, options)),
                                            *([cache_dir] if cache_dir else [])])
    artifact = None
    if cache_dir is not None:
        from .cache import lookup

        # A hit without importing tvmcompress.api (ONNX, numpy): the whole command stays well under a second.
        _key, artifact = lookup(cache_dir, model(), args.target, options, args.output, budgets)
    if artifact is None:
        from . import api

        artifact = api.compile(
            model(), args.target, output=args.output, options=options, cache_dir=cache_dir, budgets=budgets
        )
    if args.json:
        summary = artifact_summary(artifact)
        summary["cache_hit"] = artifact.cache_hit
        summary["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        sizes = artifact.manifest["sizes"]
        how = "from the cache" if artifact.cache_hit else f"{artifact.manifest['build_seconds']:.1f} s"
        print(
            f"wrote {args.output}: {artifact.manifest['target']['preset']}, "
            f"library {sizes['library_bytes']:,} B, weights {sizes['weights_bytes']:,} B, {how}"
        )
    return EXIT_OK


# Each compile flag -> the CompileOptions field it sets (`recipe` replaces a field wholesale where any of its flags
# is given), and the flag that error messages name for a field (errors.OptionError).
_FLAG_FIELDS = {
    "input_shape": "input_shapes", "dim": "dims", "const_input": "const_inputs", "cores": "cores",
    "tune_trials": "tune", "tune_minutes": "tune", "tuning_db": "tune", "rpc": "tune", "rpc_key": "tune",
    "quantize": "quantize", "calibration_method": "quantize", "percentile": "quantize", "exclude": "quantize",
    "no_bias_correction": "quantize", "smoothquant": "quantize", "calibration": "calibration",
    "prune": "prune", "prune_criterion": "prune", "no_reconstruct": "prune", "separate_weights": "separate_weights",
    "cluster_bits": "cluster_bits", "compress_weights": "compress_weights",
    "sparse_min_speedup": "sparse_min_speedup", "eval_data": "eval_data", "accuracy_budget": "accuracy_budget",
    "prune_budget": "prune_budget", "winograd": "winograd", "verify": "verify",
    "allow_nonfinite_weights": "allow_nonfinite_weights", "min_sqnr": "min_sqnr",
    "distill": "distill", "distill_minutes": "distill", "train_data": "train_data",
}
FIELD_FLAGS = {
    "input_shapes": "--input-shape", "dims": "--dim", "const_inputs": "--const-input", "prune.criterion": "--prune-criterion",
    "tune.trials": "--tune-trials", "tune.minutes": "--tune-minutes", "tune.database_dir": "--tuning-db",
    "tune.min_speedup": "min_speedup", "winograd": "--no-winograd",
    "max_ram_bytes": "--max-ram", "max_flash_bytes": "--max-flash",
}


def _compile_target_and_options(args):
    """(target, CompileOptions) of `compile`: its flags, over the recipe of --recipe when one is given."""
    if not getattr(args, "recipe", None):
        return (args.target if args.target is not None else "host"), _compile_options(args)
    from . import recipe
    from .config import CompileOptions

    target, base = recipe.read(args.recipe)
    defaults = _build_parser().parse_args(["compile", *([args.model] if args.model else []), "-o", args.output])
    given = {dest for dest in _FLAG_FIELDS if getattr(args, dest) != getattr(defaults, dest)}
    flags, fields = _flag_fields(args), base.to_dict()
    for field in sorted({_FLAG_FIELDS[dest] for dest in given}):
        value = flags[field]
        is_path = field in ("calibration", "eval_data", "train_data") and value
        fields[field] = os.path.abspath(value) if is_path else value
    if flags["compress_weights"]:  # it implies --separate-weights, as in CompileOptions.create
        fields["separate_weights"] = True
    return (args.target if args.target is not None else target), CompileOptions.from_dict(fields)


def _compile_model(args):
    """What `compile` builds, on first call: the MODEL path, or the --ensemble merged (as ONNX bytes)."""
    if (args.model is None) == (args.ensemble is None):
        raise TvmcompressError("compile takes a MODEL or --ensemble A.onnx,B.onnx,... (one of them)")
    if args.model is not None:
        if args.input_map or args.combine != "mean":
            raise TvmcompressError("--combine and --input-map go with --ensemble")
        return lambda: args.model
    import functools

    @functools.cache
    def merged() -> bytes:
        from .merge import merge_files

        return merge_files(args.ensemble.split(","), args.combine, args.input_map).SerializeToString()

    return merged


def _cmd_merge(args) -> int:
    from .merge import ensemble_accuracy, load_members, merge_files, merge_record, write_model

    merged = merge_files(args.models, args.combine, args.input_map)
    record = merge_record(merged)
    if args.eval_data:
        from .data import load_npz

        record["accuracy"] = ensemble_accuracy(load_members(args.models), merged, args.models,
                                               load_npz(args.eval_data))
    write_model(merged, args.output, args.models)
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"wrote {args.output}: {len(args.models)} models, combine {args.combine}; shared "
          f"{record['initializers_shared']} initializers and {record['nodes_shared']} nodes")
    if "accuracy" in record:
        accuracy = record["accuracy"]
        for name, value in accuracy["members"].items():
            print(f"  {name}: top-1 {value:.2f}%")
        print(f"  ensemble: top-1 {accuracy['ensemble']:.2f}% ({accuracy['samples']} samples)")
    return EXIT_OK


def _compile_options(args):
    """CompileOptions from the parsed flags of `compile` (which `debug` takes too)."""
    from .config import CompileOptions

    return CompileOptions.create(**_flag_fields(args))


def _flag_fields(args) -> dict:
    """CompileOptions.create's arguments from the flags of `compile`."""
    from .config import parse_const_input
    from .dynamic_shapes import parse_shape_flags

    # Fixed dims, ranges (x=1..8,3,224,224) and --dim symbols (x=N,3,H,W): dynamic_shapes.py.
    input_shapes, dims = parse_shape_flags(args.input_shape, getattr(args, "dim", []))
    return dict(
        input_shapes=input_shapes,
        dims=dims,
        const_inputs=dict(parse_const_input(s) for s in args.const_input),
        cores=args.cores,
        tune=_tune_config(args),
        quantize=_quantize_config(args),
        calibration=args.calibration,
        prune=_prune_config(args),
        separate_weights=args.separate_weights,
        cluster_bits=args.cluster_bits,
        compress_weights=args.compress_weights,
        sparse_min_speedup=args.sparse_min_speedup,
        eval_data=args.eval_data,
        accuracy_budget=args.accuracy_budget,
        prune_budget=args.prune_budget,
        winograd=args.winograd,
        verify=args.verify,
        allow_nonfinite_weights=args.allow_nonfinite_weights,
        min_sqnr=args.min_sqnr,
        distill=_distill_config(args),
        train_data=args.train_data,
    )


def _distill_config(args):
    from .passes.distill_config import DistillConfig

    if not args.distill:
        if args.distill_minutes is not None:
            raise TvmcompressError("--distill-minutes is the budget of --distill: add --distill or drop it")
        return None
    return DistillConfig(minutes=args.distill_minutes) if args.distill_minutes is not None else DistillConfig()


def _cmd_debug(args) -> int:
    from .debug import find_first_disagreement, format_report

    # `debug MODEL [compile options]`: the compile parser reads them, so both commands take the same flags.
    compile_args = _build_parser().parse_args(["compile", args.model, "-o", os.devnull, *args.compile_options])
    report = find_first_disagreement(args.model, compile_args.target if compile_args.target is not None else "host",
                                     _compile_options(compile_args))
    print(json.dumps(report.to_json(), indent=2, sort_keys=True) if compile_args.json else format_report(report))
    return EXIT_OK


def artifact_summary(artifact) -> dict[str, Any]:
    """The numbers of an artifact for `compile --json` and `inspect --json` (a stable subset of the manifest)."""
    manifest = artifact.manifest
    target = manifest["target"]
    return {
        "artifact": artifact.directory,
        "target": {k: target.get(k) for k in ("preset", "arch", "runner", "isa_features")},
        "inputs": manifest["inputs"],
        "outputs": manifest["outputs"],
        "sizes": manifest["sizes"],
        "memory": manifest.get("memory"),
        **({"dynamic_dims": manifest["dynamic_dims"]} if manifest.get("dynamic_dims") else {}),
        "build_seconds": manifest["build_seconds"],
        "versions": manifest["versions"],
    }


def format_artifact(summary: dict[str, Any]) -> str:
    sizes, memory, target = summary["sizes"], summary.get("memory") or {}, summary["target"]

    def number(value) -> str:
        return "unknown" if value is None else f"{value:,} B"

    lines = [f"artifact: {summary['artifact']}"]
    lines.append(f"target: {target['preset']} ({target['arch']}, runs here: {target['runner']})")
    lines.append(f"ISA features: {', '.join(target.get('isa_features') or []) or 'none recorded'}")
    def dims(t) -> str:
        # A dynamic artifact's dims (symbols, 'W // 4') with their largest shape (dynamic_shapes.py).
        return f" = [{', '.join(map(str, t['dims']))}], largest {t['shape']}" if "dims" in t else f" {t['shape']}"

    lines += [f"input {t['name']}: {t['dtype']}{dims(t)}" for t in summary["inputs"]]
    lines += [f"output {t['name']}: {t['dtype']}{dims(t)}" for t in summary["outputs"]]
    if summary.get("dynamic_dims"):
        lines.append("dynamic dims: " + ", ".join(f"{k}={v['min']}..{v['max']}"
                                                  for k, v in summary["dynamic_dims"].items()))
    lines.append(f"peak activation memory (RAM): {number(memory.get('peak_activation_bytes'))}")
    if memory:
        lines.append(
            f"  planned intermediates {memory['planned_storage_bytes']:,} B in {memory['storages']} storages, "
            f"outputs {memory['output_bytes']:,} B, kernel workspace {memory['workspace_bytes']:,} B"
        )
    lines.append(f"flash: {number(sizes.get('flash_bytes'))}")
    lines.append(f"  library {number(sizes.get('library_bytes'))}, runtime {number(sizes.get('runtime_bytes'))}"
                 + (f", weights file {number(sizes['weights_file_bytes'])}" if sizes.get("weights_file_bytes") else ""))
    built = sizes.get("built_weights_bytes")
    lines.append(f"weights: {number(sizes.get('weights_bytes'))} as imported"
                 + (f", {number(built)} as built (as the kernels read them)" if built is not None else "")
                 + " (inside the library unless a weights file is listed)")
    lines.append(f"build: {summary['build_seconds']:.1f} s")
    return "\n".join(lines)


def _tune_config(args):
    from .config import RpcTarget, TuneConfig

    if args.tune_trials is None and args.tune_minutes is None and args.tuning_db is None:
        if args.rpc:
            raise TvmcompressError("--rpc measures tuning candidates: add --tune-trials or --tune-minutes")
        return None
    rpc = RpcTarget.parse(args.rpc, args.rpc_key or "") if args.rpc else None
    db = os.path.abspath(args.tuning_db) if args.tuning_db else None
    return TuneConfig(trials=args.tune_trials, minutes=args.tune_minutes, database_dir=db, rpc=rpc)


def _prune_config(args):
    from .passes.prune_config import PruneConfig

    if args.prune is None:
        if args.prune_criterion != "l1" or args.no_reconstruct:
            raise TvmcompressError("--prune-criterion and --no-reconstruct need --prune SPEC, such as channel:0.5")
        return None
    return PruneConfig.parse(args.prune, criterion=args.prune_criterion, reconstruct=not args.no_reconstruct)


def _quantize_config(args):
    from .passes.quantize_config import QuantizeConfig

    if args.quantize is None:
        if args.smoothquant is not None:
            raise TvmcompressError("--smoothquant needs --quantize int8 (or dynamic-int8) and --calibration FILE.npz")
        return None
    exclude = tuple(name for name in args.exclude.split(",") if name)
    return QuantizeConfig(
        mode=args.quantize, calibration_method=args.calibration_method, percentile=args.percentile, exclude=exclude,
        bias_correction=not args.no_bias_correction, smoothquant=args.smoothquant,
    )


def _cmd_run(args) -> int:
    import numpy as np

    from . import api
    from .data import load_npz
    from .sub_byte_io import storable

    artifact = api.load(args.artifact)
    if args.output:
        _check_npz_output(args.output)
    # .npz files cannot hold sub-byte types (int4, ...): their outputs are written in their library dtype.
    outputs = {name: storable(value) for name, value in artifact.run_batches(load_npz(args.inputs)).items()}
    if args.output:
        _write_npz_atomically(args.output, outputs, np)
        print(f"wrote {args.output}: " + ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in outputs.items()))
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {list(value.shape)} {value.dtype}, mean {float(np.mean(value)):.6g}")
    return EXIT_OK


def _check_npz_output(path: str) -> None:
    """Fail before running the model if --output cannot become a file."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise TvmcompressError(f"--output '{path}' is a directory: give a file path such as {os.path.join(path, 'out.npz')}")
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise TvmcompressError(f"cannot write '{path}': its directory is missing or not writable")


def _write_npz_atomically(path: str, arrays: dict[str, Any], np) -> None:
    import tempfile

    _check_npz_output(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as err:
        os.unlink(tmp)
        raise TvmcompressError(f"cannot write '{path}': {err.strerror}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def _cmd_inspect(args) -> int:
    from . import api
    from .config import parse_input_shape

    if os.path.isdir(args.model):
        if args.input_shape:
            raise TvmcompressError("--input-shape applies to ONNX models; an artifact's shapes are fixed: drop it")
        from .aot.export_aot import format_aot_bundle, read_aot_bundle

        bundle = read_aot_bundle(args.model)
        if bundle is not None:  # an `export --aot` bundle: its footprint
            print(json.dumps(bundle, indent=2, sort_keys=True) if args.json else format_aot_bundle(bundle))
            return EXIT_OK
        summary = artifact_summary(api.load(args.model))
        print(json.dumps(summary, indent=2, sort_keys=True) if args.json else format_artifact(summary))
        return EXIT_OK
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
    from .bench import BenchConfig, format_table, measure, rows_to_json
    from .config import CompileOptions, parse_input_shape

    config = BenchConfig(runs=args.runs, threads=args.threads, ort_int8=args.ort_int8)
    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    with tempfile.TemporaryDirectory(prefix="tvmcompress-bench-") as tmp:
        artifacts = {directory: directory for directory in args.artifact}
        if not artifacts:
            out = os.path.join(tmp, "build")
            api.compile(args.model, args.target, output=out, options=CompileOptions.create(input_shapes=shapes))
            artifacts[f"{args.target} (default build)"] = out
        result = measure(args.model, artifacts, config, input_shapes=shapes)
    print(format_table(result.rows))
    print(result.load_line())
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows_to_json(result.rows, config, result), f, indent=2)
    return EXIT_OK


def _cmd_analyze(args) -> int:
    from . import api
    from .config import parse_input_shape
    from .passes.quant_analysis import format_analysis
    from .passes.quantize_config import QuantizeConfig

    config = QuantizeConfig(calibration_method=args.calibration_method, percentile=args.percentile,
                            bias_correction=not args.no_bias_correction)
    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    analysis = api.analyze(args.model, args.calibration, args.eval_data, config, input_shapes=shapes)
    print(json.dumps(analysis, indent=2, sort_keys=True) if args.json else format_analysis(analysis))
    return EXIT_OK


def _cmd_cache(args) -> int:
    from .cache import ArtifactCache, clear_everything, default_cache_dir

    if args.all and (args.action != "clear" or args.cache_dir):
        raise TvmcompressError("--all goes with `cache clear` of the default cache only: drop --cache-dir")
    cache = ArtifactCache(args.cache_dir or default_cache_dir())
    if args.action == "info":
        info = cache.info()
    else:
        info = clear_everything() if args.all else cache.clear()
    if args.json:
        print(json.dumps({"action": args.action, **info.to_json()}, indent=2, sort_keys=True))
    elif args.action == "info":
        print(f"{info.directory}: {info.entries} artifacts, {info.bytes:,} bytes")
    else:
        print(f"cleared {info.directory}: {info.entries} artifacts, {info.bytes:,} bytes")
    return EXIT_OK


def _cmd_export(args) -> int:
    from . import api

    if args.aot or args.max_ram or args.max_flash or args.board or args.keep_checks:
        return _export_aot(args)
    summary = api.load(args.artifact).export(args.output, static=args.static, name=args.name)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    else:
        kind = "static" if summary.static else "shared"
        print(f"wrote {args.output}: {kind} bundle '{summary.name}' for {summary.target}, {sum(summary.files.values()):,} B")
    return EXIT_OK


def _cmd_recipe(args) -> int:
    from . import api, recipe

    manifest = api.load(args.artifact).manifest
    if "recipe" not in manifest:
        raise TvmcompressError(f"{args.artifact} was compiled by a tvmcompress without recipes: compile it again")
    sys.stdout.write(recipe.dumps(manifest["recipe"]))
    return EXIT_OK


def _export_aot(args) -> int:
    from . import api
    from .aot.export_aot import export_aot_bundle, summary_line
    from .config import Budgets, parse_bytes

    if not args.aot:
        raise TvmcompressError("--board / --keep-checks / --max-ram / --max-flash on export apply to --aot bundles: add --aot")
    if args.static:
        raise TvmcompressError("--aot bundles are always static: drop --static")
    budgets = Budgets(
        max_ram_bytes=parse_bytes(args.max_ram, "--max-ram") if args.max_ram else None,
        max_flash_bytes=parse_bytes(args.max_flash, "--max-flash") if args.max_flash else None,
    )
    board = None
    if args.board:
        from .targets.mcu_boards import resolve_board

        board = resolve_board(args.board)
    summary = export_aot_bundle(api.load(args.artifact), args.output, name=args.name, budgets=budgets, board=board,
                                checks=args.keep_checks)
    print(json.dumps(summary.to_json(), indent=2, sort_keys=True) if args.json else summary_line(summary))
    return EXIT_OK


def _cmd_report(args) -> int:
    from .report_command import run

    return run(args.artifact, args.compare, args.html, args.open, args.time)


def _cmd_targets(args) -> int:
    from . import api

    targets = api.list_targets()
    if args.json:
        print(json.dumps(targets, indent=2))
        return EXIT_OK
    for t in targets:
        if t.get("kind") == "board" and not any(u.get("kind") == "board" for u in targets[:targets.index(t)]):
            print("\nmicrocontroller boards (tvmcompress export ARTIFACT -o BUNDLE --aot --board NAME):")
        print(f"{t['name']:<16} {t['description']}")
        if t.get("features"):
            print(f"{'':<16} features {', '.join(t['features'])}")
        print(f"{'':<16} compiler {t['compiler']} (Debian: {t['debian_package']}), runs here: {t['runner']}")
    return EXIT_OK


_GLOBAL_FLAGS = ("--debug", "-q", "--quiet", "-v", "--verbose")
_COMMANDS = {
    "compile": _cmd_compile,
    "run": _cmd_run,
    "inspect": _cmd_inspect,
    "bench": _cmd_bench,
    "export": _cmd_export,
    "targets": _cmd_targets,
    "merge": _cmd_merge,
    "report": _cmd_report,
    "cache": _cmd_cache,
    "analyze": _cmd_analyze,
    "debug": _cmd_debug,
    "recipe": _cmd_recipe,
}


# Commands that run TVM's compiler or MetaSchedule, whose C++ warnings on fd 2 go through our logging (progress.py).
_CAPTURES_NATIVE_OUTPUT = ("compile", "debug", "bench")


def _configure_output(level: int, quiet: bool, explicit_verbose: bool):
    """Set up logging and progress (progress.py) for one CLI run; returns the stream our output goes to when this
    call installed it (a copy of fd 2, so fd 2 itself can be captured), else None (logging was already set up, as
    in tests that call main() in-process: then nothing is redirected)."""
    from . import progress

    mode = progress.QUIET if quiet else progress.BAR if sys.stderr.isatty() else progress.LOG
    if logging.getLogger().handlers:
        progress.configure(mode, show_library_output=explicit_verbose)
        return None
    try:
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # no real fd 2 (an embedding host): log to sys.stderr as is
        stream = None
    handler = progress.TqdmHandler(stream or sys.stderr) if mode == progress.BAR else logging.StreamHandler(stream or sys.stderr)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    progress.configure(mode, show_library_output=explicit_verbose, stream=stream)
    return stream


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = "-q" in argv or "--quiet" in argv
    # A person at a terminal gets progress bars (progress.py), a build system capturing stderr gets warnings and
    # the one error line; -v adds the INFO logs and TVM's own output, -q leaves errors only.
    verbose = "-v" in argv or "--verbose" in argv
    argv = [a for a in argv if a not in _GLOBAL_FLAGS]
    received: list[int] = []
    previous_handlers = _install_signal_handlers(received)
    try:
        args = _build_parser().parse_args(argv)
        level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
        stream = _configure_output(level, quiet, explicit_verbose=verbose or debug)
        if stream is not None and args.command in _CAPTURES_NATIVE_OUTPUT:
            from .progress import native_stderr_to_log

            with native_stderr_to_log():
                return _COMMANDS[args.command](args)
        return _COMMANDS[args.command](args)
    except TvmcompressError as err:
        if received:  # whatever failed on the way out of an interrupt, the interrupt is the cause
            return _interrupted(received[-1])
        if debug:
            raise
        message = err.render(FIELD_FLAGS) if isinstance(err, OptionError) else str(err)
        print(f"tvmcompress: error: {message}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt as err:
        return _interrupted(err.signum if isinstance(err, _Terminated) else received[-1] if received else signal.SIGINT)
    except Exception:
        if not received:
            raise
        return _interrupted(received[-1])  # an interrupt that TVM wrapped on its way up
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
