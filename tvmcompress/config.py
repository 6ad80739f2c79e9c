"""Typed, frozen options for one compile. Validated when constructed; serialized into the manifest."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .data import Samples, as_samples
from .errors import OptionError, TvmcompressError
from .passes.distill_config import DistillConfig
from .passes.prune_config import PruneConfig
from .passes.quantize_config import QuantizeConfig


def _freeze_shapes(shapes: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    frozen = []
    for name, dims in sorted((shapes or {}).items()):
        # A str dim is a symbol of a dynamic shape (tvmcompress/dynamic_shapes.py), checked against `dims`.
        dims = tuple(d if isinstance(d, str) else int(d) for d in dims)
        if any(not isinstance(d, str) and d < 1 for d in dims):
            raise TvmcompressError(f"input shape for '{name}' has a dimension below 1: {list(dims)}")
        frozen.append((name, dims))
    return tuple(frozen)


def _freeze_consts(consts: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Each value as a Python number or nested tuples of them. A NumPy array or scalar is converted here, so that
    the options stay hashable and serialize into the manifest as JSON; a value that is not numeric fails now,
    before any build work, not when the manifest is written."""
    frozen = []
    for name, value in sorted((consts or {}).items()):
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nested lists
            array = None
        if array is None or array.dtype.kind not in "biuf":
            raise TvmcompressError(
                f"constant value for input {name!r} is not a number or a (nested) list of numbers: give one, "
                "such as 0.5, [1, 2] or a numeric NumPy array"
            )
        plain = array.tolist()  # Python ints, floats and bools
        frozen.append((name, _nested_tuple(plain) if isinstance(plain, list) else plain))
    return tuple(frozen)


def _nested_list(value: Any) -> Any:
    return [_nested_list(v) for v in value] if isinstance(value, tuple) else value


