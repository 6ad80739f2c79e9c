#!/usr/bin/env bash
# Install what tvmcompress needs on a fresh Debian 12 machine (root, Python >= 3.10):
#   - Debian packages: the host and cross C++ compilers that link model.so, qemu-user to run foreign builds,
#     binutils (readelf), cmake (deploy bundles);
#   - the package itself, editable, with the `test` extra when called with --test.
# Safe to re-run: installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

apt_packages=(g++ binutils cmake g++-aarch64-linux-gnu g++-arm-linux-gnueabihf g++-riscv64-linux-gnu qemu-user)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
echo "setup: installing tvmcompress${extras} with $($PYTHON --version)"
$PYTHON -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".${extras}"
if [ -n "$extras" ]; then
  # The corpus's YOLOv8 builder; --no-deps: what it imports is in the test extra, the rest is heavy and unused.
  $PYTHON -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps "ultralytics>=8.3"
fi
