"""Count what an aarch64 program executes under qemu-user, per instruction class and per symbol.

Our TCG plugin (insn_count.c, built here with the host gcc) records every translated block's address, its
instruction words and how often it ran. This module runs a command under `qemu-aarch64 -plugin`, reads the
record, classifies each A64 instruction word by its encoding group and attributes each block to the shared
object and symbol it lies in (load addresses from the guest's `LD_DEBUG=files`, symbols from `nm`).

    profile = count_command([runner, ...], cpu="cortex-a72")
    profile.totals()                    # {"neon": ..., "load": ..., ...}
    per_run = profile.minus(profile_of_one_run).scaled(1 / extra_runs)   # steady state, setup cancelled

Counts are exact for what qemu executes: a block's instructions are counted when it is entered (the plugin's
one inline add per block), which is exact unless a block is left midway by a fault or signal. The guest must
be single-threaded (the add is not atomic). Guest programs see a fake /proc/cpuinfo and CPU topology for the
chosen core (see `guest_root`), since qemu-user would show them the x86 host's, which ARM libraries misparse.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from tvmcompress.errors import TvmcompressError

HERE = Path(__file__).resolve().parent
PLUGIN_SOURCES = (HERE / "insn_count.c", HERE / "qemu_plugin_api.h")
SYSROOT = Path("/usr/aarch64-linux-gnu")

# Instruction classes, in report order. "neon" is Advanced SIMD vector data processing (the 0Q.01110 space);
# "fp_scalar" is scalar FP and Advanced SIMD scalar; loads/stores of SIMD&FP registers are "vload"/"vstore".
CLASSES = ("neon", "sve", "fp_scalar", "int", "branch", "load", "store", "vload", "vstore", "other")
VECTOR_CLASSES = ("neon", "sve")
MEMORY_CLASSES = ("load", "store", "vload", "vstore")

# MIDR part numbers for the fake /proc/cpuinfo: ARM libraries (cpuinfo, in ONNX Runtime) pick kernels from them.
CPU_PARTS = {"cortex-a53": 0xD03, "cortex-a72": 0xD08, "cortex-a76": 0xD0B, "neoverse-n1": 0xD0C}
CPU_FEATURES = {
    "cortex-a53": "fp asimd evtstrm crc32 cpuid",
    "cortex-a72": "fp asimd evtstrm crc32 cpuid",
    "cortex-a76": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    "neoverse-n1": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
}


def cache_dir() -> Path:
    base = os.environ.get("TVMCOMPRESS_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "tvmcompress") / "perf_lab"


def missing_tool() -> str | None:
    """None if the lab can run here, else one line saying what to install."""
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 not found: install the Debian package qemu-user"
    if shutil.which("gcc") is None:
        return "gcc not found (it builds the counting plugin): install the Debian package gcc"
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        return f"no aarch64 sysroot at {SYSROOT}: install the Debian package libc6-arm64-cross"
    return None


def build_plugin() -> Path:
    """Compile insn_count.c into the cache (once per source version); return the .so path."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in PLUGIN_SOURCES)).hexdigest()[:16]
    target = cache_dir() / f"insn_count-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        tmp = Path(scratch) / target.name
        subprocess.run(
            ["gcc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-o", str(tmp),
             str(HERE / "insn_count.c"), "-lpthread"],
            check=True, capture_output=True, text=True,
        )
        os.replace(tmp, target)  # atomic: a concurrent builder sees the old name or the whole file
    return target


def guest_root(cpu: str) -> Path:
    """A qemu -L prefix: the aarch64 sysroot plus a /proc/cpuinfo and CPU topology of one `cpu` core.

    qemu-user looks up every absolute path the guest opens under the -L prefix first, so these files shadow
    the host's (an x86 /proc/cpuinfo makes ONNX Runtime's cpuinfo crash; see the module docstring).
    """
    if cpu not in CPU_PARTS:
        raise TvmcompressError(f"unknown cpu '{cpu}': use one of {', '.join(CPU_PARTS)}")
    root = cache_dir() / f"root-{cpu}"
    cpuinfo = (
        f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {CPU_FEATURES[cpu]}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x{CPU_PARTS[cpu]:03x}\nCPU revision\t: 0\n\n"
    )
    files = {"proc/cpuinfo": cpuinfo, "sys/devices/system/cpu/possible": "0\n",
             "sys/devices/system/cpu/present": "0\n", "sys/devices/system/cpu/online": "0\n"}
    for rel, text in files.items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    link = root / "lib"
    if not link.is_symlink():
        link.symlink_to(SYSROOT / "lib")
    return root


# ---- classification ---------------------------------------------------------------------------------------


