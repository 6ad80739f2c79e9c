"""Cycle estimates for counted aarch64 code: llvm-mca on each hot block, weighted by how often it ran.

For the hottest blocks of a Profile (those that together execute `coverage` of its instructions), the block's
words are disassembled with llvm-mc and handed to llvm-mca as one code region each; llvm-mca simulates the
region as a loop body for the chosen core's scheduling model, and its cycles per iteration times the block's
measured execution count is the block's estimate. The remaining instructions are charged at the covered
blocks' average cycles per instruction.

What this leaves out, on purpose and stated wherever the numbers are shown: caches and memory (every load hits
L1), branch mispredictions, and blocks' overlap with their neighbours. It ranks code by how well its
instructions fit the core's pipelines; it is not a wall-clock prediction.

LLVM's scheduling models: Cortex-A53 has its own; in LLVM 19, Cortex-A72 and Cortex-A76 both use the
Cortex-A57 model and Neoverse-N1 has its own (llvm-mca-19 is preferred when installed; LLVM 14 also gives N1
the A57 model).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets.perf_lab.counter import Block, Profile

CPUS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")
# Every extension our builds or ONNX Runtime may emit, so that parsing never depends on the -mcpu chosen.
_MATTR = "+neon,+fullfp16,+dotprod,+i8mm,+bf16,+crc,+lse,+rcpc,+sve,+sve2"
_ITERATIONS = 100


def tools() -> tuple[str, str]:
    """(llvm-mc, llvm-mca), the newest installed pair."""
    for suffix in ("-19", "-18", "-17", "-16", "-15", "-14", ""):
        mc, mca = shutil.which(f"llvm-mc{suffix}"), shutil.which(f"llvm-mca{suffix}")
        if mc and mca:
            return mc, mca
    raise TvmcompressError("llvm-mca not found: install the Debian package llvm-19 (or llvm)")


def disassemble(words: tuple[int, ...], mc: str) -> list[str] | None:
    """Assembly lines for the words, or None if any word does not decode (the block is then left out)."""
    text = "\n".join(" ".join(f"0x{(w >> s) & 0xFF:02x}" for s in (0, 8, 16, 24)) for w in words)
    result = subprocess.run([mc, "--disassemble", "-triple=aarch64", f"-mattr={_MATTR}"], input=text,
                            capture_output=True, text=True)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip() and not line.strip().startswith(".")]
    if result.returncode != 0 or "invalid" in result.stderr or len(lines) != len(words):
        return None
    return lines


_SEPARATOR = 0xD4224680  # brk #0x1234: between blocks in one llvm-mc call; no compiler emits it in a hot loop


def disassemble_many(blocks: list[tuple[int, ...]], mc: str) -> list[list[str] | None]:
    """`disassemble` for many blocks in one llvm-mc process (one process per block costs minutes on a busy host)."""
    words = [w for block in blocks for w in (*block, _SEPARATOR)]
    text = "\n".join(" ".join(f"0x{(w >> s) & 0xFF:02x}" for s in (0, 8, 16, 24)) for w in words)
    result = subprocess.run([mc, "--disassemble", "-triple=aarch64", f"-mattr={_MATTR}"], input=text,
                            capture_output=True, text=True)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip() and not line.strip().startswith(".")]
    out, current = [], []
    for line in lines:
        if line.replace("\t", " ").split() == ["brk", "#0x1234"]:
            out.append(current)
            current = []
        else:
            current.append(line)
    if len(out) != len(blocks):  # a separator was lost: fall back to one call per block
        return [disassemble(block, mc) for block in blocks]
    # A block with an undecodable word came back short: leave it out rather than misalign its instructions.
    return [asm if len(asm) == len(block) else None for asm, block in zip(out, blocks)]


@dataclasses.dataclass(frozen=True)
class BlockEstimate:
    block: Block
    symbol: str
    cycles_per_iteration: float  # llvm-mca's steady state for one pass through the block

    @property
    def cycles(self) -> float:
        return self.cycles_per_iteration * self.block.count


@dataclasses.dataclass(frozen=True)
class Estimate:
    cpu: str
    cycles: float  # whole profile, tail charged at the covered CPI
    instructions: float
    covered_instructions: float
    hot: list[BlockEstimate]


def _run_mca(mca: str, cpu: str, regions: list[list[str]]) -> list[float]:
    source = []
    for i, lines in enumerate(regions):
        source += [f"# LLVM-MCA-BEGIN r{i}", *lines, f"# LLVM-MCA-END r{i}"]
    result = subprocess.run(
        [mca, "-mtriple=aarch64", f"-mcpu={cpu}", f"-mattr={_MATTR}", f"-iterations={_ITERATIONS}",
         "-summary-view", "-instruction-info=0", "-resource-pressure=0"],
        input="\n".join(source) + "\n", capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"llvm-mca failed for {cpu}: {result.stderr[-2000:]}")
    cycles = [float(c) for c in re.findall(r"^Total Cycles:\s+(\d+)", result.stdout, flags=re.MULTILINE)]
    iterations = [float(c) for c in re.findall(r"^Iterations:\s+(\d+)", result.stdout, flags=re.MULTILINE)]
    if len(cycles) != len(regions):
        raise RuntimeError(f"llvm-mca reported {len(cycles)} regions for {len(regions)}")
    return [c / n for c, n in zip(cycles, iterations)]


def estimate(profile: Profile, cpus=CPUS, coverage: float = 0.97, max_blocks: int = 600) -> dict[str, Estimate]:
    """Estimated cycles of `profile` on each core of `cpus` (see the module docstring for the method)."""
    mc, mca = tools()
    blocks = sorted((b for b in profile.iter_blocks() if b.count > 0), key=lambda b: -b.count * len(b.words))
    total = sum(b.count * len(b.words) for b in blocks)
    hottest, running = [], 0.0
    for block in blocks:
        if running >= coverage * total or len(hottest) >= max_blocks:
            break
        hottest.append(block)
        running += block.count * len(block.words)
    chosen, asm, covered = [], [], 0.0
    for block, lines in zip(hottest, disassemble_many([b.words for b in hottest], mc)):
        if lines is None:
            continue
        chosen.append(block)
        asm.append(lines)
        covered += block.count * len(block.words)
    out = {}
    for cpu in cpus:
        per_iteration = _run_mca(mca, cpu, asm) if asm else []
        hot = [BlockEstimate(b, profile.symbol_of(b.obj, b.offset), c) for b, c in zip(chosen, per_iteration)]
        covered_cycles = sum(h.cycles for h in hot)
        cycles = covered_cycles * (total / covered) if covered else 0.0
        out[cpu] = Estimate(cpu, cycles, total, covered, sorted(hot, key=lambda h: -h.cycles))
    return out
