"""Model fuzzer: seeded structural and byte mutations of small valid ONNX models, compiled by the CLI in worker
processes, each outcome checked against the bad-input contract (issue 18).

A seed fixes everything: the base model, the mutations and their parameters, so a finding is reproduced with
`mutate(seed)` alone. Compiling in-process (`tvmcompress.cli.main`) keeps a model that fails at load or check at a
few milliseconds; one worker process runs a batch, so a worker that dies (a signal, a hang past the time limit) is
itself the finding, pinned to the seed it was on, and the parent restarts a worker for the rest of the batch.

The contract for every model, whatever it holds:
- exit 0 (it compiled, and verification against ONNX Runtime passed) or exit 2 (one stderr line
  `tvmcompress: error: ...`, nothing at -o);
- no traceback (an uncaught exception is exit 1), no signal, no hang;
- no `.tmp-*`/`.old-*` beside -o, nothing left in the process's temp directory;
- the input model byte-identical afterwards.

Run a campaign by hand: `python tests/robustness/model_mutations.py 0 1000 --jobs 2` (prints a JSON summary).
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

TIME_LIMIT_S = 120  # per model; a worker stuck longer is killed by faulthandler and recorded as a hang

# ONNX Runtime keeps a session-id file in the temp directory (one per directory, rewritten, never ours to remove).
ORT_FILES = {".ses"}

# ONNX tensor element types, plus values that are not one (0 = UNDEFINED, 99 and 1000 unknown).
ELEM_TYPES = list(range(0, 24)) + [99, 1000]


def _tiny() -> onnx.ModelProto:
    from robustness.safety_helpers import tiny_model

    return tiny_model()


def _base_models() -> list[tuple[str, onnx.ModelProto]]:
    import zoo

    return [
        ("tiny", _tiny()),
        ("mlp", zoo.mlp()),
        ("cnn", zoo.cnn()),
        ("digits_cnn", onnx.load(str(REPO_DIR / "examples" / "digits_cnn.onnx"))),
    ]


_BASES: list[tuple[str, onnx.ModelProto]] | None = None


def bases() -> list[tuple[str, onnx.ModelProto]]:
    global _BASES
    if _BASES is None:
        _BASES = _base_models()
    return _BASES


# ---------------------------------------------------------------------------------------------------------------
# structural mutations: each edits `m` in place and returns a short description, or None when it does not apply
# (the caller then picks another)


def _all_tensor_names(m: onnx.ModelProto) -> list[str]:
    g = m.graph
    names = [i.name for i in g.input] + [i.name for i in g.initializer]
    for n in g.node:
        names += [o for o in n.output if o]
    return names


def drop_node(m, rng):
    if not m.graph.node:
        return None
    i = rng.randrange(len(m.graph.node))
    op = m.graph.node[i].op_type
    del m.graph.node[i]
    return f"drop node {i} ({op})"


def rewire_input(m, rng):
    nodes = [n for n in m.graph.node if n.input]
    if not nodes:
        return None
    n = rng.choice(nodes)
    k = rng.randrange(len(n.input))
    target = rng.choice(_all_tensor_names(m) + ["missing_tensor", ""])
    n.input[k] = target
    return f"rewire {n.op_type}.input[{k}] -> {target!r}"


def cycle(m, rng):
    nodes = list(m.graph.node)
    if len(nodes) < 2:
        return None
    i = rng.randrange(len(nodes) - 1)
    j = rng.randrange(i, len(nodes))  # j == i: a node reading its own output
    if not nodes[i].input:
        return None
    nodes[i].input[0] = nodes[j].output[0]
    return f"cycle: node {i} ({nodes[i].op_type}) reads node {j}'s output"


def _pick_attr(m, rng):
    attrs = [(n, a) for n in m.graph.node for a in n.attribute]
    return rng.choice(attrs) if attrs else (None, None)


def change_attr_value(m, rng):
    n, a = _pick_attr(m, rng)
    if a is None:
        return None
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice([0, -1, 2, 7, -(2**31), 2**40])
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
    elif a.type == onnx.AttributeProto.INTS:
        if a.ints and rng.random() < 0.5:
            a.ints[rng.randrange(len(a.ints))] = rng.choice([0, -1, -5, 3, 2**33])
        else:
            del a.ints[:]
            a.ints.extend(rng.choice([[], [1], [0, 0, 0, 0, 0, 0, 0]]))
    elif a.type == onnx.AttributeProto.STRING:
        a.s = rng.choice([b"", b"BOGUS", b"\xff\xfe"])
    else:
        return None
    return f"{n.op_type}.{a.name} value changed"


def change_attr_type(m, rng):
    n, a = _pick_attr(m, rng)
    if a is None:
        return None
    name = a.name
    n.attribute.remove(a)
    kind = rng.choice(["s", "f", "ints", "i", "t", "empty"])
    if kind == "s":
        new = helper.make_attribute(name, "text")
    elif kind == "f":
        new = helper.make_attribute(name, 1.5)
    elif kind == "ints":
        new = helper.make_attribute(name, [1, 2, 3])
    elif kind == "i":
        new = helper.make_attribute(name, 3)
    elif kind == "t":
        new = helper.make_attribute(name, helper.make_tensor("t", TensorProto.FLOAT, [1], [1.0]))
    else:
        new = onnx.AttributeProto(name=name)  # no type, no value
    n.attribute.append(new)
    return f"{n.op_type}.{name} retyped to {kind}"


def delete_attr(m, rng):
    n, a = _pick_attr(m, rng)
    if a is None:
        return None
    n.attribute.remove(a)
    return f"{n.op_type}.{a.name} deleted"


def add_attr(m, rng):
    if not m.graph.node:
        return None
    n = rng.choice(list(m.graph.node))
    n.attribute.append(helper.make_attribute(rng.choice(["bogus", "axis", "group", "pads"]), rng.choice([5, -9])))
    return f"{n.op_type} gets an extra attribute"


def _value_infos(m):
    return list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info)


def change_dim(m, rng):
    vis = [v for v in _value_infos(m) if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")]
    if not vis:
        return None
    v = rng.choice(vis)
    dims = v.type.tensor_type.shape.dim
    action = rng.choice(["value", "symbol", "add", "remove"])
    if action == "add" or not dims:
        dims.add().dim_value = rng.choice([1, 3])
    elif action == "remove":
        del dims[rng.randrange(len(dims))]
    else:
        d = dims[rng.randrange(len(dims))]
        if action == "value":
            d.dim_value = rng.choice([0, 1, 5, -3, 2**40])
        else:
            d.dim_param = rng.choice(["N", "", "batch size"])
    return f"{v.name}: dim {action}"


def change_elem_type(m, rng):
    vis = [v for v in _value_infos(m) if v.type.HasField("tensor_type")]
    if not vis:
        return None
    v = rng.choice(vis)
    t = rng.choice(ELEM_TYPES)
    v.type.tensor_type.elem_type = t
    return f"{v.name}: elem_type {t}"


def duplicate_output_name(m, rng):
    g = m.graph
    if rng.random() < 0.5 and len(g.node) >= 2:
        a, b = rng.sample(range(len(g.node)), 2)
        g.node[b].output[0] = g.node[a].output[0]
        return f"node {b} writes node {a}'s output"
    g.output.append(onnx.ValueInfoProto())
    g.output[-1].CopyFrom(g.output[0])
    return "graph output listed twice"


def change_output_name(m, rng):
    out = m.graph.output[0] if m.graph.output else None
    if out is None:
        return None
    out.name = rng.choice(["missing_output", m.graph.input[0].name if m.graph.input else "x", ""])
    return f"graph output renamed {out.name!r}"


def change_opset(m, rng):
    if not m.opset_import:
        m.opset_import.add()
    op = m.opset_import[0]
    choice = rng.choice(["version", "domain", "remove", "duplicate"])
    if choice == "version":
        op.version = rng.choice([0, 1, 5, 11, 25, 99, 10000, -1])
        return f"opset {op.version}"
    if choice == "domain":
        op.domain = rng.choice(["ai.onnx.ml", "com.example", "ai.onnx"])
        return f"default opset domain {op.domain!r}"
    if choice == "remove":
        del m.opset_import[:]
        return "no opset_import"
    m.opset_import.append(helper.make_opsetid("", 7))
    return "default domain imported twice"


def change_ir_version(m, rng):
    m.ir_version = rng.choice([0, 1, 3, 11, 99, 2**40])
    return f"ir_version {m.ir_version}"


def empty_graph(m, rng):
    what = rng.choice(["nodes", "outputs", "inputs", "initializers", "all"])
    g = m.graph
    if what in ("nodes", "all"):
        del g.node[:]
    if what in ("outputs", "all"):
        del g.output[:]
    if what in ("inputs", "all"):
        del g.input[:]
    if what in ("initializers", "all"):
        del g.initializer[:]
    return f"graph without {what}"


def initializer_dtype(m, rng):
    inits = list(m.graph.initializer)
    if not inits:
        return None
    t = rng.choice(inits)
    new = rng.choice(ELEM_TYPES)
    t.data_type = new
    return f"initializer {t.name} data_type {new}"


def initializer_length(m, rng):
    inits = [t for t in m.graph.initializer if t.raw_data or t.float_data]
    if not inits:
        return None
    t = rng.choice(inits)
    if t.float_data:  # move to raw_data so its length can be wrong by a byte
        raw = onnx.numpy_helper.to_array(t).tobytes()
        del t.float_data[:]
        t.raw_data = raw
    raw = t.raw_data
    how = rng.choice(["short", "long", "empty", "odd"])
    t.raw_data = {"short": raw[: len(raw) // 2], "long": raw + raw, "empty": b"", "odd": raw[:-1]}[how]
    return f"initializer {t.name} raw_data {how}"


def initializer_dims(m, rng):
    inits = list(m.graph.initializer)
    if not inits:
        return None
    t = rng.choice(inits)
    del t.dims[:]
    t.dims.extend(rng.choice([[], [0], [1], [2**31, 2**31], [-1, 4], [3, 3, 3, 3, 3]]))
    return f"initializer {t.name} dims {list(t.dims)}"


def drop_initializer(m, rng):
    if not m.graph.initializer:
        return None
    i = rng.randrange(len(m.graph.initializer))
    name = m.graph.initializer[i].name
    del m.graph.initializer[i]
    return f"initializer {name} removed"


def external_initializer(m, rng):
    inits = list(m.graph.initializer)
    if not inits:
        return None
    t = rng.choice(inits)
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    loc = rng.choice(["missing.bin", "../../../../etc/passwd", "/etc/hostname", ""])
    entry = t.external_data.add()
    entry.key, entry.value = "location", loc
    t.ClearField("raw_data")
    return f"initializer {t.name} external at {loc!r}"


def unknown_op(m, rng):
    if not m.graph.node:
        return None
    n = rng.choice(list(m.graph.node))
    if rng.random() < 0.5:
        n.op_type = rng.choice(["NoSuchOp", "", "Conv\xe9", "If"])
        return f"op_type {n.op_type!r}"
    n.domain = rng.choice(["com.example", "com.microsoft", "ai.onnx.ml", "\u00ff"])
    return f"{n.op_type} in domain {n.domain!r}"


def node_arity(m, rng):
    if not m.graph.node:
        return None
    n = rng.choice(list(m.graph.node))
    if rng.random() < 0.5 and n.input:
        del n.input[rng.randrange(len(n.input)):]
        return f"{n.op_type} loses inputs"
    n.input.append(rng.choice(_all_tensor_names(m)))
    return f"{n.op_type} gets an extra input"


def add_output_of_intermediate(m, rng):
    if not m.graph.node:
        return None
    n = rng.choice(list(m.graph.node))
    m.graph.output.append(helper.make_tensor_value_info(n.output[0], rng.choice([1, 7, 0]), None))
    return f"intermediate {n.output[0]} as graph output"


STRUCTURAL = [
    drop_node, rewire_input, cycle, change_attr_value, change_attr_type, delete_attr, add_attr, change_dim,
    change_elem_type, duplicate_output_name, change_output_name, change_opset, change_ir_version, empty_graph,
    initializer_dtype, initializer_length, initializer_dims, drop_initializer, external_initializer, unknown_op,
    node_arity, add_output_of_intermediate,
]


# ---------------------------------------------------------------------------------------------------------------
# byte mutations of the serialized model


def byte_mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "truncate", "insert", "zero_run", "garbage"])
    buf = bytearray(data)
    if kind == "flip":
        count = rng.choice([1, 2, 8, 64])
        for _ in range(count):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf), f"flip {count} bits"
    if kind == "truncate":
        cut = rng.randrange(len(buf))
        return bytes(buf[:cut]), f"truncate at {cut}"
    if kind == "insert":
        at = rng.randrange(len(buf) + 1)
        blob = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 100])))
        return bytes(buf[:at]) + blob + bytes(buf[at:]), f"insert {len(blob)} bytes at {at}"
    if kind == "zero_run":
        at = rng.randrange(len(buf))
        n = rng.choice([4, 64, 1024])
        buf[at:at + n] = bytes(len(buf[at:at + n]))
        return bytes(buf), f"zero {n} bytes at {at}"
    n = rng.choice([0, 1, 16, 4096])
    return bytes(rng.randrange(256) for _ in range(n)), f"{n} random bytes"


def mutate(seed: int) -> tuple[bytes, str]:
    """The serialized mutated model for `seed` and a description of what was done to it."""
    rng = random.Random(seed)
    base_name, base = rng.choice(bases())
    m = onnx.ModelProto()
    m.CopyFrom(base)
    notes = [base_name]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        for _attempt in range(10):
            mutation = rng.choice(STRUCTURAL)
            try:
                note = mutation(m, rng)
            except (ValueError, TypeError, IndexError) as err:  # protobuf refusing a value: try another one
                note = None
                notes.append(f"({mutation.__name__} refused by protobuf: {type(err).__name__})")
            if note:
                notes.append(note)
                break
    data = m.SerializeToString()
    if rng.random() < 0.3:
        data, note = byte_mutate(data, rng)
        notes.append(note)
    return data, "; ".join(notes)


# ---------------------------------------------------------------------------------------------------------------
# the worker: runs in its own process, compiles each seed's model, prints one JSON line per model


def _stray_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _check_one(seed: int, root: Path) -> dict:
    import logging
    import traceback

    from tvmcompress.cli import main

    data, note = mutate(seed)
    case = root / f"seed{seed}"
    case.mkdir()
    model = case / "model.onnx"
    model.write_bytes(data)
    out = case / "out"
    tmp = Path(os.environ["TMPDIR"])
    before_tmp = set(os.listdir(tmp))
    record: dict = {"seed": seed, "mutation": note, "findings": []}
    err = io.StringIO()
    saved = sys.stderr
    sys.stderr = err
    # main() calls logging.basicConfig, which binds to the stderr of the first call: unbind, so warnings of this
    # model land in this model's capture.
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
    start = time.monotonic()
    try:
        rc = main(["compile", str(model), "-o", str(out)])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
        if exc.code not in (0, 2):
            record["findings"].append(f"SystemExit({exc.code!r})")
    except BaseException as exc:  # noqa: BLE001 - an uncaught exception is exactly what we look for
        rc = 1
        record["findings"].append("traceback: " + "".join(traceback.format_exception_only(type(exc), exc)).strip())
        record["traceback"] = traceback.format_exc()[-3000:]
    finally:
        sys.stderr = saved
    record["seconds"] = round(time.monotonic() - start, 2)
    record["rc"] = rc
    stderr = err.getvalue()
    record["stderr"] = stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    if rc not in (0, 2):
        record["findings"].append(f"exit {rc}")
    if "Traceback" in stderr:
        record["findings"].append("traceback on stderr")
    if rc == 2:
        errors = [line for line in lines if line.startswith("tvmcompress: error: ")]
        if len(errors) != 1 or len(lines) != 1:
            record["findings"].append(f"exit 2 with {len(lines)} stderr lines ({len(errors)} error lines)")
        if os.path.lexists(out):
            record["findings"].append("something at -o after a refusal")
    if rc == 0 and not (out / "manifest.json").is_file():
        record["findings"].append("exit 0 without an artifact")
    strays = _stray_siblings(out)
    if strays:
        record["findings"].append(f"temp siblings left: {strays}")
    left = sorted(set(os.listdir(tmp)) - before_tmp - ORT_FILES)
    if left:
        record["findings"].append(f"temp directory entries left: {left}")
    if model.read_bytes() != data:
        record["findings"].append("input model changed")
    extra = sorted(set(os.listdir(case)) - {"model.onnx", "out"})
    if extra:
        record["findings"].append(f"files created beside the model: {extra}")
    return record


def worker(seeds: list[int], root: str) -> None:
    """Compile each seed's model; one JSON line per model on stdout, a `start` line before each."""
    import faulthandler

    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # anything the compiler prints must not corrupt the JSON stream
    for seed in seeds:
        print(json.dumps({"start": seed}), file=real_stdout, flush=True)
        # A hang: dump the stack and exit; the parent records the seed the worker was on.
        faulthandler.dump_traceback_later(TIME_LIMIT_S, exit=True)
        record = _check_one(seed, Path(root))
        faulthandler.cancel_dump_traceback_later()
        print(json.dumps(record), file=real_stdout, flush=True)


