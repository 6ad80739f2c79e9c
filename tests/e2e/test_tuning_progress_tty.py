"""A tuning build on a terminal (a pseudo-terminal here): one progress line redrawn in place, no MetaSchedule task
table or XGBoost lines; with -v those come back (through our logging)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import onnx
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import zoo  # noqa: E402

pytestmark = pytest.mark.slow


def _run_on_a_pty(argv: list[str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=900), b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.parametrize("verbose", [False, True])
def test_tuning_shows_one_progress_line(tmp_path, verbose):
    model = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), str(model))
    argv = [sys.executable, "-m", "tvmcompress.cli", *(["-v"] if verbose else []), "compile", str(model),
            "-o", str(tmp_path / "out"), "--tune-trials", "16"]
    code, text = _run_on_a_pty(argv)
    assert code == 0, text[-3000:]
    print(text[-4000:])  # kept in the test log: what the terminal showed
    bar_lines = [line for line in text.replace("\r\n", "\n").split("\n") if "tuning" in line and "trial" in line]
    table = "Total trials" in text or "| FLOP" in text or "Logging directory" in text
    if verbose:
        assert table, text[-3000:]  # MetaSchedule's own output, through our log handler
    else:
        assert not table, text[-3000:]
        # The bar is redrawn in place: several states separated by \r on one terminal line.
        assert len(bar_lines) == 1 and bar_lines[0].count("\r") >= 1, text[-3000:]
        # Trials counted against the budget (MetaSchedule may stop a task early), with the best total so far.
        assert re.search(r" [1-9]\d*/16 ", bar_lines[0]) and "best" in bar_lines[0], bar_lines
