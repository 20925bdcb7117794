"""The i440FX host bridge, PCI function 00:00.0 (8086:1237, QEMU 7.2
``hw/pci-host/i440fx.c``).

Registers QEMU gives a value: 0x57 the DRAM size in 8 MiB units (capped at
255, what coreboot reads), 0x72 SMRAM = 0x02 (C_BASE_SEG: compatible SMRAM
at 0xA0000), 0x59..0x5F the PAM registers (0 at power-on: the BIOS area
is routed to PCI, i.e. read from the ROMs).  emu has no BIOS ROM and keeps
RAM everywhere below the PCI hole, so PAM and SMRAM are plain registers
here: what they would remap is RAM either way.  QEMU's i440FX has no reset
handler: the registers keep their contents across a system reset.
"""
from __future__ import annotations

from emu.machines.chipset.function import ChipsetFunction

VENDOR_ID = 0x8086
DEVICE_ID = 0x1237          # 82441FX PMC
REVISION = 0x02
CLASS_HOST_BRIDGE = 0x060000

I440FX_DRAM_SIZE = 0x57     # QEMU's I440FX_COREBOOT_RAM_SIZE
I440FX_PAM = 0x59
I440FX_PAM_SIZE = 7
I440FX_SMRAM = 0x72
SMRAM_C_BASE_SEG = 0x02


class I440FX(ChipsetFunction):
    def __init__(self, ram_size: int):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_HOST_BRIDGE, revision=REVISION,
                         name="i440FX")
        self.power_on(I440FX_SMRAM, bytes([SMRAM_C_BASE_SEG]))
        self.power_on(I440FX_DRAM_SIZE, bytes([min(ram_size // (8 << 20), 255)]))
