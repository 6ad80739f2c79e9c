"""The `.npz` data contract used by run, calibration and evaluation.

Keys are the model's input names. Each array is that input stacked along axis 0: `[N*B, ...]` for a model batch
of `B`, so an npz holds N model calls. Evaluation files may add `label` (int64 [N*B]): one label per row, i.e.
per output row of a classifier, whatever the model's batch.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import TvmcompressError

LABEL_KEY = "label"


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an npz, read eagerly (the file is closed before returning)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise TvmcompressError(f"data file '{path}' is a directory: pass an .npz whose keys are the model's input names")
    if not os.path.isfile(path):
        raise TvmcompressError(f"data file '{path}' does not exist: pass an .npz whose keys are the model's input names")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy holds one array, without its input name
            raise TvmcompressError(
                f"'{path}' is a .npy file (one unnamed array): write an .npz with numpy.savez(path, <input name>=array)"
            )
        with loaded as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError) as err:
        raise TvmcompressError(f"'{path}' is not a readable .npz file ({err}): write it with numpy.savez") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a zip member that is not a .npy: NpzFile hands back its bytes
            raise TvmcompressError(f"'{path}' member '{key}' is not a numpy array: write the file with numpy.savez")
    return arrays


def _check_names(keys: set[str], expected: dict, source: str, note: str) -> None:
    """Exactly the model's inputs: name the missing and the unknown ones in one line."""
    missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
    if missing or extra:
        parts = ([f"missing input(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown key(s) {', '.join(extra)}"] if extra else []
        )
        raise TvmcompressError(f"{source}: {'; '.join(parts)}; the model's inputs are {', '.join(expected) or 'none'}{note}")


def _check_dtype(name: str, array: np.ndarray, spec, source: str) -> None:
    if str(array.dtype) != spec.dtype:
        raise TvmcompressError(
            f"{source}: input '{name}' has dtype {array.dtype}, the model expects {spec.dtype}: convert it with .astype('{spec.dtype}')"
        )


