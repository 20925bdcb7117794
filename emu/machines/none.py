"""``-machine none``: QEMU's empty machine -- RAM and the APIC window, no
PCI bus (a device needs one: the command line refuses it)."""
from __future__ import annotations

from emu.machines.platform import Platform


def build(machine_type, *, lock=None, ram=None, board=None) -> Platform:
    return Platform(machine_type, lock=lock, pci=False, ram=ram)
