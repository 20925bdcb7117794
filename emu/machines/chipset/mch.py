"""The Q35 memory controller hub, PCI function 00:00.0 (8086:29c0, QEMU 7.2
``hw/pci-host/q35.c``).

Registers as QEMU's: PCIEXBAR (0x60, 64 bits: base 0xB0000000, 256 MiB,
disabled at reset; enabling it maps the PCI Express enhanced
configuration window (MMCONFIG) over system memory), PAM 0x90-0x96,
SMRAM 0x9D (0x02 at reset; D_OPEN/D_CLS/D_LCK/G_SMRAME writable until
D_LCK is set, then only D_CLS) and ESMRAMC 0x9E (0x38; locked with
SMRAM), the extended TSEG size 0x50 (16 MiB, read back as QEMU's
``ext_tseg_mbytes`` default), F_SMBASE 0x9C (0: emu has no SMM).  PAM and
SMRAM remap nothing here: emu has no BIOS ROM and no SMM.

MMCONFIG: bus ``b``, device/function ``df``, register ``r`` at
base + (b << 20 | df << 12 | r); the whole 4 KiB space of each function,
any access width up to 4 bytes (split per byte when not aligned).
"""
from __future__ import annotations

from emu.address_space import Region
from emu.machines.chipset.function import ChipsetFunction

VENDOR_ID = 0x8086
DEVICE_ID = 0x29C0          # Q35/Bearlake MCH
CLASS_HOST_BRIDGE = 0x060000

EXT_TSEG_MBYTES = 0x50
EXT_TSEG_DEFAULT = 16
EXT_TSEG_QUERY = 0xFFFF       # written by firmware: reads back the size in MiB
PCIEXBAR = 0x60
PCIEXBAR_DEFAULT = 0xB000_0000
PCIEXBAREN = 0x1
PCIEXBAR_LENGTH_SHIFT = 1
PCIEXBAR_LENGTHS = {0: 256 << 20, 1: 128 << 20, 2: 64 << 20}   # 3: reserved
PCIEXBAR_BASE_MASKS = {256 << 20: 0xF_F000_0000, 128 << 20: 0xF_F800_0000,
                       64 << 20: 0xF_FC00_0000}
F_SMBASE = 0x9C
F_SMBASE_QUERY, F_SMBASE_IN_RAM, F_SMBASE_LCK = 0xFF, 0x01, 0x02
SMRAM = 0x9D
SMRAM_D_OPEN, SMRAM_D_CLS, SMRAM_D_LCK, SMRAM_G_SMRAME = 0x40, 0x20, 0x10, 0x08
SMRAM_DEFAULT = 0x02        # C_BASE_SEG, hardwired
SMRAM_WMASK = SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME
SMRAM_WMASK_LCK = SMRAM_D_CLS
ESMRAMC = 0x9E
ESMRAMC_DEFAULT = 0x38      # SM_CACHE | SM_L1 | SM_L2
ESMRAMC_WMASK = 0x87        # H_SMRAME | TSEG_SZ | T_EN
MMCONFIG_LAYER = "mmconfig"
MMCONFIG_SIZES = (1, 2, 4)


class _Mmconfig:
    def __init__(self, bus):
        self.bus = bus

    def _pieces(self, offset: int, size: int):
        bdf, reg = offset >> 12, offset & 0xFFF
        if size in MMCONFIG_SIZES and reg % size == 0:
            return bdf, [(reg, size)]
        return bdf, [(reg + i, 1) for i in range(size) if reg + i < 0x1000]

    def read(self, offset: int, size: int) -> int:
        if size not in MMCONFIG_SIZES:
            return 0
        bdf, pieces = self._pieces(offset, size)
        value = 0
        for reg, n in pieces:
            value |= self.bus.config_read(bdf, reg, n) << (8 * (reg - (offset & 0xFFF)))
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if size not in MMCONFIG_SIZES:
            return
        bdf, pieces = self._pieces(offset, size)
        for reg, n in pieces:
            shift = 8 * (reg - (offset & 0xFFF))
            self.bus.config_write(bdf, reg, n, (value >> shift) & ((1 << (8 * n)) - 1))


