"""A long fuzz campaign: python tests/fuzz/campaign.py --start 0 --count 1000 --out fuzz.jsonl

Each batch of seeds runs in a fresh worker process, so a segfault in a compile costs one batch (whose seeds are
then re-run one per process to pin it) and not the campaign. Every outcome goes to --out as one JSON line; the
summary (matched / refused / wrong / internal, with the seeds and the first line of each failure) goes to stdout.
Resumable: seeds already in --out are skipped.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker(seeds: list[int]) -> None:
    sys.path[:0] = [HERE, os.path.dirname(HERE)]
    import graphgen
    import harness

    for outcome in harness.run_batch(seeds):
        ops = sorted({n.op_type for n in graphgen.generate(outcome.seed).graph.node})
        print("OUTCOME " + json.dumps({"seed": outcome.seed, "kind": outcome.kind, "detail": outcome.detail,
                                       "ops": ops}), flush=True)


def _run_worker(seeds: list[int], timeout: float) -> list[dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", ",".join(map(str, seeds))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        stdout, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as err:
        stdout, code = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""), "timeout"
    done = [json.loads(line[8:]) for line in stdout.splitlines() if line.startswith("OUTCOME ")]
    missing = [s for s in seeds if s not in {d["seed"] for d in done}]
    if missing and len(seeds) == 1:
        return [{"seed": seeds[0], "kind": "internal", "detail": f"worker died ({code})", "ops": []}]
    for s in missing:  # the worker died: find which seed killed it
        done += _run_worker([s], timeout)
    return done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--out", default="fuzz_campaign.jsonl")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        _worker([int(s) for s in args.worker.split(",")])
        return 0
    seen = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            seen = {r["seed"]: r for r in map(json.loads, f)}
    todo = [s for s in range(args.start, args.start + args.count) if s not in seen]
    for i in range(0, len(todo), args.batch):
        for record in _run_worker(todo[i:i + args.batch], args.timeout):
            seen[record["seed"]] = record
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
        print(f"{len(seen)} graphs done", file=sys.stderr, flush=True)
    records = [seen[s] for s in range(args.start, args.start + args.count) if s in seen]
    counts = collections.Counter(r["kind"] for r in records)
    print(f"{len(records)} graphs: " + ", ".join(f"{k} {counts[k]}" for k in ("match", "refused", "wrong", "internal")))
    by_cause = collections.defaultdict(list)
    for r in records:
        if r["kind"] != "match":
            by_cause[(r["kind"], r["detail"][:160])].append(r["seed"])
    for (kind, detail), seeds in sorted(by_cause.items(), key=lambda kv: -len(kv[1])):
        print(f"{kind:8s} {len(seeds):4d}  seeds {seeds[:8]}{' ...' if len(seeds) > 8 else ''}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