def validate_inputs(data: dict[str, np.ndarray], inputs: Sequence, *, source: str, allow_label: bool = True) -> int:
    """Check that `data` holds exactly the model inputs, stacked on axis 0; return the number of batches N.

    `inputs` are TensorSpec-like objects (name, shape, dtype). Every problem is reported in one line that names
    the input and says what the model expects.
    """
    expected = {spec.name: spec for spec in inputs}
    keys = set(data) - ({LABEL_KEY} if allow_label else set())
    _check_names(keys, expected, source, f" (plus optional '{LABEL_KEY}')" if allow_label else "")
    counts = set()
    for name, spec in expected.items():
        array = data[name]
        want = tuple(spec.shape)
        _check_dtype(name, array, spec, source)
        batch = want[0] if want else 1
        ok = array.ndim == len(want) and array.shape[1:] == want[1:] and array.shape[0] % batch == 0 and array.shape[0] > 0
        if not want:
            ok = array.ndim == 1 and array.shape[0] > 0
        if not ok:
            raise TvmcompressError(
                f"{source}: input '{name}' has shape {list(array.shape)}, the model expects {list(want)} "
                f"stacked on axis 0 (shape [N*{batch}, {', '.join(map(str, want[1:]))}])".replace(", ]", "]")
            )
        counts.add(array.shape[0] // batch if want else array.shape[0])
    if len(counts) > 1:
        raise TvmcompressError(f"{source}: inputs hold different numbers of samples ({sorted(counts)}): stack the same N for each")
    n = counts.pop() if counts else 0
    if allow_label and LABEL_KEY in data:
        # One label per stacked row (N*B), so a batched classifier's every output row has its label.
        rows = max((data[name].shape[0] for name, spec in expected.items() if tuple(spec.shape)), default=n)
        if data[LABEL_KEY].ndim != 1 or data[LABEL_KEY].shape[0] != rows:
            raise TvmcompressError(
                f"{source}: '{LABEL_KEY}' has shape {list(data[LABEL_KEY].shape)} for {rows} input rows: give one "
                f"label per row, shape [{rows}]"
            )
    return n


def validate_call(data: dict[str, np.ndarray], inputs: Sequence, *, source: str) -> None:
    """Check the inputs of ONE model call: exactly the model's inputs, each with the model's shape and dtype.

    Unlike the stacked `.npz` contract this takes 0-d and zero-size inputs and models without inputs as they are.
    """
    expected = {spec.name: spec for spec in inputs}
    _check_names(set(data), expected, source, "")
    for name, spec in expected.items():
        array = data[name]
        _check_dtype(name, array, spec, source)
        if tuple(array.shape) != tuple(spec.shape):
            raise TvmcompressError(f"{source}: input '{name}' has shape {list(array.shape)}, the model expects {list(spec.shape)}")


# Why this bound: a float32 value above sqrt(FLT_MAX) ~ 1.8e19 overflows to Inf as soon as the model squares it
# (variance in a norm layer, an L2 norm, a softmax's exp far sooner), and calibration ranges from it round every
# real activation to 0 (the audit's x1e30 data gave chance accuracy). No sensor, pixel or feature comes near it:
# such data was scaled by mistake.
MAX_PLAUSIBLE_MAGNITUDE = 1.8e19


def _sample_of(flat_index: int, array: np.ndarray, batch: int) -> tuple[int, list[int]]:
    """(model call, element index within that call) of a flat index into a stacked array."""
    where = [int(i) for i in np.unravel_index(flat_index, array.shape)]
    return where[0] // batch, [where[0] % batch, *where[1:]]


def validate_values(data: dict[str, np.ndarray], inputs: Sequence, *, source: str) -> None:
    """Check the values of stacked calibration or eval data (call `validate_inputs` first): every float input
    finite and within MAX_PLAUSIBLE_MAGNITUDE, and not every float input one constant (all-zero data).

    A compressed model's quantization ranges and accuracy checks are measured on this data, so bad values give
    a broken model with no error; the message names the sample (model call) and the input.
    """
    labels = data.get(LABEL_KEY)
    if labels is not None and labels.dtype.kind not in "iu":
        raise TvmcompressError(
            f"{source}: '{LABEL_KEY}' has dtype {labels.dtype}: give class indices as integers (.astype('int64'))"
        )
    varying: list[tuple[str, float]] = []
    constant: list[tuple[str, float]] = []
    for spec in inputs:
        array = data[spec.name]
        if array.dtype.kind != "f" or not array.size:
            continue
        batch = spec.shape[0] if tuple(spec.shape) else 1
        finite = np.isfinite(array)
        if not finite.all():
            flat = int(np.argmin(finite.reshape(-1)))
            value = array.reshape(-1)[flat]
            sample, index = _sample_of(flat, array, batch)
            what = "NaN" if np.isnan(value) else "Inf" if value > 0 else "-Inf"
            raise TvmcompressError(
                f"{source}: sample {sample} of input '{spec.name}' holds {what} (at {index}): calibration and "
                "evaluation need finite data; fix or drop that sample"
            )
        # min and max, not abs(): no copy of what may be a large calibration set.
        low, high = float(array.min()), float(array.max())
        if max(-low, high) > MAX_PLAUSIBLE_MAGNITUDE:
            flat = int(np.argmin(array.reshape(-1)) if -low > high else np.argmax(array.reshape(-1)))
            sample, index = _sample_of(flat, array, batch)
            raise TvmcompressError(
                f"{source}: sample {sample} of input '{spec.name}' holds {float(array.reshape(-1)[flat]):.3g} (at "
                f"{index}), beyond any plausible input (|x| <= {MAX_PLAUSIBLE_MAGNITUDE:.2g}): the data was "
                "scaled by mistake; give it as the model sees it in use"
            )
        first = array.reshape(-1)[0]
        (constant if bool(np.all(array == first)) else varying).append((spec.name, float(first)))
    if constant and not varying:
        name, value = constant[0]
        raise TvmcompressError(
            f"{source}: input '{name}' is {value:g} in every sample (constant data): quantization ranges and "
            "accuracy measured on it mean nothing; give real samples of what the model sees in use"
        )


def iterate_batches(data: dict[str, np.ndarray], inputs: Sequence) -> Iterator[dict[str, np.ndarray]]:
    """Yield one model call's inputs at a time, in file order. Call `validate_inputs` first."""
    n = validate_inputs(data, inputs, source="data")
    for i in range(n):
        batch = {}
        for spec in inputs:
            b = spec.shape[0] if spec.shape else 1
            batch[spec.name] = data[spec.name][i * b : (i + 1) * b] if spec.shape else data[spec.name][i]
        yield batch


class Samples:
    """Calibration or evaluation data given in Python: model calls, each {input name: array} with the model's
    input shapes, and for evaluation optionally one int label per output row. `CompileOptions(calibration=...)`
    takes these, or any iterable of input dicts, where the CLI takes an .npz path.

    Equal when their contents are (`digest`): the artifact cache and the manifest identify them by their bytes, as
    they do a data file."""

    def __init__(self, calls: Iterable[Mapping[str, Any]], labels: Any = None):
        try:
            self.calls = tuple({str(k): np.asarray(v) for k, v in call.items()} for call in calls)
        except (AttributeError, TypeError):
            raise TvmcompressError("data given in Python must be an iterable of {input name: array} dicts, one "
                                   "per model call (or the path of an .npz)") from None
        if not self.calls:
            raise TvmcompressError("data given in Python holds no model call: give at least one {input name: array}")
        self.labels = None if labels is None else np.asarray(labels)
        digest = hashlib.sha256()
        for call in self.calls:
            for name in sorted(call):
                array = np.ascontiguousarray(call[name])
                digest.update(f"{name}|{array.dtype}|{array.shape}|".encode() + array.tobytes())
        if self.labels is not None:
            digest.update(b"labels|" + np.ascontiguousarray(self.labels).tobytes())
        self.digest = digest.hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Samples) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"Samples({len(self.calls)} calls, sha256 {self.digest})"