class MCH(ChipsetFunction):
    """``layout``: the RAM layout (for the PCI hole); ``memory``: where
    MMCONFIG is decoded once the guest enables PCIEXBAR."""

    def __init__(self, layout, memory=None, priority: int = 0):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_HOST_BRIDGE, name="mch")
        self.layout = layout
        self.memory = memory
        self.priority = priority
        self.mmconfig: tuple[int, int] | None = None
        self._power_on_registers()

    def _power_on_registers(self) -> None:
        self.power_on(EXT_TSEG_MBYTES, EXT_TSEG_DEFAULT.to_bytes(2, "little"))
        self.power_on(PCIEXBAR, PCIEXBAR_DEFAULT.to_bytes(8, "little"))
        self.power_on(SMRAM, bytes([SMRAM_DEFAULT]))
        self.power_on(ESMRAMC, bytes([ESMRAMC_DEFAULT]))
        self.wmask[SMRAM], self.wmask[ESMRAMC] = SMRAM_WMASK, ESMRAMC_WMASK

    def reset_registers(self) -> None:
        self.config[PCIEXBAR:PCIEXBAR + 8] = PCIEXBAR_DEFAULT.to_bytes(8, "little")
        self.config[SMRAM], self.config[ESMRAMC] = SMRAM_DEFAULT, ESMRAMC_DEFAULT
        self.wmask[SMRAM], self.wmask[ESMRAMC] = SMRAM_WMASK, ESMRAMC_WMASK
        self.config[F_SMBASE] = 0
        self.wmask[F_SMBASE] = 0xFF
        self.config[EXT_TSEG_MBYTES:EXT_TSEG_MBYTES + 2] = EXT_TSEG_DEFAULT.to_bytes(2, "little")

    def after_reset(self) -> None:
        self._update_mmconfig()

    def config_changed(self, offset: int, size: int) -> None:
        if self.touches(offset, size, SMRAM):
            smram = self.config[SMRAM]
            if smram & SMRAM_D_LCK:        # (82P35 MCH: D_LCK locks SMRAM until reset)
                self.config[SMRAM] = smram & ~SMRAM_D_OPEN
                self.wmask[SMRAM], self.wmask[ESMRAMC] = SMRAM_WMASK_LCK, 0
        if self.touches(offset, size, PCIEXBAR, 8):
            self._update_mmconfig()
        if self.touches(offset, size, F_SMBASE):
            self._update_smbase()
        if self.touches(offset, size, EXT_TSEG_MBYTES, 2) and int.from_bytes(
                self.config[EXT_TSEG_MBYTES:EXT_TSEG_MBYTES + 2], "little") == EXT_TSEG_QUERY:
            self.config[EXT_TSEG_MBYTES:EXT_TSEG_MBYTES + 2] = \
                EXT_TSEG_DEFAULT.to_bytes(2, "little")

    def _update_smbase(self) -> None:
        """QEMU's mch_update_smbase_smram (firmware asks whether SMRAM at
        SMBASE exists, then locks it)."""
        reg = self.config[F_SMBASE]
        if reg == F_SMBASE_QUERY:
            self.wmask[F_SMBASE] = F_SMBASE_LCK
            self.config[F_SMBASE] = F_SMBASE_IN_RAM
            return
        if self.wmask[F_SMBASE] == 0xFF:
            self.config[F_SMBASE] = 0           # not negotiated: the write is discarded
        elif self.config[F_SMBASE] & F_SMBASE_LCK:
            self.wmask[F_SMBASE] &= ~F_SMBASE_LCK
            self.config[F_SMBASE] = F_SMBASE_LCK

    def _update_mmconfig(self) -> None:
        bar = int.from_bytes(self.config[PCIEXBAR:PCIEXBAR + 8], "little")
        length = PCIEXBAR_LENGTHS.get((bar >> PCIEXBAR_LENGTH_SHIFT) & 3)
        new = None
        if bar & PCIEXBAREN and length is not None:
            new = (bar & PCIEXBAR_BASE_MASKS[length], length)
        if new == self.mmconfig:
            return
        self.mmconfig = new
        if self.memory is not None and self.bus is not None:
            regions = [] if new is None else [
                Region(new[0], new[0] + new[1], _Mmconfig(self.bus), name="pcie-mmcfg-mmio")]
            self.memory.set_layer(MMCONFIG_LAYER, regions, self.priority)

    def stats(self) -> dict:
        return {"mmconfig": self.mmconfig}
