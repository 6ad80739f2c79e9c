"""Every package directory in the repository is installed: a wheel built from pyproject.toml must not lose one."""

from __future__ import annotations

import os

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_directory_is_listed_in_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools_cfg = tomllib.load(f)["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    dirs = setuptools_cfg["package-dir"]
    found = set()
    for package, rel in dirs.items():
        base = os.path.join(ROOT, rel)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in filenames:
                sub = os.path.relpath(dirpath, base)
                name = package if sub == "." else package + "." + sub.replace(os.sep, ".")
                found.add(name)
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    # A listed package that is not in the repository breaks `pip install` on a clean clone.
    assert listed - found == set(), f"listed but missing (not committed?): {sorted(listed - found)}"