def classify(words: np.ndarray) -> np.ndarray:
    """Index into CLASSES for each A64 instruction word, from the top-level encoding groups (Arm ARM C4.1)."""
    w = np.asarray(words, dtype=np.uint32)
    op1 = (w >> 25) & 0xF
    out = np.full(w.shape, CLASSES.index("other"), dtype=np.int8)
    out[(op1 & 0b1110) == 0b1000] = CLASSES.index("int")  # data processing, immediate
    out[(op1 & 0b0111) == 0b0101] = CLASSES.index("int")  # data processing, register
    out[(op1 & 0b1110) == 0b1010] = CLASSES.index("branch")  # branches, exceptions, system
    simd = (op1 & 0b0111) == 0b0111
    # Advanced SIMD vector encodings have bit 28 clear (0Q.01110...); scalar FP and SIMD scalar have it set.
    out[simd & (((w >> 28) & 1) == 0)] = CLASSES.index("neon")
    out[simd & (((w >> 28) & 1) == 1)] = CLASSES.index("fp_scalar")
    out[op1 == 0b0010] = CLASSES.index("sve")
    memory = (op1 & 0b0101) == 0b0100
    group = (w >> 27) & 0b111
    vector_reg = ((w >> 26) & 1) == 1
    opc = (w >> 22) & 0b11
    # Single-register forms (bits 29:27 = 111): V=1 loads have opc bit 0 set (STR Q is opc=10); GPR loads are
    # every opc but 00 (LDRS*, PRFM). Literal loads (011) only load. Pairs, exclusives and structures: L = bit 22.
    is_load = np.where(group == 0b111, np.where(vector_reg, (opc & 1) == 1, opc != 0),
                       np.where(group == 0b011, True, ((w >> 22) & 1) == 1))
    for load, vec, name in [(True, False, "load"), (False, False, "store"), (True, True, "vload"), (False, True, "vstore")]:
        out[memory & (is_load == load) & (vector_reg == vec)] = CLASSES.index(name)
    return out


# ---- profiles ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Block:
    """One translated block: where it lies (object, offset in it), its words, and how often it ran."""

    obj: str
    offset: int
    words: tuple[int, ...]
    count: float


@dataclasses.dataclass
class Profile:
    """Executed blocks of one run (or a difference of runs), keyed by (object, offset, words)."""

    blocks: dict[tuple[str, int, tuple[int, ...]], float]
    symbols: dict[str, list[tuple[int, int, str]]]  # object -> sorted (offset, size, name)

    def minus(self, other: "Profile") -> "Profile":
        keys = set(self.blocks) | set(other.blocks)
        diff = {k: self.blocks.get(k, 0.0) - other.blocks.get(k, 0.0) for k in keys}
        return Profile({k: v for k, v in diff.items() if v != 0}, {**other.symbols, **self.symbols})

    def scaled(self, factor: float) -> "Profile":
        return Profile({k: v * factor for k, v in self.blocks.items()}, self.symbols)

    def iter_blocks(self):
        for (obj, offset, words), count in self.blocks.items():
            yield Block(obj, offset, words, count)

    def totals(self, objects: set[str] | None = None) -> dict[str, float]:
        """Executed instructions per class (and "total"), optionally only in the named objects."""
        sums = np.zeros(len(CLASSES))
        for block in self.iter_blocks():
            if objects is not None and block.obj not in objects:
                continue
            sums += np.bincount(classify(np.array(block.words, dtype=np.uint32)), minlength=len(CLASSES)) * block.count
        result = {name: float(v) for name, v in zip(CLASSES, sums)}
        result["total"] = float(sums.sum())
        return result

    def symbol_of(self, obj: str, offset: int) -> str:
        table = self.symbols.get(obj) or []
        i = bisect.bisect_right(table, (offset, 1 << 62, "")) - 1
        # A stripped library keeps only its exported symbols: an address past the nearest one's end is in
        # code with no name, which "?" says rather than borrowing the neighbour's.
        if i < 0 or (table[i][1] and offset >= table[i][0] + table[i][1]):
            return "?"
        return table[i][2]

    def by_symbol(self) -> dict[tuple[str, str], dict[str, float]]:
        """Executed instructions per class for each (object, symbol)."""
        out: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(len(CLASSES)))
        for block in self.iter_blocks():
            key = (block.obj, self.symbol_of(block.obj, block.offset))
            out[key] += np.bincount(classify(np.array(block.words, dtype=np.uint32)), minlength=len(CLASSES)) * block.count
        return {k: {**{n: float(x) for n, x in zip(CLASSES, v)}, "total": float(v.sum())} for k, v in out.items()}


_LINK_MAP = re.compile(r"file=(\S+) \[\d+\];\s+generating link map\s*\n[^\n]*base: 0x([0-9a-f]+)\s+size: 0x([0-9a-f]+)")


