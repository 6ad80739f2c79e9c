"""Debris and races at -o: SIGTERM/SIGHUP/SIGINT remove the temporary directory and end the process the
conventional way; concurrent writers of one -o serialize their swaps (no traceback, no leftovers); what a
killed writer left (`.OUT.tmp-<pid>-*`, `.OUT.old-<pid>-*`) is swept by the next writer of that -o."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import onnx
import pytest

from tvmcompress.artifact import ArtifactWriter

from .safety_helpers import snapshot, tiny_model

# A CLI whose `compile` opens the artifact writer and waits (no TVM: the signal path in a second, not a minute).
_WAITING_CLI = textwrap.dedent("""
    import sys, time
    import tvmcompress.cli as cli
    from tvmcompress.artifact import ArtifactWriter

    def waiting_compile(args):
        with ArtifactWriter(args.output) as writer:
            with open(writer.path("model.so"), "wb") as f:
                f.write(b"x" * 1000)
            print("ready", flush=True)
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                if "--wrap" in sys.argv:  # as TVM does with an exception raised in a Python callback it called
                    raise RuntimeError("Traceback (most recent call last): ... KeyboardInterrupt") from None
                raise
        return 0

    cli._COMMANDS["compile"] = waiting_compile
    sys.exit(cli.main([a for a in sys.argv[1:] if a != "--wrap"]))
""")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("signum, returncode, line", [
    (signal.SIGTERM, -signal.SIGTERM, "tvmcompress: terminated by SIGTERM"),
    (signal.SIGHUP, -signal.SIGHUP, "tvmcompress: terminated by SIGHUP"),
    (signal.SIGINT, 130, "tvmcompress: interrupted"),
], ids=["SIGTERM", "SIGHUP", "SIGINT"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["raised", "wrapped-by-tvm"])
def test_signal_removes_the_temporary_directory(tmp_path, signum, returncode, line, wrapped):
    (tmp_path / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _WAITING_CLI, "compile", "m.onnx", "-o", "out",
                             *(["--wrap"] if wrapped else [])], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert any(name.startswith(".out.tmp-") for name in os.listdir(tmp_path))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == returncode and err.strip() == line and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_ignored_sighup_stays_ignored(tmp_path):
    """Under `nohup` SIGHUP is ignored: the build must go on (the handler is not installed over SIG_IGN)."""
    proc = subprocess.Popen([sys.executable, "-c", _WAITING_CLI, "compile", "m.onnx", "-o", "out"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM and os.listdir(tmp_path) == []


def test_next_writer_sweeps_what_dead_writers_left(tmp_path):
    dead = _dead_pid()
    swept = [f".out.tmp-{dead}-abc123_x", f".out.old-{dead}-zz9xyq01"]
    for name in swept:
        (tmp_path / name / "x").mkdir(parents=True)
        (tmp_path / name / "x" / "model.so").write_bytes(b"\0" * 4096)
    # Kept: a live writer (its flock held, here by this test, though its pid looks dead: another pid namespace),
    # a live pid, another OUT's leftovers, a name we never make, and the user's own hidden directory.
    kept = [f".out.tmp-{dead}-locked01", f".out.tmp-{os.getppid()}-livepid1", f".other.tmp-{dead}-abcdefgh",
            ".out.tmp-noPID", ".out.backup"]
    for name in kept:
        (tmp_path / name).mkdir()
    held = os.open(tmp_path / kept[0], os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        with ArtifactWriter(str(tmp_path / "out")) as writer:
            Path(writer.path("manifest.json")).write_text('{"schema_version": 1}')
    finally:
        os.close(held)
    assert sorted(os.listdir(tmp_path)) == sorted(["out", *kept])


_WRITER = textwrap.dedent("""
    import json, sys
    from tvmcompress.artifact import ArtifactWriter
    out, who = sys.argv[1], sys.argv[2]
    for round in range(40):  # without the lock, 4 x 60 rounds crash (FileNotFoundError) and leave .old-/.tmp-
        with ArtifactWriter(out) as writer:
            for name in ("model.so", "weights.bin", "report.json"):
                with open(writer.path(name), "w") as f:
                    f.write(who * 1000)
            with open(writer.path("manifest.json"), "w") as f:
                json.dump({"schema_version": 1, "who": who}, f)
