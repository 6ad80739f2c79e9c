"""The public API explains itself: every export documented numpydoc-style, `__all__` complete, and the README's API
section generated from those docstrings (scripts/api_docs.py) up to date."""

from __future__ import annotations

import importlib.util
import inspect
import os
import pydoc
import re

import tvmcompress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUNCTIONS = ("compile", "inspect", "list_targets", "load", "load_model")


def _api_docs():
    spec = importlib.util.spec_from_file_location("api_docs", os.path.join(ROOT, "scripts", "api_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented_parameters(doc: str) -> set[str]:
    """The `name : type` entries of a numpydoc Parameters section."""
    if "Parameters\n----------\n" not in doc:
        return set()
    section = doc.split("Parameters\n----------\n", 1)[1].split("\nReturns\n", 1)[0]
    return set(re.findall(r"^(\w+) :", section, re.M))


def test_help_of_compile_documents_every_parameter():
    text = pydoc.render_doc(tvmcompress.compile, renderer=pydoc.plaintext)
    for name in inspect.signature(tvmcompress.compile).parameters:
        assert re.search(rf"^\s*{name} : ", text, re.M), f"help(tvmcompress.compile) does not document {name}"
    for section in ("Returns", "Raises", "Examples"):
        assert section in text


def test_every_public_function_has_a_numpydoc_docstring():
    for name in FUNCTIONS:
        func = getattr(tvmcompress, name)
        doc = inspect.getdoc(func)
        params = [p for p in inspect.signature(func).parameters if p != "self"]
        assert set(params) <= _documented_parameters(doc), name
        for section in ("Returns", "Examples"):
            assert f"{section}\n---" in doc, f"{name} lacks {section}"


def test_all_lists_every_export():
    public = {name for name in dir(tvmcompress) if not name.startswith("_")}
    lazy = set(tvmcompress._LAZY)
    # Submodules that importing loads are not exports; everything else public is in __all__.
    modules = {name for name in public if inspect.ismodule(getattr(tvmcompress, name))}
    assert (public - modules) | lazy <= set(tvmcompress.__all__) | {"set_default_pool_size"}
    assert {"QuantizeConfig", "PruneConfig", "TuneConfig", "Budgets", "CompileOptions"} <= set(tvmcompress.__all__)
    for name in tvmcompress.__all__:
        getattr(tvmcompress, name)


def test_readme_api_section_is_up_to_date():
    api_docs = _api_docs()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert api_docs.updated_readme(text) == text, "run python scripts/api_docs.py"
    assert "#### `tvmcompress.compile(model, target='host', *, output, options=None, cache_dir=None, budgets=None, example_inputs=None)`" in text
