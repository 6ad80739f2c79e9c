"""A TVM RPC server for aarch64 that runs here under qemu-user, so `--rpc` tuning for aarch64 can be tried
without a board.

`rpc_server/tvmcompress_rpc_server.cc` is a small C++ server (no Python) that registers with a TVM RPC tracker
and serves sessions with the TVM runtime's own RPC endpoint. It is cross-compiled against the cached aarch64
TVM runtime (the one `run_under_qemu` uses, from the official wheels) into that runtime's `bin/`, and started
under qemu-aarch64:

    python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190 &
    python -m tvmcompress.targets.qemu_rpc --tracker 127.0.0.1:9190 --key qemu-aarch64 &
    tvmcompress compile model.onnx --target aarch64 --tune-trials 64 --rpc 127.0.0.1:9190 --rpc-key qemu-aarch64 -o out

or from Python, `with start_qemu_rpc_server("127.0.0.1", 9190, "qemu-aarch64") as server: ...`.

MetaSchedule then cross-compiles each candidate here and times it "on the device", i.e. under qemu: those
timings rank candidates by qemu's speed, not a real core's, so they prove the path, not the schedule. On a
real aarch64 board run TVM's own `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY` (or this C++
server, copied there with the runtime's lib/) instead.

Only architectures whose runtime comes from the official wheels (aarch64) have the RPC endpoint and the random
fill that MetaSchedule's runner calls; the armv7/riscv64 runtimes we build from source have neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tvmcompress.errors import TvmcompressError
from tvmcompress.targets import runtime_cache

logger = logging.getLogger(__name__)

__all__ = ["QemuRpcServer", "launch_qemu_rpc_server", "prepare_rpc_server", "start_qemu_rpc_server"]

SERVER_SOURCE = Path(__file__).parent / "rpc_server" / "tvmcompress_rpc_server.cc"
SERVER_NAME = "tvmcompress_rpc_server"
# Bump when the compile command changes in a way the source hash does not show.
_SERVER_RECIPE = 1
_KEY = re.compile(r"[A-Za-z0-9._-]+")
# The server retries an unreachable tracker for 60 s before it exits; wait a little longer than that.
_READY_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 10.0


def rpc_arches() -> list[str]:
    """Architectures whose cached runtime can serve RPC (those from the official wheels)."""
    return [name for name, spec in runtime_cache.FOREIGN_ARCHES.items() if spec.wheel_platform is not None]


def prepare_rpc_server(arch: str = "aarch64") -> Path:
    """Cross-compile the RPC server for `arch` next to its cached runtime (once); return the binary's path.

    Prepares the runtime first (see `tvmcompress.targets.qemu.prepare_runtime`). Safe when several processes
    call it at once: each compiles to a private file and renames it into place.
    """
    spec = runtime_cache.foreign_arch(arch)
    if spec.wheel_platform is None:
        raise TvmcompressError(
            f"no RPC server for {arch}: its TVM runtime is built from source without RPC; "
            f"choose one of {', '.join(rpc_arches())}"
        )
    root = runtime_cache.prepare_runtime(arch)
    if not (root / "lib" / "libtvm_runtime_extra.so").is_file():
        raise TvmcompressError(
            f"the cached {arch} TVM runtime in {root} lacks libtvm_runtime_extra.so (the random fill MetaSchedule's "
            f"runner calls): delete {root} so that the next run fetches the wheels again"
        )
    binary = root / "bin" / SERVER_NAME
    stamp = binary.with_name(f"{SERVER_NAME}.stamp")
    expected = f"{hashlib.sha256(SERVER_SOURCE.read_bytes()).hexdigest()}:{_SERVER_RECIPE}"
    if binary.is_file() and stamp.is_file() and stamp.read_text() == expected:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{SERVER_NAME}.", dir=binary.parent)
    os.close(handle)
    try:
        command = _compile_command(spec, root / "lib", Path(partial))
        logger.info("cross-compiling %s for %s", SERVER_NAME, arch)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SERVER_NAME} for {arch} failed:\n{' '.join(command)}\n{result.stderr}")
        os.chmod(partial, 0o755)
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    stamp_partial = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    stamp_partial.write_text(expected)
    stamp_partial.replace(stamp)
    return binary


def _compile_command(spec: runtime_cache.ForeignArch, lib: Path, output: Path) -> list[str]:
    includes = [arg for path in runtime_cache.ffi_include_dirs() for arg in ("-I", str(path))]
    return [
        spec.cxx, "-std=c++17", "-O2", "-Wno-psabi", *includes, str(SERVER_SOURCE), "-o", str(output), "-L", str(lib),
        # --no-as-needed: the server calls the runtime only through the global function table, and loading the
        # libraries is what fills it (rpc.ServerLoop; the random fill MetaSchedule's runner calls is in _extra).
        "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_runtime_extra", "-ltvm_ffi", "-Wl,--as-needed",
        "-Wl,-rpath,$ORIGIN/../lib",
    ]


@dataclasses.dataclass
class QemuRpcServer:
    """A running server; `stop()` ends it and every session process it started."""

    arch: str
    key: str
    host: str
    port: int  # where the server listens (the tracker hands this out to clients)
    process: subprocess.Popen
    _scratch: tempfile.TemporaryDirectory

    @property
    def log_path(self) -> Path:
        return Path(self._scratch.name) / "server.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def sessions(self) -> int:
        """How many client sessions the server has finished so far."""
        return self.log_text().count("session done")

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            if not _wait_unreaped(self.process.pid, _STOP_TIMEOUT_S):
                logger.warning("the %s RPC server ignored SIGTERM for %.0f s; killing it", self.arch, _STOP_TIMEOUT_S)
        # The server leads its own process group (start_new_session): whatever of it is left, session processes
        # included, goes with the group. The leader is reaped only afterwards, so the group id cannot have been
        # reused by then.
        _kill_group(self.process.pid)
        self.process.wait()
        self._scratch.cleanup()


def launch_qemu_rpc_server(
    tracker_host: str,
    tracker_port: int,
    key: str,
    *,
    arch: str = "aarch64",
    host: str = "127.0.0.1",
    port: int = 0,
    num_threads: int = 1,
) -> QemuRpcServer:
    """Start the server under qemu and return once it has registered `key` with the tracker.

    `host`/`port` are where it listens (port 0: any free port); the default loopback address suits a tracker on
    this machine, use "0.0.0.0" for one elsewhere. `num_threads` sets TVM_NUM_THREADS for the measured kernels
    (1 keeps qemu timings steadier on a shared machine). Call `stop()` when done, or use start_qemu_rpc_server.
    """
    if not _KEY.fullmatch(key):
        raise TvmcompressError(f"bad RPC key '{key}': use letters, digits, '.', '-' and '_' only")
    if num_threads < 1:
        raise TvmcompressError(f"num_threads must be at least 1, got {num_threads}")
    spec = runtime_cache.foreign_arch(arch)
    _check_tracker(tracker_host, tracker_port)
    binary = prepare_rpc_server(arch)
    qemu = runtime_cache.find_qemu(spec)
    assert qemu is not None  # prepare_runtime checked the tools
    scratch = tempfile.TemporaryDirectory(prefix="tvmcompress-qemu-rpc-")
    work = Path(scratch.name) / "sessions"
    work.mkdir()
    command = [
        qemu, "-L", str(spec.sysroot),
        "-E", f"LD_LIBRARY_PATH={binary.parent.parent / 'lib'}", "-E", f"TVM_NUM_THREADS={num_threads}",
        str(binary), "--tracker", f"{tracker_host}:{tracker_port}", "--key", key,
        "--host", host, "--port", str(port), "--work-dir", str(work),
    ]
    log_path = Path(scratch.name) / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = QemuRpcServer(arch, key, host, 0, process, scratch)
    try:
        server.port = _wait_until_registered(server, tracker_host, tracker_port)
    except BaseException:
        server.stop()
        raise
    logger.info(
        "%s RPC server under %s listens on %s:%d, key '%s' registered with %s:%d",
        arch, spec.qemu, host, server.port, key, tracker_host, tracker_port,
    )
    return server


@contextmanager
def start_qemu_rpc_server(
    tracker_host: str, tracker_port: int, key: str, *, arch: str = "aarch64", host: str = "127.0.0.1",
    port: int = 0, num_threads: int = 1,
) -> Iterator[QemuRpcServer]:
    """`with start_qemu_rpc_server("127.0.0.1", 9190, "qemu-aarch64") as server:` a registered server, stopped
    (with its sessions) on exit. See launch_qemu_rpc_server for the arguments."""
    server = launch_qemu_rpc_server(
        tracker_host, tracker_port, key, arch=arch, host=host, port=port, num_threads=num_threads
    )
    try:
        yield server
    finally:
        server.stop()


def _check_tracker(host: str, port: int) -> None:
    """Fail at once, rather than after the server's minute of retries, when nothing listens at the tracker's address."""
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as err:
        raise TvmcompressError(
            f"cannot reach the RPC tracker at {host}:{port} ({err.strerror or err}): start one with "
            f"python -m tvm.exec.rpc_tracker --host {host} --port {port}"
        ) from None


def _wait_until_registered(server: QemuRpcServer, tracker_host: str, tracker_port: int) -> int:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        text = server.log_text()
        listening = re.search(r"^listening on \S+:(\d+)$", text, flags=re.MULTILINE)
        if listening and re.search(r"^registered key ", text, flags=re.MULTILINE):
            return int(listening.group(1))
        code = server.process.poll()
        if code is not None:
            last = _last_line(text)
            if "cannot reach the RPC tracker" in text:
                raise TvmcompressError(
                    f"the {server.arch} RPC server lost the tracker at {tracker_host}:{tracker_port}: check that "
                    f"python -m tvm.exec.rpc_tracker --host {tracker_host} --port {tracker_port} is still running"
                )
            if last.startswith("usage-error: "):
                raise TvmcompressError(last[len("usage-error: "):])
            raise RuntimeError(f"the {server.arch} RPC server exited with code {code}:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {server.arch} RPC server did not register within {_READY_TIMEOUT_S:.0f} s:\n{text[-4000:]}")
        time.sleep(0.1)


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait until `pid` exits, leaving it a zombie (unreaped); False if it is still running after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tvmcompress.targets.qemu_rpc",
        description="Serve TVM RPC for aarch64 under qemu-user, registered with a TVM RPC tracker, until Ctrl-C.",
    )
    parser.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the RPC tracker to register with")
    parser.add_argument("--key", required=True, help="device key clients request (tvmcompress --rpc-key)")
    parser.add_argument("--arch", default="aarch64", choices=rpc_arches())
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a remote tracker)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--num-threads", type=int, default=1, help="TVM_NUM_THREADS of the measured kernels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tracker_host, sep, tracker_port = args.tracker.rpartition(":")
    if not sep or not tracker_host or not tracker_port.isdigit():
        print(f"error: bad --tracker '{args.tracker}': use HOST:PORT, e.g. 127.0.0.1:9190", file=sys.stderr)
        return 2
    # SIGTERM ends the server like Ctrl-C does, so it never outlives this process.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server = launch_qemu_rpc_server(
            tracker_host, int(tracker_port), args.key, arch=args.arch, host=args.host, port=args.port,
            num_threads=args.num_threads,
        )
    except TvmcompressError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = 0
    try:
        print("Ctrl-C stops the server", flush=True)
        while server.process.poll() is None:
            text = server.log_text()
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            time.sleep(1)
        sys.stdout.write(server.log_text()[shown:])
        return 1  # it ended on its own: the tracker went away
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
