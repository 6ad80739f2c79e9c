"""Progress for a person at a terminal, plain log lines for everyone else, nothing under -q; and TVM's own output
(MetaSchedule's loggers, XGBoost, C++ LOG(WARNING) lines on fd 2) routed through our logging.

Three modes, chosen once by the CLI (`configure`); the library default is LOG, so a program that imports
tvmcompress and configures no logging sees nothing:
- BAR: a tqdm bar with ETA per long step (calibration, tuning, distillation), updated in place on one line;
  `stage()` prints one "name  1.2 s" line per build stage. Log records go through `tqdm.write` so they never tear
  the bar.
- LOG: the same facts as INFO records of `tvmcompress.progress`, at most one every LOG_INTERVAL_S per bar plus
  the last, so a CI log does not get one line per calibration sample.
- QUIET: nothing; errors still reach stderr through the CLI.

Other code calls only `progress(...)`, `stage(...)`, `route_metaschedule_logging()` and `native_stderr_to_log()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import IO, Iterable, Iterator, TypeVar

log = logging.getLogger("tvmcompress.progress")
native_log = logging.getLogger("tvmcompress.tvm")  # what TVM's C++ side printed on fd 2

BAR, LOG, QUIET = "bar", "log", "quiet"
LOG_INTERVAL_S = 10.0
_METASCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"

_mode = LOG
_show_library_output = False
_stream: IO[str] | None = None

T = TypeVar("T")


def configure(mode: str, show_library_output: bool = False, stream: IO[str] | None = None) -> None:
    """Choose how progress is shown (BAR, LOG or QUIET) and whether TVM's own output is shown (-v).

    Parameters
    ----------
    mode : str
        ``progress.BAR``, ``progress.LOG`` or ``progress.QUIET``.
    show_library_output : bool
        Pass MetaSchedule's tables, XGBoost's lines and TVM's C++ warnings on as INFO records (-v).
    stream : file, optional
        Where bars and stage lines go (default: ``sys.stderr`` at the time of writing). The CLI passes a handle
        on a copy of fd 2, so that `native_stderr_to_log` can capture fd 2 without capturing our own bars.

    Raises
    ------
    ValueError
        For an unknown mode.
    """
    global _mode, _show_library_output, _stream
    if mode not in (BAR, LOG, QUIET):
        raise ValueError(f"progress mode must be {BAR!r}, {LOG!r} or {QUIET!r}, got {mode!r}")
    _mode, _show_library_output, _stream = mode, show_library_output, stream


def mode() -> str:
    """The current mode (BAR, LOG or QUIET)."""
    return _mode


def output_stream() -> IO[str]:
    """Where bars, stage lines and (in the CLI) log records are written."""
    return _stream if _stream is not None else sys.stderr


def _status_text(status: dict[str, object]) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in status.items())


def _terminal_size(stream: IO[str]) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.columns, size.lines
    except (AttributeError, OSError, ValueError):
        return 0, 0


class Progress:
    """One long step: `update(n, **status)` after each unit of work; `close()` (or the with-block) at the end."""

    def __init__(self, description: str, total: int | None = None, unit: str = "it"):
        self.description, self.total, self.unit = description, total, unit
        self.count = 0
        self.status: dict[str, object] = {}
        self._start = self._last_log = time.monotonic()
        self._bar = None
        if _mode == BAR:
            from tqdm import tqdm

            stream = output_stream()
            # A terminal that reports a 0x0 size (a fresh pty, some CI runners) gets no bar at all from tqdm, which
            # treats it as having no room: give it a usual size then.
            columns, lines = _terminal_size(stream)
            self._bar = tqdm(total=total, desc=description, unit=unit, file=stream, dynamic_ncols=columns > 0,
                             ncols=None if columns > 0 else 100, nrows=None if lines > 0 else 24, leave=True,
                             mininterval=0.2)

    def update(self, n: int = 1, **status: object) -> None:
        """Count `n` more units; `status` (best so far, loss, ...) is shown after the bar or in the log line."""
        self.count += n
        self.status.update(status)
        if self._bar is not None:
            if status:
                self._bar.set_postfix_str(_status_text(self.status), refresh=False)
            self._bar.update(n)
        elif _mode == LOG:
            now = time.monotonic()
            done = self.total is not None and self.count >= self.total
            if done or now - self._last_log >= LOG_INTERVAL_S:
                self._last_log = now
                self._log_line()

    def _log_line(self) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        status = f", {_status_text(self.status)}" if self.status else ""
        log.info("%s: %d%s %s%s (%.1f s)", self.description, self.count, total, self.unit, status,
                 time.monotonic() - self._start)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif _mode == LOG and (self.total is None or self.count < self.total) and self.count:
            self._log_line()  # the last state, unless the update that reached the total logged it

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(description: str, total: int | None = None, unit: str = "it") -> Progress:
    """A progress bar (terminal), throttled log lines (otherwise) or nothing (-q) for one long step.

    Parameters
    ----------
    description : str
        What is being done, e.g. ``"calibration"``.
    total : int, optional
        How many units there will be; None when unknown (no ETA then).
    unit : str
        The unit's name, e.g. ``"sample"`` or ``"trial"``.

    Returns
    -------
    Progress
        Call ``update(n, **status)``; use it as a context manager so the bar closes on errors too.

    Examples
    --------
    >>> with progress("calibration", total=3, unit="sample") as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    """
    return Progress(description, total, unit)


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate `items` with a progress bar; `total` defaults to len(items) when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time one build stage: a "name  1.23 s" line on a terminal, an INFO record otherwise, nothing under -q."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    if _mode == BAR:
        from tqdm import tqdm

        tqdm.write(f"  {name:<28} {seconds:7.2f} s", file=output_stream())
    elif _mode == LOG:
        log.info("stage %s: %.2f s", name, seconds)


class TqdmHandler(logging.StreamHandler):
    """A logging handler that prints above a live bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # a handler must never raise into the code that logged
            self.handleError(record)