def _run_worker(seeds: list[int], root: Path, tmp: Path) -> tuple[list[dict], int, str]:
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONFAULTHANDLER="1")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import model_mutations; "
            f"model_mutations.worker({seeds!r}, {str(root)!r})")
    proc = subprocess.run(["nice", "-n", "10", sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, env=env, timeout=TIME_LIMIT_S * (len(seeds) + 2))
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return records, proc.returncode, proc.stderr


def run_batch(seeds: list[int], root: Path) -> list[dict]:
    """Every seed's record; a worker that dies is recorded against the seed it was on, and a fresh worker
    continues with the rest."""
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    results: list[dict] = []
    todo = list(seeds)
    while todo:
        records, rc, stderr = _run_worker(todo, root, tmp)
        done = [r for r in records if "rc" in r]
        results += done
        finished = {r["seed"] for r in done}
        started = [r["start"] for r in records if "start" in r]
        if rc == 0 and finished == set(todo):
            break
        dead = next((s for s in started if s not in finished), None)
        if dead is None:  # died before the first model: report it once, do not loop
            results.append({"seed": todo[0], "rc": rc, "findings": [f"worker died at start (rc {rc})"],
                            "stderr": stderr[-2000:]})
            dead = todo[0]
        else:
            _data, note = mutate(dead)
            kind = "hang" if "Timeout" in stderr else f"crash (worker rc {rc})"
            results.append({"seed": dead, "mutation": note, "rc": rc, "findings": [kind], "stderr": stderr[-3000:]})
        todo = [s for s in todo if s not in finished and s != dead]
    left = sorted(set(os.listdir(tmp)) - ORT_FILES)
    if left:
        results.append({"seed": None, "rc": None, "findings": [f"worker temp directory not empty: {left}"]})
    return results


def run_campaign(seeds: list[int], root: Path, jobs: int = 1, batch: int = 50) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    batches = [seeds[i:i + batch] for i in range(0, len(seeds), batch)]
    dirs = []
    for k in range(len(batches)):
        d = root / f"batch{k}"
        d.mkdir(parents=True)
        dirs.append(d)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(run_batch, batches, dirs))
    return [r for part in parts for r in part]


def summarize(results: list[dict]) -> dict:
    findings = [r for r in results if r["findings"]]
    return {
        "models": len([r for r in results if r["seed"] is not None]),
        "compiled": sum(r["rc"] == 0 for r in results),
        "refused": sum(r["rc"] == 2 for r in results),
        "crashes": sum(any(f.startswith("crash") for f in r["findings"]) for r in results),
        "hangs": sum("hang" in r["findings"] for r in results),
        "tracebacks": sum(any("traceback" in f or f.startswith("exit ") for f in r["findings"]) for r in results),
        "user_files_touched": sum(any("input model changed" in f or "beside the model" in f for f in r["findings"])
                                  for r in results),
        "temp_left": sum(any("temp" in f for f in r["findings"]) for r in results),
        "findings": [{k: r.get(k) for k in ("seed", "mutation", "rc", "findings", "stderr")} for r in findings],
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", help="write every record here")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="model-fuzz-") as tmpdir:
        res = run_campaign(list(range(ns.first, ns.first + ns.count)), Path(tmpdir), jobs=ns.jobs)
    if ns.json:
        Path(ns.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(summarize(res), indent=1))
