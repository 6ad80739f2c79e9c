"""Regenerate the `int8-peak` section of BENCHMARKS.md: the most multiply-accumulates per second one core of this
machine can issue with the instructions our fp32 and int8 kernels use, and so the ceiling on int8's speedup.

    python bench/bench_int8_peak.py [--output BENCHMARKS.md]

Each row is a loop of independent instruction chains in inline assembly (no loads, no dependencies between
chains), compiled with the host C compiler and run on one core: the issue rate of those instructions, which no
kernel can beat. Our kernels use:
- fp32: vfmadd231ps (ymm; zmm on AVX-512 hosts), 8 or 16 MACs each;
- int8 on AVX2 without VNNI: vpmaddubsw (u8 x s8 -> pairwise int16 sums), vpmaddwd with ones (-> int32),
  vpaddd (schedules/int8_intrinsics.py `AVX2`), 32 MACs per three instructions;
- int8 with AVX512-VNNI: vpdpbusd zmm, 64 MACs (`VNNI`); AVX-VNNI hosts have the ymm form, 32 MACs.
The row "two vpmaddubsw summed in int16" is what a kernel could do with 7-bit activations as well as 7-bit
weights (four products then fit int16); we do not, as it costs activation precision. Rows whose instructions this
CPU lacks are compiled (the assembler checks them) but not run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_sections import replace_section  # noqa: E402

from tvmcompress.targets import cpu_features  # noqa: E402

ITERATIONS = 50_000_000
REPEATS = 3


@dataclass(frozen=True)
class Sequence:
    key: str
    description: str
    requires: frozenset[str]  # cpu_features flags
    macs: int  # per loop iteration
    unit: str  # MACs per instruction group, for the table
    asm: list[str]  # one loop iteration, AT&T syntax


def _fma(reg: str) -> Sequence:
    lanes = 16 if reg == "zmm" else 8
    body = [f"vfmadd231ps %%{reg}14, %%{reg}15, %%{reg}{i}" for i in range(12)]
    requires = frozenset({"fma", "avx512f"} if reg == "zmm" else {"fma"})
    return Sequence(f"fp32-fma-{reg}", f"fp32 `vfmadd231ps` {reg}", requires, 12 * lanes, f"{lanes} per instruction",
                    body)


def _avx2_int8() -> Sequence:
    # Eight chains (accumulators ymm0-3, ymm8-11): t = maddubs(a, w); t = madd(t, ones); acc += t.
    # ymm13 holds the int16 ones, ymm4-7 the temporaries.
    body = []
    for accs in ((0, 1, 2, 3), (8, 9, 10, 11)):
        body += [f"vpmaddubsw %%ymm14, %%ymm15, %%ymm{4 + i}" for i in range(4)]
        body += [f"vpmaddwd %%ymm13, %%ymm{4 + i}, %%ymm{4 + i}" for i in range(4)]
        body += [f"vpaddd %%ymm{4 + i}, %%ymm{a}, %%ymm{a}" for i, a in enumerate(accs)]
    return Sequence("int8-avx2", "int8 `vpmaddubsw` + `vpmaddwd` + `vpaddd` ymm (our AVX2 kernel)",
                    frozenset({"avx2"}), 8 * 32, "32 per 3 instructions", body)


def _avx2_int16_sum() -> Sequence:
    body = [f"vpmaddubsw %%ymm14, %%ymm15, %%ymm{4 + i}" for i in range(8)]
    body += [f"vpaddw %%ymm{4 + i}, %%ymm{8 + i}, %%ymm{8 + i}" for i in range(4)]
    body += [f"vpmaddwd %%ymm13, %%ymm{8 + i}, %%ymm{8 + i}" for i in range(4)]
    body += [f"vpaddd %%ymm{8 + i}, %%ymm{i}, %%ymm{i}" for i in range(4)]
    return Sequence("int8-avx2-int16-sum", "int8 two `vpmaddubsw` summed in int16, then `vpmaddwd` + `vpaddd` "
                    "(needs 7-bit activations; not used)", frozenset({"avx2"}), 8 * 32, "64 per 5 instructions", body)


def _vex_vpdpbusd_ymm(dest: int) -> str:
    """`{vex} vpdpbusd %ymm14, %ymm15, %ymm<dest>` (AVX-VNNI) as bytes: some assemblers (the one of the Sapphire
    Rapids host in issue 17) reject the `{vex}` form. VEX.256.66.0F38.W0 50 /r: C4, then R~ X~ B~ and map 0F38 (2),
    then W=0, vvvv = ~15, L=1 (256 bits), pp=01 (66), the opcode, and ModRM (register form, reg = dest, rm = 14).
    Checked against GNU as 2.40's encoding of the mnemonic for each dest 0-11 (tests/test_bench_scripts.py)."""
    r_bar = 0x80 if dest < 8 else 0  # ModRM.reg's fourth bit, inverted
    b_bar = 0  # rm = 14: its fourth bit is set, inverted 0
    encoding = [0xC4, r_bar | 0x40 | b_bar | 0x02, 0x05, 0x50, 0xC0 | (dest & 7) << 3 | 14 & 7]
    return ".byte " + ", ".join(f"0x{b:02x}" for b in encoding)