""")


def test_concurrent_writers_of_one_output_never_collide(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "out"), who], stderr=subprocess.PIPE,
                                text=True) for who in "abcd"]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "Traceback" not in err, err
    assert os.listdir(tmp_path) == ["out"]  # no lock, tmp or old directory left
    import json

    who = json.loads((tmp_path / "out" / "manifest.json").read_text())["who"]
    # One writer's complete output, never a mix of two.
    assert {(tmp_path / "out" / n).read_text() for n in ("model.so", "weights.bin", "report.json")} == {who * 1000}


# --- the real CLI, a real build ------------------------------------------------------------------------------------


def _start_compile(tmp_path: Path, out: str = "out") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tvmcompress.cli", "compile", "tiny.onnx", "-o", out],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_tmp(tmp_path: Path, proc: subprocess.Popen, out: str = "out") -> None:
    deadline = time.monotonic() + 300
    while not any(n.startswith(f".{out}.tmp-") for n in os.listdir(tmp_path)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signum, returncode", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGHUP, -signal.SIGHUP),
                                                (signal.SIGINT, 130)], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_during_a_real_build_leaves_nothing(tmp_path, signum, returncode):
    onnx.save(tiny_model(), tmp_path / "tiny.onnx")
    before = snapshot(tmp_path)
    proc = _start_compile(tmp_path)
    _wait_for_tmp(tmp_path, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    if proc.returncode == 0:  # the tiny build finished before the signal was handled: a complete artifact
        pytest.skip("the build won the race")
    assert proc.returncode == returncode and len(lines) == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_two_real_builds_of_one_output_and_a_killed_one(tmp_path):
    onnx.save(tiny_model(), tmp_path / "tiny.onnx")
    # SIGKILL: nothing can clean up; the next build of that -o sweeps the leftovers.
    killed = _start_compile(tmp_path)
    _wait_for_tmp(tmp_path, killed)
    killed.kill()
    killed.communicate()
    assert any(n.startswith(".out.tmp-") for n in os.listdir(tmp_path))
    both = [_start_compile(tmp_path), _start_compile(tmp_path)]
    for proc in both:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and err == "" and out.startswith("wrote out:"), err
    assert sorted(os.listdir(tmp_path)) == ["out", "tiny.onnx"]
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "model.so", "relax_module.json", "report.html",
                                                     "report.json"]


def test_a_signal_during_the_swap_is_handled_after_it():
    """The final rename and the cleanup run with SIGINT/SIGTERM/SIGHUP held: the handler runs once, after them."""
    from tvmcompress.artifact_files import _signals_deferred

    seen = []
    previous = signal.signal(signal.SIGHUP, lambda signum, _frame: seen.append(signum))
    try:
        with _signals_deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            for _ in range(1000):  # bytecodes run: an undeferred Python handler would have run by now
                pass
            assert seen == []
        assert seen == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_while_the_writer_opens_removes_its_directory(tmp_path, monkeypatch):
    """A signal held back while the temporary directory is made is raised as __enter__ ends; `with` then calls no
    __exit__, so __enter__ must remove the directory itself (a real build hit this: SIGTERM as the build began)."""
    import tempfile as tempfile_mod

    class Stop(Exception):
        pass

    def raising(signum, _frame):
        raise Stop

    real_mkdtemp = tempfile_mod.mkdtemp

    def mkdtemp_then_signal(*args, **kwargs):
        made = real_mkdtemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGHUP)
        return made

    previous = signal.signal(signal.SIGHUP, raising)
    monkeypatch.setattr("tvmcompress.artifact_files.tempfile.mkdtemp", mkdtemp_then_signal)
    try:
        with pytest.raises(Stop):
            with ArtifactWriter(str(tmp_path / "out")):
                pytest.fail("the held-back signal must end __enter__")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert os.listdir(tmp_path) == []
