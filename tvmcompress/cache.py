"""A content-addressed cache of whole artifact directories (`--cache-dir DIR`, `compile(..., cache_dir=)`).

Key: sha256 over the model bytes and the bytes of every external data file it names, the canonical options JSON (`CompileOptions.to_json`), the target's identity
(the preset's TVM target dict and linker; for `host`, the CPU's model name, flags and core count, which is what
LLVM's host detection reads), the calibration and evaluation files' bytes, the tuning database's bytes, and the versions of
tvmcompress, TVM and TVM-FFI plus a digest of tvmcompress's own source files (an edited checkout must not
reuse builds of the old code). Budgets (--max-ram/--max-flash) are not in the key: they check an artifact,
they do not change it.

Layout: DIR/<key>/ is a complete artifact directory, exactly the bytes the fresh build wrote to its OUT, so a
hit's files are byte-identical to that build's (manifest.json keeps the `build_seconds` of the build that
made them). Entries appear by one rename of a finished temporary directory; a hit copies (never hardlinks: the
user may edit OUT) into a temporary directory beside OUT and renames it into place. A shared flock on DIR/.lock
covers reads and stores, an exclusive one `clear`, so a clear never pulls an entry out from under a copy.

Trust: model.so is native code that a hit hands to the user's process, so whoever can write to DIR can plant
code. A hit checks the copied model.so (and weights.bin, relax_module.json where recorded) against the sha256
in the entry's manifest before it renames the copy into OUT, and refuses the entry on a mismatch; that catches
damage and a careless plant, not someone who rewrites the manifest too: DIR must be writable by its user alone
(a new DIR is created 0700; one that others can write to gets a warning). DIR is marked with a CACHEDIR.TAG (https://bford.info/cachedir/); `clear`
deletes only entries and leftovers named as this module names them, and refuses a directory that holds
anything else and has no tag of ours.

Computing the key and restoring a hit (`lookup`) import neither TVM nor ONNX nor numpy; the CLI tries
`lookup` before it imports tvmcompress.api, so a hit costs the interpreter's start-up plus milliseconds
(bench/bench_cache_hit.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import TvmcompressError

log = logging.getLogger(__name__)

KEY_FORMAT = 2  # bump when the key's contents or the entry layout change (2: external data files)
ARTIFACTS_SUBDIR = "artifacts"  # ~/.cache/tvmcompress also holds runtime/ (foreign runtimes) and test data
_LOCK_NAME = ".lock"
_TAG_NAME = "CACHEDIR.TAG"
# The Cache Directory Tagging signature (backup tools skip such directories), then our own line, which `clear`
# looks for.
_TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
             "# This file is a cache directory tag created by tvmcompress (its artifact cache).\n")
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}")  # an entry: DIR/<key>/
_STAGING_NAME = re.compile(r"\.[0-9a-f]{12}\.tmp-[a-z0-9_]+")  # an interrupted store's staging directory
_SOURCE_SUFFIXES = (".py", ".cc", ".c", ".h", ".cmake", ".txt", ".json", ".html", ".in")


def cache_home() -> Path:
    """$XDG_CACHE_HOME/tvmcompress, else ~/.cache/tvmcompress."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvmcompress"


