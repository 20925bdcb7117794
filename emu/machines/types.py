"""The registry of machine types (``-machine help``, ``query-machines``).

Declarative and stdlib-only: the command-line parser reads it before the
monitor listens.  A type names its builder as ``module:function``; the
builder is imported only when a machine is made.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

#: the QEMU release whose machine versions emu's types stand for
QEMU_MACHINE_VERSION = "7.2"


@dataclass(frozen=True)
class MachineType:
    name: str
    desc: str
    builder: str                     # "module:function" returning a Platform
    default: bool = False
    aliases: tuple[str, ...] = ()    # names QEMU also accepts for it
    versioned: str | None = None     # regex of QEMU's versioned names, e.g. pc-i440fx-7.1
    has_pci: bool = True

    def matches(self, name: str) -> bool:
        return name == self.name or name in self.aliases or bool(
            self.versioned and re.fullmatch(self.versioned, name))

    def build(self, **kw):
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)(self, **kw)


MACHINE_TYPES: tuple[MachineType, ...] = (
    MachineType("pc", "Standard PC (i440FX + PIIX, 1996)", "emu.machines.x86:build",
                aliases=(f"pc-i440fx-{QEMU_MACHINE_VERSION}",), versioned=r"pc-i440fx-\d+\.\d+"),
    MachineType("q35", "Standard PC (Q35 + ICH9, 2009)", "emu.machines.x86:build", default=True,
                aliases=(f"pc-q35-{QEMU_MACHINE_VERSION}",), versioned=r"pc-q35-\d+\.\d+"),
    MachineType("none", "empty machine", "emu.machines.none:build", has_pci=False),
)


def find(name: str) -> MachineType | None:
    """The type ``name`` selects (its own name, an alias or a versioned name)."""
    return next((t for t in MACHINE_TYPES if t.matches(name)), None)


def default() -> MachineType:
    return next(t for t in MACHINE_TYPES if t.default)
