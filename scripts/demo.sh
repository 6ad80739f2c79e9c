#!/usr/bin/env bash
# Install tvmcompress and what it needs, then compile the bundled digits CNN for this machine and for aarch64,
# run both (aarch64 under qemu) and print their accuracy next to ONNX Runtime's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" examples/demo.py "$@"