def route_metaschedule_logging() -> None:
    """Send MetaSchedule's console output (its task tables, per-batch lines, XGBoost's eval lines) through our
    logging: shown as INFO with -v, dropped otherwise. Its per-task log files under the tuning work dir stay.

    Call it before and after `extracted_tasks_to_tune_contexts`: MetaSchedule's `create_loggers` installs a stdout
    handler on `tvm.s_tir.meta_schedule` (with propagate off, at the logger's level then) each time it runs, and
    logs its "Logging directory" line through it; before, the level keeps that line off; after, the handler goes.
    """
    ms_logger = logging.getLogger(_METASCHEDULE_LOGGER)
    for handler in list(ms_logger.handlers):
        if not isinstance(handler, logging.FileHandler):
            ms_logger.removeHandler(handler)
    ms_logger.propagate = True
    # Propagated records skip the root logger's level, so the level here decides: INFO only when asked for.
    ms_logger.setLevel(logging.INFO if _show_library_output else logging.WARNING)
    try:
        import xgboost

        xgboost.set_config(verbosity=1 if _show_library_output else 0)
    except ImportError:  # tuning needs xgboost; without it MetaSchedule fails with its own message
        pass


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Capture what TVM's C++ code (and the tuning workers it spawns) writes to fd 2 during the block, then log
    each line as INFO of `tvmcompress.tvm`: shown with -v, silent otherwise (as WARNING when the block raised). Our own bars and log records must
    be written to `output_stream()` (a copy of the original fd 2) while this runs, or they would be captured too.

    Does nothing when fd 2 is not open (an embedding host).
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            # When the block failed, what TVM printed may explain why: shown as a warning then, not hidden.
            level = logging.WARNING if failed else logging.INFO
            for line in text.splitlines():
                if line.strip():
                    native_log.log(level, "%s", line.rstrip())
