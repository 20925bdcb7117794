"""The x86 PC machine types (``pc``, ``q35``): a PCI root bus behind a
host bridge that decodes CF8/CFC, the local APIC's MSI window, guest RAM.

Today both types build the same platform; their chipsets (i440FX + PIIX3,
MCH + ICH9 LPC as configuration-space functions, fw_cfg, the RAM split
around the PCI hole) are what tell them apart next.
"""
from __future__ import annotations

from emu.machines.platform import Platform


def build(machine_type, *, lock=None, ram=None) -> Platform:
    return Platform(machine_type, lock=lock, pci=True, ram=ram)