def default_cache_dir() -> Path:
    """Where `--cache` keeps artifacts: <cache_home>/artifacts."""
    return cache_home() / ARTIFACTS_SUBDIR


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_tree(root: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 over (relative path, bytes) of every file under root, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or (suffixes is not None and path.suffix not in suffixes):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Digest of tvmcompress's installed sources (tvmcompress/, passes/, targets/)."""
    digest = hashlib.sha256()
    for package in ("tvmcompress", "tvmcompress.passes", "tvmcompress.targets"):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            digest.update(package.encode() + b"=" + _hash_tree(Path(location), _SOURCE_SUFFIXES).encode())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "none"

    from . import __version__

    return {
        "tvmcompress": __version__,
        "tvmcompress-source": source_digest(),
        "apache-tvm": version("apache-tvm"),
        "apache-tvm-ffi": version("apache-tvm-ffi"),
    }


def _host_identity() -> dict[str, Any]:
    """What decides the `host` preset (LLVM's mcpu and the core count), read without importing TVM."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = value.strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"cpu": model, "flags": _sha256_bytes(flags.encode()), "cores": cores}


def _compiler_identity(compiler: str) -> dict[str, Any]:
    """The linker that writes model.so: its resolved path, size and mtime (a changed toolchain changes bytes)."""
    path = shutil.which(compiler)
    if path is None:
        return {"compiler": compiler}
    real = os.path.realpath(path)
    stat = os.stat(real)
    return {"compiler": real, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def target_identity(spec: str, cores: int | None) -> dict[str, Any]:
    from .targets import presets

    spec = spec.strip()
    if spec == "host":
        return {"host": _host_identity(), "cores": cores, "toolchain": _compiler_identity("g++")}
    preset = presets.with_cores(presets.resolve_preset(spec), cores)
    return {
        "preset": preset.name,
        "tvm_target": preset.tvm_target,
        "toolchain": _compiler_identity(preset.toolchain.compiler),
    }


# onnx.proto's field numbers on the paths from a ModelProto to every TensorProto (initializers, Constant and
# attribute tensors, sparse tensors, subgraphs of If/Loop/Scan, functions, training graphs), and from a
# TensorProto to its external_data entries: enough to find the files a model reads without importing onnx,
# which takes seconds and a cache hit must not wait for.
_MODEL, _TRAINING, _GRAPH, _NODE, _FUNCTION, _ATTRIBUTE, _SPARSE, _TENSOR, _ENTRY = range(9)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: _ENTRY},  # TensorProto.external_data: StringStringEntryProto {key = 1, value = 2}
}


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _length_delimited_fields(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(field number, payload) of each length-delimited field of one protobuf message; others are skipped."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield key >> 3, data[pos:pos + length]
            pos += length
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")


def external_data_locations(model_bytes: bytes) -> list[str]:
    """The `location` of every external data entry in a serialized ONNX model, sorted, without duplicates; []
    for bytes that are not a well-formed model (loading it reports that)."""
    if b"location" not in model_bytes:  # the key every external data entry must have: the common fast path
        return []
    locations: set[str] = set()
    stack = [(_MODEL, memoryview(model_bytes))]
    try:
        while stack:
            kind, data = stack.pop()
            if kind == _ENTRY:
                entry = dict(_length_delimited_fields(data))
                if bytes(entry.get(1, b"")) == b"location" and 2 in entry:
                    locations.add(bytes(entry[2]).decode("utf-8"))
                continue
            children = _CHILDREN[kind]
            stack.extend((children[field], payload) for field, payload in _length_delimited_fields(data)
                         if field in children)
    except (ValueError, UnicodeDecodeError):
        return []
    return sorted(locations)


def _external_data_files(model_path: str, model_bytes: bytes) -> dict[str, Path]:
    """{location: path} of the external data files next to the model that exist (a missing one is the
    build's error to report)."""
    directory = Path(model_path).parent
    found = {loc: directory / loc for loc in external_data_locations(model_bytes)}
    return {loc: path for loc, path in found.items() if path.is_file()}


def files_read(model, options) -> list[str]:
    """Every file or directory a compile of `model` with `options` reads: the model, its external data, the
    calibration and evaluation data, the tuning database. The output directory must not hold any of them."""
    paths: list[str] = []
    if isinstance(model, (str, os.PathLike)):
        paths.append(os.fspath(model))
        try:
            with open(model, "rb") as f:
                paths += [str(p) for p in _external_data_files(os.fspath(model), f.read()).values()]
        except OSError:
            pass
    paths += [path for path in (getattr(options, "calibration", None), getattr(options, "eval_data", None),
                                getattr(options, "train_data", None))
              if isinstance(path, str) and path]  # not data given in Python (data.Samples)
    if options.tune is not None and options.tune.database_dir:
        paths.append(options.tune.database_dir)
    return paths


def cache_key(model_bytes: bytes, target: str, options, model_name: str | None = None,
              model_path: str | None = None) -> str:
    """The entry name for compiling `model_bytes` for `target` with `options` (a CompileOptions).
    model_name (the file's stem) is in the manifest, so it is in the key too. model_path: where the model was
    read from; the external data files it names are read from beside it, so their bytes are in the key."""
    material: dict[str, Any] = {
        "format": KEY_FORMAT,
        "model": _sha256_bytes(model_bytes),
        "model_name": model_name,
        "options": options.to_json(),
        "target": target_identity(target, options.cores),
        "versions": _versions(),
    }
    # Data files change the build through their contents (calibration ranges, accuracy-budget decisions), not their
    # paths: hash the bytes.
    for field in ("calibration", "eval_data", "train_data"):
        path = getattr(options, field, None)
        if isinstance(path, str) and path:
            material[field] = _sha256_bytes(Path(path).read_bytes())
        elif path is not None:  # data.Samples: already identified by the digest of its arrays
            material[field] = path.digest
    if model_path is not None:
        material["external_data"] = {
            loc: _sha256_bytes(path.read_bytes()) for loc, path in _external_data_files(model_path, model_bytes).items()
        }
    if options.tune is not None and options.tune.database_dir and os.path.isdir(options.tune.database_dir):
        material["tuning_db"] = _hash_tree(Path(options.tune.database_dir))
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return _sha256_bytes(text.encode())


def _model_bytes_and_name(model) -> tuple[bytes, str | None, str | None]:
    """What the key needs of a model given as a path, bytes or an onnx.ModelProto (not imported: duck-typed):
    its bytes, its name (the file's stem, which the manifest records: source.Source.name) and its path."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        with open(path, "rb") as f:
            return f.read(), os.path.splitext(os.path.basename(path))[0], path
    if isinstance(model, bytes):
        return model, None, None
    return model.SerializeToString(deterministic=True), None, None


def lookup(cache_dir, model, target: str, options, output: str, budgets=None):
    """(key, Artifact from the cache copied to `output`) on a hit, (key, None) on a miss, (None, None) when
    the model or calibration file cannot be read (the fresh build reports that). Budgets are checked against
    the cached manifest before anything is written. Imports neither TVM nor ONNX."""
    from .artifact import check_output_dir_writable
    from .footprint import check_budgets

    cache = ArtifactCache(cache_dir)
    inputs = [*files_read(model, options), str(cache.directory)]
    # Before anything is written, the cache directory included: a refused OUT leaves no trace.
    check_output_dir_writable(output, inputs)
    try:
        model_bytes, name, path = _model_bytes_and_name(model)
        key = cache_key(model_bytes, target, options, name, path)
    except OSError:
        return None, None
    if not cache.restore(key, output, check=lambda manifest: check_budgets(budgets, manifest), inputs=inputs):
        return key, None
    from .artifact import Artifact

    artifact = Artifact(output)
    artifact.cache_hit = True
    return key, artifact


@dataclass(frozen=True)
class CacheInfo:
    directory: str
    entries: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "entries": self.entries, "bytes": self.bytes}


class ArtifactCache:
    """One cache directory. `restore` and `store` are safe to call from concurrent processes."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser().absolute()

    def _ensure(self) -> None:
        """Create DIR (0700: the cache hands out native code) and tag it; refuse a directory that is not ours."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._check_ours()
            tag = self.directory / _TAG_NAME
            if not tag.is_file():
                tag.write_text(_TAG_TEXT, encoding="utf-8")
            self._warn_if_shared()
        except OSError as err:
            raise TvmcompressError(
                f"cannot use cache directory '{self.directory}': {err.strerror}; pass another --cache-dir"
            ) from None

    def _warn_if_shared(self) -> None:
        """The trust boundary (module docstring): say so when others can write here. A warning, not an error: a
        team may share a cache on purpose, and the hash check still catches a careless plant."""
        info = self.directory.stat()
        if info.st_mode & 0o022 or info.st_uid not in (os.geteuid(), 0):
            log.warning(
                "cache directory %s can be written by other users, who could plant code that a cache hit hands to "
                "you: make it private (chmod go-w) or use another --cache-dir", self.directory,
            )

    def _tagged(self) -> bool:
        try:
            return (self.directory / _TAG_NAME).read_text(encoding="utf-8", errors="replace") == _TAG_TEXT
        except OSError:
            return False

    def _check_ours(self) -> None:
        """Refuse a directory that holds anything this module did not name, unless it carries our tag (a user
        may add files to a cache they know is ours; `clear` leaves those alone)."""
        if self._tagged():
            return
        for path in sorted(self.directory.iterdir()):
            if not (path.name in (_LOCK_NAME, _TAG_NAME) and path.is_file() and not path.is_symlink()
                    or _is_entry_or_staging(path)):
                raise TvmcompressError(
                    f"'{self.directory}' is not a tvmcompress cache (it holds '{path.name}' and no {_TAG_NAME} of "
                    "tvmcompress): nothing was changed there; pass a new or empty directory as --cache-dir"
                )

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self._ensure()
        with open(self.directory / _LOCK_NAME, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def entry(self, key: str) -> Path:
        return self.directory / key

    def _entries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in self.directory.iterdir() if _ENTRY_NAME.fullmatch(p.name) and _is_entry_or_staging(p)]

    def restore(self, key: str, output: str, check: Callable[[dict], None] | None = None,
                inputs: tuple[str, ...] | list[str] = ()) -> bool:
        """Copy entry `key` to `output` (atomically, replacing it); False on a miss. `check(manifest)` runs first
        and may raise (budgets), leaving `output` untouched; so does a copy whose model.so (or weights.bin)
        does not match the entry manifest's sha256. `inputs`: paths `output` must not contain."""
        from .artifact import MANIFEST_NAME, ArtifactWriter

        self._ensure()  # an unusable cache directory is an error now, not a warning after a long build
        entry = self.entry(key)
        if not (entry / MANIFEST_NAME).is_file():
            return False
        with self._locked(exclusive=False):
            if not (entry / MANIFEST_NAME).is_file():  # cleared while we waited
                return False
            if check is not None:
                try:
                    with open(entry / MANIFEST_NAME, encoding="utf-8") as f:
                        manifest = json.load(f)
                except (OSError, UnicodeDecodeError, ValueError):
                    manifest = None
                if not isinstance(manifest, dict):
                    raise self._damaged(entry, f"{MANIFEST_NAME} is not a JSON object")
                check(manifest)
            with ArtifactWriter(output, inputs) as writer:
                # copyfile, not copy2: fresh mtimes, so build systems see OUT as newer than its inputs.
                shutil.copytree(entry, writer.tmpdir, copy_function=shutil.copyfile, dirs_exist_ok=True)
                # The copy, not the entry, is checked: nothing can swap it between the check and the rename.
                self._check_hashes(entry, writer.tmpdir)
        log.info("cache hit %s: copied %s to %s", key[:12], entry, output)
        return True

    def _check_hashes(self, entry: Path, copy: str) -> None:
        """Refuse a copied entry whose native code or weights differ from what its manifest records."""
        from .artifact import LIBRARY_NAME, MANIFEST_NAME, RELAX_MODULE_NAME, WEIGHTS_NAME, sha256_file

        try:
            with open(os.path.join(copy, MANIFEST_NAME), encoding="utf-8") as f:
                hashes = json.load(f).get("hashes", {})
        except (OSError, ValueError, AttributeError):
            hashes = None
        # model.so always; weights.bin and relax_module.json (which `export --static` loads) where recorded.
        recorded_too = [n for n in (WEIGHTS_NAME, RELAX_MODULE_NAME) if isinstance(hashes, dict) and n in hashes]
        names = [LIBRARY_NAME, *recorded_too]
        for name in names:
            path = os.path.join(copy, name)
            recorded = hashes.get(name) if isinstance(hashes, dict) else None
            if not isinstance(recorded, str) or not os.path.isfile(path) or sha256_file(path) != recorded:
                raise self._damaged(entry, f"{name} does not match the sha256 its manifest records")

    def _damaged(self, entry: Path, what: str) -> TvmcompressError:
        return TvmcompressError(
            f"the cache entry {entry} is damaged or was tampered with ({what}); nothing was loaded or written: run "
            f"`tvmcompress cache clear --cache-dir {self.directory}` and keep that directory writable by you alone"
        )

    def store(self, key: str, artifact_dir: str) -> None:
        """Add the finished artifact at `artifact_dir` as entry `key`. A concurrent store of the same key is
        harmless (the same bytes; the first rename wins). Failures only warn: the build itself succeeded."""
        try:
            with self._locked(exclusive=False):
                if self.entry(key).is_dir():
                    return
                staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.tmp-", dir=self.directory))
                try:
                    shutil.copytree(artifact_dir, staging, copy_function=shutil.copyfile, dirs_exist_ok=True)
                    try:
                        os.rename(staging, self.entry(key))
                    except OSError:
                        if not self.entry(key).is_dir():
                            raise
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        except (OSError, TvmcompressError) as err:
            log.warning("could not store the build in the cache %s: %s", self.directory, err)
            return
        log.info("stored %s in the cache as %s", artifact_dir, key[:12])

    def info(self) -> CacheInfo:
        entries = self._entries()
        size = sum(p.stat().st_size for e in entries for p in e.rglob("*") if p.is_file())
        return CacheInfo(str(self.directory), len(entries), size)

    def clear(self) -> CacheInfo:
        """Remove every entry (and leftovers of interrupted stores); returns what was removed. Anything else in
        DIR stays; a DIR that is not a cache (`_check_ours`) is refused before anything is deleted."""
        if not self.directory.is_dir():
            return CacheInfo(str(self.directory), 0, 0)
        with self._locked(exclusive=True):  # _ensure: refuses what is not ours
            removed = self.info()
            for path in self.directory.iterdir():
                if _is_entry_or_staging(path):
                    shutil.rmtree(path, ignore_errors=True)
        return removed


def _is_entry_or_staging(path: Path) -> bool:
    """A name this module gives (an entry, or the staging directory of a store), on a real directory."""
    return ((_ENTRY_NAME.fullmatch(path.name) is not None or _STAGING_NAME.fullmatch(path.name) is not None)
            and path.is_dir() and not path.is_symlink())


# What `clear --all` may delete under <cache_home>, by name: the artifact cache, the foreign runtimes that
# targets/runtime_cache.py prepares (runtime/<arch>-tvm<version>/) and the onnx node-test cases that
# tests/conformance caches. Anything else there was not made by tvmcompress and stays.
_RUNTIME_SUBDIR = "runtime"
_RUNTIME_NAME = re.compile(r"[a-z0-9_]+-tvm[0-9][0-9A-Za-z.+_-]*")
_OUR_FILES = re.compile(r"onnx-[0-9][0-9A-Za-z.+_-]*-node-tests-v[0-9]+\.pkl")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def clear_everything() -> CacheInfo:
    """`tvmcompress cache clear --all`: what tvmcompress keeps in <cache_home> (artifacts, prepared foreign
    runtimes, cached test data), each recognised by its name before anything is deleted; symlinks and whatever
    else lives there (someone's files, another tool's cache) are left as they are, and named in a warning."""
    home = cache_home()
    if not home.is_dir() or home.is_symlink():
        return CacheInfo(str(home), 0, 0)
    removed_bytes, entries, kept = 0, 0, []
    artifacts = home / ARTIFACTS_SUBDIR
    if artifacts.is_dir() and not artifacts.is_symlink():
        # First, before anything else is deleted: clear() refuses a directory that is not an artifact cache.
        info = ArtifactCache(artifacts).clear()
        removed_bytes, entries = info.bytes, info.entries
        if {p.name for p in artifacts.iterdir()} <= {_LOCK_NAME, _TAG_NAME}:
            for name in (_LOCK_NAME, _TAG_NAME):
                with contextlib.suppress(FileNotFoundError):
                    (artifacts / name).unlink()
            artifacts.rmdir()
        else:
            kept.append(f"{ARTIFACTS_SUBDIR}/ (files that are not cache entries)")
    for path in sorted(home.iterdir()):
        if path.name == ARTIFACTS_SUBDIR and not path.is_symlink():
            continue  # handled above
        if path.name == _RUNTIME_SUBDIR and path.is_dir() and not path.is_symlink():
            for runtime in sorted(path.iterdir()):
                if _RUNTIME_NAME.fullmatch(runtime.name) and runtime.is_dir() and not runtime.is_symlink():
                    removed_bytes += _tree_bytes(runtime)
                    shutil.rmtree(runtime)
                else:
                    kept.append(f"{path.name}/{runtime.name}")
            _remove_if_empty(path)
        elif _OUR_FILES.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            removed_bytes += path.stat().st_size
            path.unlink()
        else:
            kept.append(path.name)
    _remove_if_empty(home)
    if kept:
        log.warning("cache clear --all left in %s what tvmcompress did not create: %s", home, ", ".join(kept))
    return CacheInfo(str(home), entries, removed_bytes)