def _nested_tuple(value: Any) -> Any:
    return tuple(_nested_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# MetaSchedule's LocalBuilder gives up on a candidate after 30 s by default, which a busy 2-core machine reaches
# while LLVM compiles a large fused conv; such candidates would be lost as failures.
DEFAULT_BUILDER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RpcTarget:
    """A device registered with TVM's RPC tracker (`python -m tvm.exec.rpc_tracker` / `rpc_server`)."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_s: float = 120.0

    @classmethod
    def parse(cls, address: str, key: str) -> "RpcTarget":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise TvmcompressError(f"bad --rpc '{address}': use HOST:PORT of the RPC tracker, e.g. 127.0.0.1:9190")
        if not key:
            raise TvmcompressError("--rpc needs --rpc-key: the key the device's rpc_server registered with")
        return cls(host, int(port), key)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RpcTarget":
        return cls(**_known_fields(cls, data, "tune.rpc"))


@dataclass(frozen=True)
class TuneConfig:
    trials: int | None = None  # total measured candidates across tasks
    minutes: float | None = None  # wall-clock budget; tuning stops after the first measured batch past it
    database_dir: str | None = None  # shared database (--tuning-db); None: only this build's tuning/ dir
    rpc: RpcTarget | None = None
    builder_timeout_s: float = DEFAULT_BUILDER_TIMEOUT_S
    # Candidates per measured batch of one task (MetaSchedule's num_trials_per_iter). 32 rather than MetaSchedule's
    # usual 64: on 2 cores a batch takes about a minute, and smaller batches retrain the cost model twice as often
    # within a 30-minute budget.
    trials_per_round: int = 32
    # Tasks under this share of the model's default-schedule time are not tuned (see tuning._worth_tuning).
    min_task_share: float = 0.005
    # Parallel candidate builds (LLVM compiles one candidate per process); None: one per core.
    builder_workers: int | None = None
    seed: int = 0
    # A tuned schedule replaces our default only when the side-by-side duel measures it at least this much
    # faster. One task's timing varies by 10-15% between runs on this shared 2-core machine (measured), so a
    # smaller measured win may be noise, and the promise is that tuning never makes a task slower.
    min_speedup: float = 1.03

    def __post_init__(self):
        if isinstance(self.rpc, Mapping):
            object.__setattr__(self, "rpc", RpcTarget.from_dict(self.rpc))
        if self.trials is None and self.minutes is None and self.database_dir is None:
            raise OptionError("tuning needs {tune.trials}, {tune.minutes} or {tune.database_dir}")
        if self.trials is not None and (isinstance(self.trials, bool) or not isinstance(self.trials, int)
                                        or self.trials < 1):
            raise OptionError(f"{{tune.trials}} must be at least 1, got {self.trials}")
        if self.minutes is not None and not 0 < self.minutes < float("inf"):  # also NaN
            raise OptionError(f"{{tune.minutes}} must be positive, got {self.minutes}")
        if self.min_speedup < 1.0:
            raise OptionError(f"{{tune.min_speedup}} must be at least 1.0, got {self.min_speedup}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TuneConfig":
        return cls(**_known_fields(cls, data, "tune"))

    @property
    def measures(self) -> bool:
        return bool(self.trials) or bool(self.minutes)


@dataclass(frozen=True)
class Budgets:
    """Device limits a build must fit (`--max-ram`, `--max-flash`), in bytes; None: no limit.

    RAM is the peak activation memory of the static memory plan; flash is model.so + a separate weights file +
    the TVM runtime for the target's architecture (see tvmcompress/footprint.py). Not part of the artifact or
    its cache key: the same build is checked against any budget.
    """

    max_ram_bytes: int | None = None
    max_flash_bytes: int | None = None

    def __post_init__(self):
        for field_name, value in (("max_ram_bytes", self.max_ram_bytes), ("max_flash_bytes", self.max_flash_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"{{{field_name}}} must be a positive number of bytes, got {value!r}")


def parse_bytes(text: str, flag: str) -> int:
    """`65536`, `64K`/`64KiB` (x1024), `2M`/`2MiB`, `1G`/`1GiB`: the CLI form of --max-ram / --max-flash."""
    units = {"": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
             "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "B": 1}
    raw = text.strip().upper()
    number = raw.rstrip("KMGIB")
    unit = raw[len(number):]
    try:
        if unit not in units:
            raise ValueError
        value = float(number) * units[unit]
    except ValueError:
        raise TvmcompressError(f"bad {flag} '{text}': use a number of bytes such as 262144, 256K or 4M") from None
    if not value >= 1 or value == float("inf"):  # `not >=`: NaN compares false both ways
        raise TvmcompressError(f"{flag} must be a positive, finite number of bytes, got '{text}'")
    return int(value)


@dataclass(frozen=True)
class CompileOptions:
    """What `tvmcompress compile` does besides choosing the model and target.

    input_shapes fixes dynamic input dims (`--input-shape x=1,3,224,224`); const_inputs specializes inputs to
    constants (`--const-input scale=0.5`); cores overrides the target's core count (parallel schedules use it).
    """

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())
    const_inputs: tuple[tuple[str, Any], ...] = field(default=())
    cores: int | None = None
    tune: TuneConfig | None = None  # None: default schedules only
    quantize: QuantizeConfig | None = None  # None: keep the model's float32
    calibration: str | Samples | None = None  # .npz of calibration inputs (static int8; pruning's criterion/reconstruction)
    prune: PruneConfig | None = None  # None: no pruning
    separate_weights: bool = False  # weights in OUT/weights.bin, loaded at run/create time, not in model.so
    cluster_bits: int | None = None  # k-means weight sharing, 2^B values per layer (passes/cluster_weights.py)
    compress_weights: bool = False  # entropy-coded separate weights (tvmcompress/weight_codec.py)
    # A block-sparse layer runs the BSR kernel only when measured at least this much faster than dense.
    sparse_min_speedup: float = 1.2
    # .npz of evaluation inputs (+ optional `label`): what --accuracy-budget measures (passes/quant_analysis.py).
    eval_data: str | Samples | None = None
    # --accuracy-budget: int8 may lose at most this many points of the eval metric; layers fall back to float.
    accuracy_budget: float | None = None
    # --prune-budget: pruning may lose at most this many points; per-group ratios from sensitivity (passes/prune_budget.py).
    prune_budget: float | None = None
    # Winograd F(4x4)/F(2x2) for 3x3 stride-1 CPU convolutions (faster; their weights grow 4x / 1.78x and float32
    # rounding differs from a direct convolution, ~5e-6 relative). --no-winograd keeps them direct.
    winograd: bool = True
    # NaN / Inf weights are rejected at import (frontend.check_finite_weights) unless this is set.
    allow_nonfinite_weights: bool = False
    # Run the build against ONNX Runtime on the source model (tvmcompress/verify.py); False: --no-verify.
    verify: bool = True
    # --min-sqnr: a quantized or clustered build whose worst output SQNR against the float model is below this (dB)
    # fails, or for static int8 returns its most sensitive layers to float. Why 10 dB: measured on the zoo and the
    # digits CNN (BENCHMARKS.md "Verification"), good builds give int8 34-50 dB, dynamic-int8 38-42, int8-weight
    # 38-44, fp16 59-69, bf16 50-53, --cluster-bits 4 17-21, int4-weight 12-20 (digits: 15.6 dB for -0.28 points
    # of accuracy); a model under 10 dB has lost most of its signal (issue 17's int8 PicoDet: 0.4-2.6 dB).
    min_sqnr: float = 10.0
    # --distill: the float model teaches the compressed one on --train-data (or --calibration) (passes/distill.py).
    distill: DistillConfig | None = None
    train_data: str | None = None  # .npz of distillation inputs (+ optional `label`); default: --calibration

    # Dynamic shapes: the range (min, max) of each symbolic dim that input_shapes names (--dim N=1..8).
    dims: tuple[tuple[str, tuple[int, int]], ...] = field(default=())

    def __post_init__(self):
        # Where a config object belongs, a plain value says the same (a recipe, or `quantize="int8"` in Python):
        # it becomes the config here, so that every CompileOptions holds typed, validated parts.
        set_field = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_field("input_shapes", _freeze_shapes(dict(self.input_shapes)))
        if self.dims or any(isinstance(d, str) for _, dims in self.input_shapes for d in dims):
            from .dim_ranges import freeze_ranges

            set_field("dims", freeze_ranges(dict(self.input_shapes), dict(self.dims)))
        set_field("const_inputs", _freeze_consts(dict(self.const_inputs)))
        set_field("quantize", _coerce(self.quantize, "quantize", QuantizeConfig, "QuantizeConfig(mode='int8')",
                                      lambda text: QuantizeConfig(mode=text)))
        set_field("prune", _coerce(self.prune, "prune", PruneConfig, "PruneConfig.parse('channel:0.5')",
                                   PruneConfig.parse))
        set_field("tune", _coerce(self.tune, "tune", TuneConfig, "TuneConfig(trials=64)", None))
        set_field("distill", _coerce(self.distill, "distill", DistillConfig, "DistillConfig(minutes=3)", None))
        # Data: the path of an .npz, or in Python an iterable of {input name: array} dicts (data.Samples).
        set_field("calibration", as_samples(self.calibration))
        set_field("eval_data", as_samples(self.eval_data))
        cluster_bits, cores = self.cluster_bits, self.cores
        if cluster_bits is not None and (isinstance(cluster_bits, bool) or cluster_bits not in range(1, 9)):
            raise OptionError(f"{{cluster_bits}} must be an integer from 1 to 8, got {cluster_bits!r}")
        if not (isinstance(self.sparse_min_speedup, (int, float)) and self.sparse_min_speedup > 0):
            raise OptionError(f"{{sparse_min_speedup}} must be positive, got {self.sparse_min_speedup}")
        if cores is not None and (isinstance(cores, bool) or not isinstance(cores, int) or cores < 1):
            raise OptionError(f"{{cores}} must be at least 1, got {cores}")
        quantize, prune, calibration = self.quantize, self.prune, self.calibration
        if quantize is not None and quantize.mode == "int8" and calibration is None:
            raise OptionError("{quantize=}int8 needs {calibration=}FILE.npz: a few hundred representative inputs "
                              "to measure ranges")
        if quantize is not None and quantize.smoothquant is not None and calibration is None:
            raise OptionError("{smoothquant} needs {calibration=}FILE.npz: inputs to measure each activation "
                              "channel's range on")
        if self.distill is not None:
            _check_distill(quantize, prune, cluster_bits, calibration, self.train_data)
        elif self.train_data is not None:
            raise OptionError("{train_data} is what {distill} trains on: add {distill} or drop it")
        if calibration is not None and (quantize is None or not quantize.needs_calibration) and prune is None \
                and cluster_bits is None and self.distill is None:
            raise OptionError("{calibration} is used by {quantize=}int8 and {prune} only: drop it or add "
                              "{quantize=}int8 / {prune}")
        if prune is not None and prune.needs_calibration and calibration is None:
            raise OptionError("{prune.criterion=}activation needs {calibration=}FILE.npz: inputs to measure")
        if not (isinstance(self.min_sqnr, (int, float)) and -100 <= self.min_sqnr <= 200):
            raise OptionError(f"{{min_sqnr}} must be a number of dB from -100 to 200, got {self.min_sqnr!r}")
        if self.accuracy_budget is not None:
            if quantize is None or quantize.mode != "int8" or self.eval_data is None:
                raise OptionError("{accuracy_budget} needs {quantize=}int8 and {eval_data=}FILE.npz to measure on")
            if not self.accuracy_budget >= 0:
                raise OptionError(f"{{accuracy_budget}} must be >= 0 points, got {self.accuracy_budget}")
        if self.prune_budget is not None:
            if prune is None or (prune.step("channel") is None and prune.step("unstructured") is None):
                raise OptionError("{prune_budget} needs {prune} with a channel:R or unstructured:S step, "
                                  "such as {prune=}channel:0.5")
            if self.eval_data is None:
                raise OptionError("{prune_budget} needs {eval_data=}FILE.npz: inputs (+ optional 'label') "
                                  "to measure the accuracy loss on")
            if not self.prune_budget >= 0:
                raise OptionError(f"{{prune_budget}} must be >= 0 points, got {self.prune_budget}")
        if self.dims:
            from .dim_ranges import check_compile_options

            check_compile_options(self)

    @classmethod
    def create(
        cls,
        input_shapes: Mapping[str, Any] | None = None,
        const_inputs: Mapping[str, Any] | None = None,
        cores: int | None = None,
        tune: TuneConfig | None = None,
        quantize: QuantizeConfig | None = None,
        calibration: str | None = None,
        prune: PruneConfig | None = None,
        separate_weights: bool = False,
        cluster_bits: int | None = None,
        compress_weights: bool = False,
        sparse_min_speedup: float = 1.2,
        eval_data: str | None = None,
        accuracy_budget: float | None = None,
        prune_budget: float | None = None,
        winograd: bool = True,
        allow_nonfinite_weights: bool = False,
        verify: bool = True,
        min_sqnr: float | None = None,
        distill: DistillConfig | None = None,
        train_data: str | None = None,
        dims: Mapping[str, tuple[int, int]] | None = None,
    ) -> "CompileOptions":
        """Build validated options from plain Python values (the CLI's flags map one to one): data paths made
        absolute, numbers made floats, ``compress_weights`` implying ``separate_weights``; validated by
        ``__post_init__``.

        Parameters
        ----------
        input_shapes : dict, optional
            ``{input name: shape}`` fixing dynamic dims (``--input-shape x=1,3,224,224``).
        const_inputs : dict, optional
            ``{input name: value}`` specializing inputs to constants (``--const-input``).
        cores : int, optional
            Device core count for parallel schedules (default: the preset's).
        tune : TuneConfig, optional
            MetaSchedule tuning budget and database; None keeps our default schedules.
        quantize : QuantizeConfig, optional
            ``QuantizeConfig(mode="int8")``, ``"fp16"``, ``"int8-weight"``, ...; None keeps float32.
        calibration : str, optional
            ``.npz`` of representative inputs, needed by static int8 and by activation-based pruning.
        prune : PruneConfig, optional
            Structured or unstructured pruning (``--prune channel:0.5``).
        separate_weights : bool
            Weights in ``weights.bin`` beside ``model.so`` instead of inside it.
        cluster_bits : int, optional
            k-means weight sharing with 2**B values per layer (1 to 8).
        compress_weights : bool
            Entropy-coded ``weights.bin`` (implies separate weights).
        sparse_min_speedup : float
            Use a block-sparse kernel only when measured this much faster than dense.
        eval_data : str, optional
            ``.npz`` of evaluation inputs (+ ``label``) for the accuracy report and budgets.
        accuracy_budget : float, optional
            int8 may lose at most this many metric points; sensitive layers return to float.
        prune_budget : float, optional
            Pruning may lose at most this many metric points; per-group ratios follow sensitivity.
        winograd : bool
            Winograd convolutions for 3x3 stride-1 CPU convolutions.
        allow_nonfinite_weights : bool
            Accept NaN/Inf weights instead of refusing the model.
        verify : bool
            Run the build against ONNX Runtime (False: ``--no-verify``).
        min_sqnr : float, optional
            The worst output SQNR (dB) a compressed build may have (default 10 dB).
        distill : DistillConfig, optional
            Fine-tune the compressed model against the float one (``--distill``; passes/distill.py).
        train_data : str, optional
            ``.npz`` of inputs (+ optional ``label``) that distillation trains on (default: ``calibration``).
        dims : dict, optional
            ``{symbol: (min, max)}`` for the symbolic dims that ``input_shapes`` names (``--dim N=1..8``).

        Returns
        -------
        CompileOptions

        Raises
        ------
        TvmcompressError
            Inconsistent or out-of-range options, worded with the field names (the CLI names its flags).

        Examples
        --------
        >>> options = CompileOptions.create(quantize=QuantizeConfig(mode="int8"), calibration="calib.npz")
        """
        if min_sqnr is not None and not verify:
            raise OptionError("{min_sqnr} is checked by the verification that {verify=False|no_verify} skips: drop one")
        return cls(
            _freeze_shapes(input_shapes), _freeze_consts(const_inputs), cores, tune, quantize,
            # --compress-weights codes the separate weights file: it implies --separate-weights.
            _absolute(calibration), prune, bool(separate_weights or compress_weights),
            cluster_bits=cluster_bits, compress_weights=bool(compress_weights),
            sparse_min_speedup=_number(sparse_min_speedup, "sparse_min_speedup"),
            eval_data=_absolute(eval_data),
            accuracy_budget=_number(accuracy_budget, "accuracy_budget") if accuracy_budget is not None else None,
            prune_budget=_number(prune_budget, "prune_budget") if prune_budget is not None else None,
            winograd=bool(winograd),
            allow_nonfinite_weights=bool(allow_nonfinite_weights),
            verify=bool(verify),
            min_sqnr=_number(min_sqnr, "min_sqnr") if min_sqnr is not None else cls.min_sqnr,
            distill=distill, train_data=os.path.abspath(train_data) if train_data else None,
            dims=tuple((dims or {}).items()),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shapes"] = {name: list(dims) for name, dims in self.input_shapes}
        # Only dynamic builds carry `dims`: static builds keep the options JSON (and cache keys) they had.
        data["dims"] = {name: list(bounds) for name, bounds in self.dims}
        if not self.dims:
            del data["dims"]
        data["const_inputs"] = {name: _nested_list(v) for name, v in self.const_inputs}
        data["prune"] = self.prune.to_json() if self.prune is not None else None
        for name in ("calibration", "eval_data"):  # data given in Python: identified by its contents
            if isinstance(getattr(self, name), Samples):
                data[name] = f"python data sha256:{getattr(self, name).digest}"
        data["distill"] = self.distill.to_json() if self.distill is not None else None
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what a TOML recipe holds); `CompileOptions.from_dict` gives back an equal object."""
        for name in ("calibration", "eval_data"):
            if isinstance(getattr(self, name), Samples):
                raise OptionError(f"{{{name}}} given as Python data cannot go into a recipe: save it with "
                                  "numpy.savez and give the .npz path")
        data = self.to_json()
        data["quantize"] = self.quantize.to_dict() if self.quantize is not None else None
        data["tune"] = self.tune.to_dict() if self.tune is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CompileOptions":
        """The options of `to_dict` (or a recipe's [options] table); a missing field takes its default, an unknown
        one is an error that lists the known ones."""
        fields = _known_fields(cls, data, "options")
        fields["quantize"] = _sub_config(fields.get("quantize"), QuantizeConfig)
        fields["prune"] = _sub_config(fields.get("prune"), PruneConfig)
        fields["tune"] = _sub_config(fields.get("tune"), TuneConfig)
        fields["distill"] = _sub_config(fields.get("distill"), DistillConfig)
        return cls(**fields)


def _absolute(data: Any) -> Any:
    """A data path made absolute (the build may run elsewhere); data given in Python as it is."""
    if isinstance(data, (str, os.PathLike)):
        return os.path.abspath(data) if os.fspath(data) else None
    return data


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{{{field}}} must be a number, got {value!r}")
    return float(value)


def _coerce(value: Any, field: str, config: Any, example: str, from_text: Callable[[str], Any] | None) -> Any:
    """`value` as `config`: itself, from a dict (config.from_dict) or from a string (`from_text`)."""
    if value is None or isinstance(value, config):
        return value
    if isinstance(value, Mapping):
        return _sub_config(value, config)
    if isinstance(value, str) and from_text is not None:
        return from_text(value)
    raise OptionError(f"{{{field}}} must be a {config.__name__} (such as {example}), a dict of its fields"
                      f"{' or a string' if from_text else ''}, got {type(value).__name__} {value!r}")


def _sub_config(value: Any, config: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    if hasattr(config, "from_dict"):
        return config.from_dict(value)
    return config(**_known_fields(config, value, config.__name__))


def _known_fields(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TvmcompressError(f"{where} must be a table of fields, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise TvmcompressError(f"unknown field(s) {', '.join(unknown)} in {where}: the fields are {', '.join(names)}")
    return {name: data[name] for name in names if name in data}


def _check_distill(quantize, prune, cluster_bits, calibration, train_data) -> None:
    if quantize is None and prune is None and cluster_bits is None:
        raise OptionError("{distill} fine-tunes a compressed model: add {prune}, {quantize} or {cluster_bits}")
    if calibration is None and train_data is None:
        raise OptionError("{distill} needs inputs to train on: add {train_data=}FILE.npz or {calibration=}FILE.npz")


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=D1,D2,...` (the CLI form of --input-shape)."""
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise TvmcompressError(f"bad --input-shape '{text}': use NAME=D1,D2,... such as input=1,3,224,224") from None


def parse_const_input(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` or `NAME=V1,V2,...` (the CLI form of --const-input); numbers only."""
    name, sep, raw = text.rpartition("=")

    def number(token: str) -> int | float:
        return int(token) if token.lstrip("-").isdigit() else float(token)

    try:
        if not sep or not name:
            raise ValueError
        values = [number(t) for t in raw.split(",")]
        if not all(math.isfinite(v) for v in values):  # a NaN constant would be folded through the whole model
            raise ValueError
    except ValueError:
        raise TvmcompressError(f"bad --const-input '{text}': use NAME=VALUE or NAME=V1,V2 with numbers") from None
    return name, values[0] if len(values) == 1 else tuple(values)