def _parse_load_map(stderr: str) -> list[tuple[int, int, str]]:
    """(start, end, path) of each shared object, from the guest loader's LD_DEBUG=files trace."""
    lines = "\n".join(re.sub(r"^\s*\d+:\s?", "", line) for line in stderr.splitlines())
    return sorted((int(b, 16), int(b, 16) + int(s, 16), f) for f, b, s in _LINK_MAP.findall(lines))


def _symbols(path: str) -> list[tuple[int, int, str]]:
    """Sorted (offset, size, name) of the code symbols of a shared object (the full table, else the dynamic one)."""
    nm = shutil.which("aarch64-linux-gnu-nm") or shutil.which("nm")
    rows: list[tuple[int, int, str]] = []
    for extra in ([], ["-D"]):
        result = subprocess.run([nm, "--defined-only", "-S", *extra, path], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[2] in "tTwW":
                # With the full table, code past a symbol's recorded size still belongs to it: LLVM emits TVM's
                # parallel loop bodies as unnamed code right after the `*_compute_` function that launches them.
                # A stripped library's exported symbols say nothing about the code between them: keep sizes.
                rows.append((int(parts[0], 16), int(parts[1], 16) if extra else 0, parts[3]))
            elif len(parts) == 3 and parts[1] in "tTwW":  # no size recorded
                rows.append((int(parts[0], 16), 0, parts[2]))
        if rows:
            break
    return sorted(set(rows))


def parse_blocks(text: str, load_map: list[tuple[int, int, str]], main: str = "main") -> dict:
    """Sum the plugin's block records by (object, offset, words); addresses outside any object go to `main`."""
    starts = [start for start, _, _ in load_map]
    blocks: dict[tuple[str, int, tuple[int, ...]], float] = defaultdict(float)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        vaddr, count, n = int(fields[0], 16), int(fields[1]), int(fields[2])
        words = tuple(int(x, 16) for x in fields[3:3 + n])
        i = bisect.bisect_right(starts, vaddr) - 1
        if i >= 0 and vaddr < load_map[i][1]:
            obj, offset = Path(load_map[i][2]).name, vaddr - load_map[i][0]
        else:
            obj, offset = main, vaddr
        blocks[(obj, offset, words)] += count
    return dict(blocks)


def count_command(command: list[str], cpu: str = "max", env: dict[str, str] | None = None,
                  symbol_objects: dict[str, str] | None = None, timeout: float | None = None) -> Profile:
    """Run `command` (an aarch64 program and its arguments) under qemu with the counting plugin.

    `cpu` is a qemu -cpu model ("max" for a static test program; a key of CPU_PARTS gives the guest that core's
    /proc/cpuinfo too). `env` sets guest variables. `symbol_objects` maps an object's file name to a path to
    read symbols from (the objects' own paths are used otherwise).
    """
    reason = missing_tool()
    if reason is not None:
        raise TvmcompressError(reason)
    plugin = build_plugin()
    root = guest_root(cpu) if cpu in CPU_PARTS else SYSROOT
    with tempfile.TemporaryDirectory(prefix="tvmcompress-perf-lab-") as scratch:
        out = Path(scratch) / "blocks.txt"
        qemu = ["qemu-aarch64", "-cpu", cpu, "-L", str(root), "-plugin", f"{plugin},out={out}",
                "-E", "LD_DEBUG=files"]
        for key, value in (env or {}).items():
            qemu += ["-E", f"{key}={value}"]
        result = subprocess.run(qemu + list(command), capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.splitlines()[-5:])
            raise RuntimeError(f"{command[0]} failed under qemu (exit {result.returncode}):\n{result.stdout[-2000:]}\n{tail}")
        load_map = _parse_load_map(result.stderr)
        blocks = parse_blocks(out.read_text(), load_map, main=Path(command[0]).name)
    symbols: dict[str, list[tuple[int, int, str]]] = {}
    paths = {Path(p).name: p for _, _, p in load_map}
    paths.update(symbol_objects or {})
    paths.setdefault(Path(command[0]).name, command[0])
    for obj in {key[0] for key in blocks}:
        if obj in paths and Path(paths[obj]).exists():
            symbols[obj] = _symbols(paths[obj])
    return Profile(blocks, symbols)


def steady_state(run, extra_runs: int) -> Profile:
    """Per-run counts with setup cancelled: (run(1 + extra_runs) - run(1)) / extra_runs.

    `run(n)` returns the Profile of a process that performs n inferences. Loading, weight packing and
    first-run work appear in both and cancel; what remains is what one more inference executes.
    """
    once = run(1)
    many = run(1 + extra_runs)
    return many.minus(once).scaled(1.0 / extra_runs)
