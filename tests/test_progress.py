"""Progress and output routing (tvmcompress/progress.py): bars on a terminal, throttled log lines otherwise,
nothing under -q, and TVM's own output (MetaSchedule's logger, C++ lines on fd 2) kept out of stderr unless -v."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import onnx
import pytest

import zoo
from tvmcompress import progress


@pytest.fixture(autouse=True)
def restore_progress_mode():
    yield
    progress.configure(progress.LOG)


def test_log_mode_throttles_to_first_interval_and_the_end(caplog, monkeypatch):
    progress.configure(progress.LOG)
    clock = iter([0.0, 1.0, 2.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="tvmcompress.progress"):
        with progress.progress("calibration", total=4, unit="sample") as bar:
            for _ in range(4):
                bar.update(1, best="1 ms")
    lines = [r.getMessage() for r in caplog.records]
    # One line once 10 s have passed (the 3rd sample, at 11 s), one for the last sample; none per sample.
    assert [line.split(" (")[0] for line in lines] == ["calibration: 3/4 sample, best 1 ms",
                                                      "calibration: 4/4 sample, best 1 ms"]


def test_bar_mode_draws_one_line_with_status(caplog):
    stream = io.StringIO()
    progress.configure(progress.BAR, stream=stream)
    with progress.progress("tuning", total=64, unit="trial") as bar:
        bar.update(32, tasks="1/2", best="0.120 ms")
        bar.update(32, tasks="2/2", best="0.100 ms")
    text = stream.getvalue()
    assert "tuning" in text and "64/64" in text and "best 0.100 ms" in text and "tasks 2/2" in text
    assert text.count("\n") == 1  # redrawn in place with \r, one line left at the end
    assert not caplog.records


def test_bar_on_a_fresh_pty_is_one_line_redrawn_in_place(tmp_path):
    """A pty starts at 0x0 columns/rows, where tqdm would draw nothing: the bar still shows, on one line."""
    import pty

    script = tmp_path / "bar.py"
    script.write_text("from tvmcompress import progress\n"
                      "progress.configure(progress.BAR)\n"
                      "with progress.progress('tuning', 16, unit='trial') as bar:\n"
                      "    bar.update(8, best='0.1 ms')\n"
                      "    bar.update(8, best='0.09 ms')\n")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(script)], stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO once the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    lines = [line for line in b"".join(chunks).decode().split("\r\n") if line.strip()]
    assert len(lines) == 1 and lines[0].count("\r") >= 2 and "16/16" in lines[0] and "best 0.09 ms" in lines[0], lines


def test_quiet_mode_writes_nothing(caplog, capsys):
    progress.configure(progress.QUIET)
    with caplog.at_level(logging.DEBUG):
        with progress.progress("calibration", total=2) as bar:
            bar.update(2)
        with progress.stage("build"):
            pass
    assert not caplog.records and capsys.readouterr() == ("", "")


def test_stage_logs_its_time(caplog):
    progress.configure(progress.LOG)
    with caplog.at_level(logging.INFO, logger="tvmcompress.progress"):
        with progress.stage("link"):
            pass
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("stage link: 0.0")


def test_native_stderr_goes_to_the_log(caplog, capfd):
    with caplog.at_level(logging.INFO, logger="tvmcompress.tvm"):
        with progress.native_stderr_to_log():
            os.write(2, b"[12:00:00] src/foo.cc:1: Warning: Fast mode segfaults\n")
    assert capfd.readouterr().err == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "[12:00:00] src/foo.cc:1: Warning: Fast mode segfaults")]


def test_native_stderr_is_a_warning_when_the_block_fails(caplog, capfd):
    with caplog.at_level(logging.INFO, logger="tvmcompress.tvm"), pytest.raises(RuntimeError):
        with progress.native_stderr_to_log():
            os.write(2, b"Check failed: x\n")
            raise RuntimeError("boom")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.WARNING, "Check failed: x")]


@pytest.mark.parametrize("verbose, level", [(False, logging.WARNING), (True, logging.INFO)])
def test_metaschedule_console_handler_is_replaced_by_ours(tmp_path, capsys, caplog, verbose, level):
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    progress.configure(progress.LOG, show_library_output=verbose)
    progress.route_metaschedule_logging()  # as tuning.py does around extracted_tasks_to_tune_contexts
    get_loggers_from_work_dir(str(tmp_path), ["task"])
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    assert any(type(h) is logging.StreamHandler for h in ms_logger.handlers)
    progress.route_metaschedule_logging()
    assert not any(type(h) is logging.StreamHandler for h in ms_logger.handlers)
    assert ms_logger.propagate and ms_logger.level == level
    # The task scheduler's table and XGBoost's lines log through child loggers: not on stdout, and through our
    # handlers only with -v.
    with caplog.at_level(logging.DEBUG, logger="tvm.s_tir"):
        ms_logger.setLevel(level)  # caplog.at_level on the parent would override the level under test
        logging.getLogger("tvm.s_tir.meta_schedule.task_scheduler.task_scheduler").info(" ID | Name | FLOP")
        logging.getLogger("tvm.s_tir.meta_schedule.cost_model.xgb_model").debug("XGB iter 0")
    out = capsys.readouterr().out
    assert out == "" if not verbose else out.count("\n") <= 1  # with -v: its "Logging directory" line only
    shown = [r.getMessage() for r in caplog.records if r.name.startswith("tvm.s_tir")]
    assert shown == ([" ID | Name | FLOP"] if verbose else [])


def quiet_compile(tmp_path, name: str) -> subprocess.CompletedProcess:
    builder, shapes = zoo.ZOO[name]
    model = tmp_path / f"{name}.onnx"
    onnx.save(builder(), str(model))
    shape_flags = [f for n, s in shapes.items() for f in ("--input-shape", f"{n}={','.join(map(str, s))}")]
    return subprocess.run([sys.executable, "-m", "tvmcompress.cli", "-q", "compile", str(model),
                           "-o", str(tmp_path / "out"), *shape_flags], capture_output=True, text=True, timeout=600)


def test_quiet_compile_leaves_stderr_empty(tmp_path):
    done = quiet_compile(tmp_path, "mlp")
    assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith("wrote ")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_quiet_compile_leaves_stderr_empty_for_every_zoo_model(tmp_path, name):
    done = quiet_compile(tmp_path, name)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
