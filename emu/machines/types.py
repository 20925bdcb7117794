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
    ram_layout: str = "flat"         # emu.machines.ram_layout: pc | q35 | flat
    hotplug: bool = False            # device_add/device_del on the root bus (ACPI)
    hotplug_error: str = ""          # QEMU's refusal where it cannot ({driver}: the device's)
    # what query-machines says of it (QEMU 7.2's MachineInfo) and its QOM type
    canonical: str | None = None     # QEMU's name for it (MachineInfo.name; ours is the alias)
    qom_parent: str = "machine"      # parent of its QOM type, NAME-machine
    cpu_max: int = 1                 # QEMU's MachineClass.max_cpus (-smp checks it too)
    hotpluggable_cpus: bool = False
    default_cpu_type: str | None = None
    default_ram_id: str = "ram"

    @property
    def qemu_name(self) -> str:
        return self.canonical or self.name

    @property
    def qom_type(self) -> str:
        return f"{self.qemu_name}-machine"   # (QEMU: TYPE_MACHINE_SUFFIX)

    def matches(self, name: str) -> bool:
        return name == self.name or name in self.aliases or bool(
            self.versioned and re.fullmatch(self.versioned, name))

    def build(self, **kw):
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)(self, **kw)

    def layout(self, ram_size: int, max_ram_below_4g: int | None = None):
        """Where this type puts ``ram_size`` bytes of RAM
        (:class:`emu.machines.ram_layout.RamLayout`)."""
        from emu.machines import ram_layout
        if self.ram_layout == "pc":
            return ram_layout.pc_layout(ram_size, max_ram_below_4g)
        if self.ram_layout == "q35":
            return ram_layout.q35_layout(ram_size, max_ram_below_4g)
        return ram_layout.flat_layout(ram_size)


_PC = dict(qom_parent="generic-pc-machine", hotpluggable_cpus=True,
           default_cpu_type="qemu64-x86_64-cpu", default_ram_id="pc.ram")
# QEMU 7.2's x86 default is pc (its query-machines says "is-default" there)
MACHINE_TYPES: tuple[MachineType, ...] = (
    MachineType("pc", "Standard PC (i440FX + PIIX, 1996)", "emu.machines.x86:build_pc",
                default=True, aliases=(f"pc-i440fx-{QEMU_MACHINE_VERSION}",),
                versioned=r"pc-i440fx-\d+\.\d+", canonical=f"pc-i440fx-{QEMU_MACHINE_VERSION}",
                cpu_max=255, ram_layout="pc", hotplug=True, **_PC),
    MachineType("q35", "Standard PC (Q35 + ICH9, 2009)", "emu.machines.x86:build_q35",
                aliases=(f"pc-q35-{QEMU_MACHINE_VERSION}",), versioned=r"pc-q35-\d+\.\d+",
                canonical=f"pc-q35-{QEMU_MACHINE_VERSION}", cpu_max=288, ram_layout="q35",
                hotplug_error="Bus 'pcie.0' does not support hotplugging", **_PC),
    MachineType("none", "empty machine", "emu.machines.none:build", has_pci=False,
                hotplug_error="No 'PCI' bus found for device '{driver}'"),
)


def find(name: str) -> MachineType | None:
    """The type ``name`` selects (its own name, an alias or a versioned name)."""
    return next((t for t in MACHINE_TYPES if t.matches(name)), None)


def default() -> MachineType:
    return next(t for t in MACHINE_TYPES if t.default)