def _vnni(reg: str) -> Sequence:
    lanes = 16 if reg == "zmm" else 8
    flag = "avx512vnni" if reg == "zmm" else "avxvnni"
    if reg == "zmm":
        body = [f"vpdpbusd %%zmm14, %%zmm15, %%zmm{i}" for i in range(12)]
    else:
        body = [_vex_vpdpbusd_ymm(i) for i in range(12)]
    note = " (AVX-VNNI; our kernels use zmm)" if reg == "ymm" else " (our AVX512-VNNI kernel)"
    return Sequence(f"int8-vnni-{reg}", f"int8 `vpdpbusd` {reg}{note}", frozenset({flag}), 12 * lanes * 4,
                    f"{lanes * 4} per instruction", body)


def sequences() -> list[Sequence]:
    return [_fma("ymm"), _fma("zmm"), _avx2_int8(), _avx2_int16_sum(), _vnni("ymm"), _vnni("zmm")]


def _c_source(seqs: list[Sequence], run: set[str]) -> str:
    clobbers = ", ".join(f'"xmm{i}"' for i in range(16))
    parts = [
        "#include <stdio.h>\n#include <time.h>\n",
        "static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);"
        " return t.tv_sec + t.tv_nsec * 1e-9; }\n",
        "int main(void) {\n  double t;\n",
    ]
    for seq in seqs:
        body = "".join(f'    "{line}\\n"\n' for line in seq.asm)
        loop = (f"  for (long n = 0; n < {ITERATIONS}L; n++) __asm__ volatile(\n{body}    ::: {clobbers});\n")
        if seq.key in run:
            parts.append(f"  t = now();\n{loop}  t = now() - t;\n"
                         f'  printf("{seq.key} %f\\n", {ITERATIONS}.0 * {seq.macs} / t / 1e9);\n')
        else:  # compiled so that the assembler checks it, never executed
            parts.append(f"  if (0) {{\n{loop}  }}\n")
    parts.append("  return 0;\n}\n")
    return "".join(parts)


def measure(features: cpu_features.CpuFeatures | None = None) -> dict[str, float]:
    """GMAC/s on one core per sequence key, for the sequences this CPU has (best of REPEATS runs)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"bench_int8_peak.py measures x86-64 instructions; this machine is {platform.machine()}")
    features = features or cpu_features.detect()
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("no C compiler: install Debian's gcc (scripts/setup.sh does)")
    seqs = sequences()
    run = {s.key for s in seqs if s.requires <= features.flags}
    with tempfile.TemporaryDirectory(prefix="tvmcompress-peak-") as tmp:
        src, exe = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
        pathlib.Path(src).write_text(_c_source(seqs, run))
        subprocess.run([compiler, "-O1", src, "-o", exe], check=True)
        best: dict[str, float] = {}
        for _ in range(REPEATS):
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
            for line in out.splitlines():
                key, value = line.split()
                best[key] = max(best.get(key, 0.0), float(value))
    return best


def int8_ceiling(peaks: dict[str, float]) -> tuple[str, str, float] | None:
    """(fp32 key, int8 key, ratio) for the instructions our kernels use on this CPU, or None."""
    fp32 = "fp32-fma-zmm" if "fp32-fma-zmm" in peaks else "fp32-fma-ymm"
    int8 = next((k for k in ("int8-vnni-zmm", "int8-avx2") if k in peaks), None)
    if fp32 not in peaks or int8 is None:
        return None
    return fp32, int8, peaks[int8] / peaks[fp32]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()
    features = cpu_features.detect()
    peaks = measure(features)
    seqs = {s.key: s for s in sequences()}
    fp32 = peaks.get("fp32-fma-zmm") or peaks.get("fp32-fma-ymm")
    rows = [f"| {seqs[k].description} | {seqs[k].unit} | {v:.1f} | {v / fp32:.2f}x |" for k, v in peaks.items()]
    ceiling = int8_ceiling(peaks)
    verdict = (f"On this machine our int8 kernels' instructions issue at most **{ceiling[2]:.2f}x** the "
               f"multiply-accumulates of our fp32 kernels' (`{ceiling[1]}` against `{ceiling[0]}`): an int8 build "
               "cannot run more than that much faster than an fp32 build doing the same multiplications, before "
               "memory, epilogues and the layers that stay in float." if ceiling else "No int8 row ran here.")
    command = "python bench/bench_int8_peak.py " + " ".join(sys.argv[1:])
    text = f"""## Instruction ceiling for int8 against fp32

Regenerated by `{command.strip()}` on {datetime.date.today().isoformat()}.

Machine: {platform.processor() or platform.machine()}, LLVM CPU `{features.mcpu}`, ISA
{", ".join(features.isa_summary()) or "baseline"}. One core; independent chains of each sequence in inline
assembly, best of {REPEATS} runs of {ITERATIONS:,} iterations.

| instruction sequence | MACs | GMAC/s (one core) | vs fp32 FMA |
|---|---|---|---|
{chr(10).join(rows)}

{verdict}
"""
    print(text)
    replace_section(args.output, "int8-peak", text)
    print(f"wrote section 'int8-peak' of {args.output}")


if __name__ == "__main__":
    main()
