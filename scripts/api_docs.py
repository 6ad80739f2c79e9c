"""Write the README's API section from the docstrings of what `tvmcompress.__all__` exports.

    python scripts/api_docs.py           # rewrite the section between the markers in README.md
    python scripts/api_docs.py --check   # exit 1 if README.md's section differs (tests/test_api_docs.py runs it)

The section lies between `<!-- api:begin -->` and `<!-- api:end -->`; everything else in README.md is left as is.
One entry per export: its signature and its docstring verbatim (numpydoc), and for a class the public methods that
define its use. The docstrings are the one source; this only lays them out.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

BEGIN, END = "<!-- api:begin -->", "<!-- api:end -->"
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# Methods shown for a class besides its own docstring: the ones a user calls.
METHODS = {"Artifact": ("run", "run_batches", "export"), "CompileOptions": ("create",)}


def _entry(title: str, obj) -> str:
    doc = inspect.getdoc(obj) or "(no docstring)"
    return f"#### `{title}`\n\n```text\n{doc}\n```\n"


def _signature(name: str, obj) -> str:
    """`name(a, b=1, *, c)`: the parameters without their annotations (the docstring states the types)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values() if p.name != "self"]
    return f"{name}{sig.replace(parameters=params, return_annotation=inspect.Signature.empty)}"


def render() -> str:
    import tvmcompress

    parts = ["Generated from the docstrings by `scripts/api_docs.py`; `help(tvmcompress.NAME)` shows the same.\n"]
    for name in sorted(n for n in tvmcompress.__all__ if not n.startswith("_")):
        obj = getattr(tvmcompress, name)
        if inspect.isclass(obj):
            parts.append(_entry(f"class tvmcompress.{name}", obj))
            for method in METHODS.get(name, ()):
                parts.append(_entry(_signature(f"{name}.{method}", getattr(obj, method)), getattr(obj, method)))
        else:
            parts.append(_entry(_signature(f"tvmcompress.{name}", obj), obj))
    return "\n".join(parts)


def updated_readme(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not up to date")
    args = parser.parse_args(argv)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    new = updated_readme(text)
    if args.check:
        if new != text:
            print("README.md's API section is out of date: run python scripts/api_docs.py", file=sys.stderr)
            return 1
        return 0
    with open(README, "w", encoding="utf-8") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
