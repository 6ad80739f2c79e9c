"""Fixtures shared by the end-to-end tests that tune over TVM RPC on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracker_port():
    """A `tvm.exec.rpc_tracker` on a free loopback port, accepting connections; stopped afterwards."""
    port = _free_port()
    tracker = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
         "--port-end", str(port + 1)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the tracker imports TVM first: wait until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or tracker.poll() is not None:
                    raise RuntimeError("the RPC tracker did not start") from None
                time.sleep(0.5)
        yield port
    finally:
        tracker.terminate()
        tracker.wait(timeout=30)
