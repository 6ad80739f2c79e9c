"""The artifact directory's contract: its file names, hashing, the atomic writer, and the manifest's shape.

`ArtifactWriter` builds everything in a hidden temp directory beside OUT and renames it into place at the end, so
a failure at any step leaves nothing at OUT (and an existing OUT untouched). `manifest_problem` says what is wrong
with a manifest. Both artifact.py (`Artifact`, which loads a finished directory) and deploy.py (bundles) build on
this module, so neither imports the other's module to share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .errors import TvmcompressError

if TYPE_CHECKING:  # numpy loads when a model runs: a CLI cache hit copies files and needs none of it
    pass

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LIBRARY_NAME = "model.so"
MANIFEST_NAME = "manifest.json"
REPORT_JSON_NAME = "report.json"
REPORT_HTML_NAME = "report.html"
# The Relax module model.so was built from (after quantization, before the pipeline): `export --static`
# rebuilds it as a system library (tvmcompress/deploy.py).
RELAX_MODULE_NAME = "relax_module.json"
# --separate-weights: the weights, outside model.so (format: tvmcompress/weights_file.py).
WEIGHTS_NAME = "weights.bin"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str, data: Any) -> None:
    # sort_keys + fixed separators: the same data always gives the same bytes (determinism promise).
    # allow_nan=False: a bare NaN/Infinity is not JSON (other readers reject the file); every number we record
    # must be finite, so one that is not is our bug, raised before anything is written.
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


# Everything `compile` writes at OUT. A directory holding manifest.json with our schema key and nothing but these
# is ours to replace; anything else there is the user's (add a name here when compile writes a new file).
ARTIFACT_FILES = frozenset(
    {LIBRARY_NAME, MANIFEST_NAME, REPORT_JSON_NAME, REPORT_HTML_NAME, RELAX_MODULE_NAME, WEIGHTS_NAME}
)
ARTIFACT_DIRS = frozenset({"tuning"})  # MetaSchedule's records: whatever is inside is ours
# `export` writes a bundle whose bundle.json lists every file it wrote (tvmcompress/deploy.py).
BUNDLE_JSON_NAME = "bundle.json"


def _read_json_object(path: str) -> dict | None:
    """The JSON object in `path`; None if it is missing, unreadable or not an object. FileNotFoundError when
    the directory holding it vanished (foreign_content looks again)."""
    if not os.path.isdir(os.path.dirname(path)):
        raise FileNotFoundError(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def foreign_content(directory: str) -> str | None:
    """Why `directory` is not one tvmcompress wrote (a phrase), or None when it is empty, an artifact of
    `compile` (manifest.json with schema_version, nothing but ARTIFACT_FILES/ARTIFACT_DIRS) or a bundle of
    `export` (bundle.json whose `files` lists every file in it). Only such a directory may be replaced."""
    for _ in range(10):
        try:
            return _foreign_content(directory)
        except FileNotFoundError:
            # Something vanished while we looked: another writer of this OUT swapping it (they hold the lock,
            # we may not yet). Look again; a directory that is gone holds nothing to lose.
            if not os.path.isdir(directory):
                return None
    return _foreign_content(directory)


def _is_file(path: str) -> bool:
    """A regular file (not a link); FileNotFoundError when it vanished."""
    return stat.S_ISREG(os.lstat(path).st_mode)


def _is_dir(path: str) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


def _foreign_content(directory: str) -> str | None:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    if not names:
        return None
    manifest = _read_json_object(os.path.join(directory, MANIFEST_NAME))
    if manifest is not None and "schema_version" in manifest:
        for name in names:
            path = os.path.join(directory, name)
            if not (name in ARTIFACT_FILES and _is_file(path) or name in ARTIFACT_DIRS and _is_dir(path)):
                return f"it holds '{name}', which tvmcompress did not write"
        return None
    bundle = _read_json_object(os.path.join(directory, BUNDLE_JSON_NAME))
    if bundle is not None and "schema_version" in bundle and isinstance(bundle.get("files"), dict):
        listed = set(bundle["files"]) | {BUNDLE_JSON_NAME}
        for root, dirs, files in os.walk(directory):
            for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(root, d)))]:
                rel = os.path.relpath(os.path.join(root, name), directory)
                if rel not in listed:
                    return f"it holds '{rel}', which tvmcompress did not write"
        if not os.path.isdir(directory):
            raise FileNotFoundError(directory)
        return None
    if not os.path.isdir(directory):
        raise FileNotFoundError(directory)
    return f"it holds '{names[0]}' and no {MANIFEST_NAME} of a tvmcompress artifact"


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def check_output_dir_writable(out: str, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an OUT that replacing could lose a user's file, and fail before the (long) build if OUT cannot be
    created. OUT may be a new path, an empty directory or a directory tvmcompress wrote (`foreign_content`);
    never a file, a link, the working directory or one of its ancestors, or a directory holding one of `inputs`
    (the model, its external data, calibration data, a tuning database, the cache)."""
    if not str(out).strip():
        raise TvmcompressError("the output path is empty: pass -o DIR, a new directory for the artifact")
    shown = str(out)
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    try:
        mode = os.lstat(out).st_mode  # once: another writer of OUT may be swapping it right now
    except (FileNotFoundError, NotADirectoryError):  # the parent checks below explain it
        mode = None
    except OSError as err:
        raise TvmcompressError(f"cannot write '{shown}': {err.strerror}; choose another -o path") from None
    if mode is not None and stat.S_ISLNK(mode):
        raise TvmcompressError(f"output '{shown}' is a symbolic link: pass the directory itself or a new path as -o")
    if mode is not None and not stat.S_ISDIR(mode):
        raise TvmcompressError(f"output '{shown}' exists and is not a directory: choose another -o path")
    real = os.path.realpath(out)
    try:
        cwd = os.path.realpath(os.getcwd())
    except FileNotFoundError:  # the working directory was deleted: nothing of it to protect
        cwd = None
    if out == parent or cwd is not None and _is_within(cwd, real):
        raise TvmcompressError(
            f"output '{shown}' is the working directory or above it, and would be replaced: pass a new directory as -o"
        )
    for path in inputs:
        if _is_within(os.path.realpath(path), real):
            raise TvmcompressError(
                f"output '{shown}' holds the input '{path}', which replacing it would delete: pass a new directory as -o"
            )
    if os.path.isdir(out):
        reason = foreign_content(out)
        if reason is not None:
            raise TvmcompressError(
                f"output '{shown}' is not a directory tvmcompress wrote ({reason}): tvmcompress only replaces its own "
                "output; pass a new or empty directory as -o"
            )
    if not os.path.isdir(parent):
        raise TvmcompressError(f"cannot write '{out}': its parent directory '{parent}' does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TvmcompressError(f"cannot write '{out}': no write permission in '{parent}'; choose another -o path")


_TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while a cleanup or the final swap runs, so an interrupt cannot leave half of it
    done; a signal that arrives meanwhile is raised again right after. Python runs signal handlers in the main
    thread whichever thread the kernel picks (TVM keeps a thread pool), so the handlers are swapped for a
    recorder rather than the signals masked. A signal with its default action (no Python handler) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for signum in _TERMINATING_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, lambda received, _frame: pending.append(received))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _unlocked(path: str) -> bool:
    """Whether no process holds the flock a live ArtifactWriter keeps on its temporary directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class ArtifactWriter:
    """Context manager: files go into `self.tmpdir`; on success the directory replaces OUT in one rename.

    Beside OUT it creates, and removes again: `.OUT.tmp-<pid>-*` (the directory being written; the writer holds
    an flock on it), `.OUT.old-<pid>-*` (the replaced OUT during the swap) and `.OUT.lock` (an flock that
    serializes the swaps of concurrent writers of one OUT). Leftovers of a killed writer (no flock held, pid
    gone) are swept by the next writer of that OUT. `inputs`: paths OUT must not contain
    (check_output_dir_writable)."""

    def __init__(self, out: str, inputs: Sequence[str | os.PathLike] = ()):
        self.shown = os.fspath(out)
        self.out = os.path.abspath(out)
        self.inputs = tuple(inputs)
        self.tmpdir = ""
        self._tmp_fd: int | None = None

    def _sibling(self, kind: str) -> str:
        return f".{os.path.basename(self.out)}.{kind}"

    @contextlib.contextmanager
    def _out_locked(self) -> Iterator[None]:
        """An exclusive flock on `.OUT.lock`, removed by whoever holds it last: a waiter that finds the file
        replaced under it (the holder unlinked it) retries on the new one."""
        path = os.path.join(os.path.dirname(self.out), self._sibling("lock"))
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as err:
                raise TvmcompressError(f"cannot write '{self.shown}': {err.strerror} ({path}); choose another -o path") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)  # releases the flock

    def _sweep(self) -> None:
        """Remove `.OUT.tmp-<pid>-*` / `.OUT.old-<pid>-*` left by writers that died (SIGKILL, power loss).
        Runs under the OUT lock, so no live writer is mid-swap."""
        parent = os.path.dirname(self.out)
        pattern = re.compile(rf"{re.escape(self._sibling(''))}(tmp|old)-(\d+)-[a-z0-9_]+")
        for name in os.listdir(parent):
            match = pattern.fullmatch(name)
            if match is None:
                continue
            path = os.path.join(parent, name)
            pid = int(match.group(2))
            if pid != os.getpid() and not _pid_alive(pid) and _unlocked(path):
                log.info("removing %s, left by an interrupted tvmcompress (pid %d)", path, pid)
                shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> "ArtifactWriter":
        parent = os.path.dirname(self.out)
        try:
            with _signals_deferred(), self._out_locked():
                # Under the lock: no other writer is between its two renames, when OUT is gone or its files are
                # being deleted (a check outside the lock read such a half-swapped OUT as "not ours").
                check_output_dir_writable(self.out, self.inputs)
                self._sweep()
                try:
                    self.tmpdir = tempfile.mkdtemp(prefix=self._sibling(f"tmp-{os.getpid()}-"), dir=parent)
                    self._tmp_fd = os.open(self.tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    fcntl.flock(self._tmp_fd, fcntl.LOCK_EX)
                except OSError as err:
                    raise TvmcompressError(f"cannot write '{self.out}': {err.strerror}; choose another -o path") from None
        except BaseException:
            # A failure, or a signal held back above and raised on the way out: `with` calls no __exit__ when
            # __enter__ raises, so the directory goes here.
            self.__exit__(*sys.exc_info())
            raise
        return self

    def path(self, name: str) -> str:
        return os.path.join(self.tmpdir, name)

    def __exit__(self, exc_type, exc, tb) -> None:
        with _signals_deferred():
            try:
                if exc_type is not None:
                    if self.tmpdir:
                        shutil.rmtree(self.tmpdir, ignore_errors=True)
                    return
                try:
                    self._swap()
                except BaseException:
                    shutil.rmtree(self.tmpdir, ignore_errors=True)
                    raise
            finally:
                if self._tmp_fd is not None:
                    os.close(self._tmp_fd)
                    self._tmp_fd = None

    def _swap(self) -> None:
        os.chmod(self.tmpdir, 0o755)  # mkdtemp makes it 0700
        parent = os.path.dirname(self.out)
        old = None
        with self._out_locked():
            # Again, under the lock: OUT may have changed during the build (another writer, the user).
            check_output_dir_writable(self.out, self.inputs)
            try:
                if os.path.isdir(self.out):
                    # Swap: move the old OUT aside, rename the new one in, then delete the old one.
                    old = tempfile.mkdtemp(prefix=self._sibling(f"old-{os.getpid()}-"), dir=parent)
                    os.rename(self.out, os.path.join(old, "x"))
                os.rename(self.tmpdir, self.out)
            except OSError as err:
                if old is not None:
                    if not os.path.exists(self.out):  # put the old OUT back
                        with contextlib.suppress(OSError):
                            os.rename(os.path.join(old, "x"), self.out)
                    if not os.path.exists(os.path.join(old, "x")):
                        os.rmdir(old)
                raise TvmcompressError(f"cannot replace '{self.shown}': {err.strerror}; choose another -o path") from None
        if old is not None:  # outside the lock: another writer need not wait for a large delete
            shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class IOSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    # What model.so takes or returns when it differs from `dtype`: a sub-byte type's carrier (sub_byte_io.py).
    library_dtype: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IOSpec":
        library_dtype = data.get("library_dtype")
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]),
                   str(library_dtype) if library_dtype else None)

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        return {**data, "library_dtype": self.library_dtype} if self.library_dtype else data


def _refuse_json_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _io_problem(entry: Any, where: str) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} is not an object"
    if not isinstance(entry.get("name"), str) or not isinstance(entry.get("dtype"), str):
        return f"{where} lacks a name or dtype string"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d < 1 << 40 for d in shape) or len(shape) > 32:
        return f"{where} has shape {shape!r}, not a list of sizes"
    library_dtype = entry.get("library_dtype")
    if library_dtype is not None and not isinstance(library_dtype, str):
        return f"{where} has library_dtype {library_dtype!r}"
    for dtype in (entry["dtype"], library_dtype):
        if dtype and not _known_dtype(dtype):
            return f"{where} has unknown dtype {dtype!r}"
    return None


def _known_dtype(name: str) -> bool:
    """A dtype a model's input or output can have: numpy's numbers, ml_dtypes' (bfloat16, float8_*) and ours."""
    import numpy as np

    from .sub_byte_io import LIBRARY_DTYPES

    if name in LIBRARY_DTYPES:
        return True
    try:
        if np.dtype(name).kind in "biuf" and name == np.dtype(name).name:
            return True
    except TypeError:
        pass
    import ml_dtypes

    kind = getattr(ml_dtypes, name, None)
    return isinstance(kind, type) and issubclass(kind, np.generic)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the structure of a loaded manifest (a short phrase), or None.

    Checks what loading, running, inspecting and exporting read, so that a damaged manifest gives one line
    instead of a KeyError or TypeError deep inside them."""
    for key, kind in (("inputs", list), ("outputs", list), ("target", dict), ("hashes", dict), ("sizes", dict),
                      ("versions", dict), ("build_seconds", (int, float))):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            return f"'{key}' is missing or not a {kind.__name__ if isinstance(kind, type) else 'number'}"
    for group in ("inputs", "outputs"):
        for index, entry in enumerate(manifest[group]):
            problem = _io_problem(entry, f"{group}[{index}]")
            if problem:
                return problem
    target = manifest["target"]
    for key in ("preset", "arch", "runner"):
        if not isinstance(target.get(key), str):
            return f"target.{key} is missing or not a string"
    if not isinstance(target.get("requires", []), list) or not isinstance(target.get("json", {}), dict):
        return "target.requires or target.json has the wrong type"
    if not _is_int(target.get("json", {}).get("num-cores", 0) or 0):
        return "target.json.num-cores is not an integer"
    library_hash = manifest["hashes"].get(LIBRARY_NAME)
    if not isinstance(library_hash, str) or len(library_hash) != 64:
        return f"no sha256 recorded for {LIBRARY_NAME}"
    for name in (WEIGHTS_NAME, RELAX_MODULE_NAME):
        if not isinstance(manifest["hashes"].get(name, ""), str):
            return f"the sha256 of {name} is not a string"
    if not isinstance(manifest.get("separate_weights", False), bool):
        return "'separate_weights' is not true or false"
    for key, value in manifest["sizes"].items():
        if key != "weights_breakdown" and value is not None and not _is_int(value):
            return f"sizes.{key} is not an integer"
    memory = manifest.get("memory")
    if memory is not None and (not isinstance(memory, dict) or not all(_is_int(v) or v is None for v in memory.values())):
        return "'memory' is not an object of byte counts"
    return None


def save_relax_module(mod, path: str) -> None:
    """RELAX_MODULE_NAME: the Relax module that model.so was built from (`export --static` rebuilds it)."""
    import tvm  # here, not above: a CLI cache hit copies artifacts without TVM

    with open(path, "w", encoding="utf-8") as f:
        f.write(tvm.ir.save_json(mod))