def as_samples(value: Any) -> Any:
    """A path stays a path (str); Samples stay; any other iterable of input dicts becomes Samples."""
    if value is None or isinstance(value, (str, Samples)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):  # one dict is one call only by accident: the stacked form is an .npz
        raise TvmcompressError("data given in Python is a list of {input name: array} dicts, one per model call; "
                               "a single dict of stacked arrays belongs in an .npz (numpy.savez) whose path you pass")
    return Samples(value)


def _from_samples(data: Samples, inputs: Sequence, source: str) -> dict[str, np.ndarray]:
    """The calls of `data`, each checked against the model's inputs, stacked as an .npz would hold them."""
    for i, call in enumerate(data.calls):
        validate_call(call, inputs, source=f"{source} call {i}")
    arrays = {spec.name: np.concatenate([np.reshape(c[spec.name], (-1, *spec.shape[1:])) if tuple(spec.shape)
                                         else np.reshape(c[spec.name], (1,)) for c in data.calls])
              for spec in inputs}
    if data.labels is not None:
        arrays[LABEL_KEY] = data.labels.reshape(-1)
    return arrays


def calibration_calls(path: "str | Samples | None", inputs: Sequence) -> list[dict[str, np.ndarray]] | None:
    """The calibration data (an .npz path or Samples), checked against the model's inputs, as a list of model
    calls; None without one."""
    if not path:
        return None
    if isinstance(path, Samples):
        validate_values(_from_samples(path, inputs, "calibration data"), inputs, source="calibration data")
        return [dict(call) for call in path.calls]
    arrays = load_npz(path)
    validate_inputs(arrays, inputs, source=f"calibration file {path}")
    validate_values(arrays, inputs, source=f"calibration file {path}")
    return list(iterate_batches(arrays, inputs))


def eval_data(path: "str | Samples | None", inputs: Sequence):
    """The eval data (an .npz path or Samples) as passes.quant_analysis.EvalData (model calls + optional labels);
    None without."""
    if not path:
        return None
    from .passes.quant_analysis import EvalData

    if isinstance(path, Samples):
        arrays = _from_samples(path, inputs, "eval data")
        validate_inputs(arrays, inputs, source="eval data")
        validate_values(arrays, inputs, source="eval data")
        return EvalData(tuple(dict(call) for call in path.calls), arrays.get(LABEL_KEY))
    arrays = load_npz(path)
    validate_inputs(arrays, inputs, source=f"eval data file {path}")
    validate_values(arrays, inputs, source=f"eval data file {path}")
    labels = arrays.pop(LABEL_KEY, None)
    return EvalData(tuple(iterate_batches(arrays, inputs)), labels)
