"""The targets `compile` accepts by name, then the microcontroller boards of `export --aot --board`, as one list
(`tvmcompress targets`)."""

from __future__ import annotations

from typing import Any

from . import presets


def list_targets() -> list[dict[str, Any]]:
    """The targets :func:`compile` accepts by name, then the microcontroller boards of ``export --aot --board``.

    Returns
    -------
    list of dict
        One per preset: ``name``, ``description``, ``tvm_target`` (the TVM target as a dict), ``compiler`` and its
        ``debian_package``, ``runner`` (how artifacts for it run on this machine: native, qemu or none),
        ``features`` and ``kind`` (``compile`` or ``board``).

    Examples
    --------
    >>> [t["name"] for t in tvmcompress.list_targets()][:2]
    ['host', 'x86-64']
    """
    from .mcu_boards import BOARDS

    def features(target: dict[str, Any]) -> list[str]:
        cpu = [str(target["mcpu"])] if "mcpu" in target else []
        return cpu + [str(f).lstrip("+") for f in target.get("mattr", [])]

    compile_targets = [
        {
            "name": p.name,
            "description": p.description,
            "tvm_target": p.tvm_target,
            "compiler": p.toolchain.compiler,
            "debian_package": p.toolchain.debian_package,
            "runner": p.runner,
            "features": features(p.tvm_target),
            "kind": "compile",
        }
        for p in presets.list_presets()
    ]
    boards = [
        {
            "name": b.name,
            "description": b.description,
            "tvm_target": b.tvm_target,
            "compiler": "arm-none-eabi-gcc",
            "debian_package": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
            "runner": f"qemu-system-arm -M {b.qemu_machine}",
            "features": list(b.features),
            "kind": "board",
            "gcc_flags": list(b.gcc_flags),
        }
        for b in BOARDS.values()
    ]
    return compile_targets + boards
