"""The ICH9 LPC bridge, PCI function 00:1F.0 (8086:2918, QEMU 7.2
``hw/isa/lpc_ich9.c``): the interrupt router of the q35 machine, its
reset control register and APM ports.

Interrupt routing (ICH9 datasheet 5.9 "PCI interrupt routing"):

* INTx pin -> PIRQ: devices 25-31 (not 30) by the chipset configuration
  registers D25IR..D31IR (default 0x3210: INTA-D -> PIRQA-D); device 30
  INTA-D -> PIRQE-H; every other device (slot + pin - 1) mod 4 + 4, i.e.
  PIRQE-H (QEMU's ``ich9_cc_init``: keep PIRQA-D for PCIe root ports).
* PIRQ A-H always drive GSI 16-23 of the I/O APIC (APIC mode).
* PIRQ n also drives ISA IRQ ``PIRQn_ROUT & 0x0F`` when its IRQEN bit
  (0x80, set at reset) is clear: 0x60-0x63 for A-D, 0x68-0x6B for E-H.

The chipset configuration registers (16 KiB, "RCRB") appear at RCBA
(config 0xF0, bits 31:14) while its enable bit 0 is set; a write there
updates the D*IR routing.

Not modelled: the ICH9 ACPI block at PMBASE (PMBASE 0x40 and ACPI_CNTL
0x44 are registers only), hence no SCI, no ACPI hotplug on q35.
"""
from __future__ import annotations

from typing import Callable

from emu.address_space import Region
from emu.machines.chipset import apm
from emu.machines.chipset.function import ChipsetFunction
from emu.machines.chipset.reset_control import ResetControl
from emu.spec import pci as regs

VENDOR_ID = 0x8086
DEVICE_ID = 0x2918          # ICH9 LPC interface controller
REVISION = 0x02             # A2
CLASS_ISA_BRIDGE = 0x060100

NB_PIRQS = 8
PIC_NUM_PINS = 16
PIRQA_ROUT = 0x60
PIRQE_ROUT = 0x68
PIRQ_ROUT_IRQEN = 0x80      # set: not routed to the 8259 / ISA IRQ
PIRQ_ROUT_MASK = 0x0F
PIRQ_ROUT_DEFAULT = 0x80
PMBASE = 0x40
PMBASE_DEFAULT = 0x01       # RTE
PMBASE_WMASK = bytes([0x87, 0xFF, 0x00, 0x00])   # QEMU's (ACPI_CTRL's mask lands in byte 0)
ACPI_CTRL = 0x44
GEN_PMCON_1 = 0xA0
GEN_PMCON_1_SMI_LOCK = 0x10
RCBA = 0xF0
RCBA_EN = 0x1
RCBA_BA_MASK = 0xFFFFC000
RST_CNT_KEEP = 0x0A         # FULL_RST, SYS_RST

CC_SIZE = 16 * 1024
CC_D31IR, CC_D30IR, CC_D29IR, CC_D28IR = 0x3140, 0x3142, 0x3144, 0x3146
CC_D27IR, CC_D26IR, CC_D25IR = 0x3148, 0x314C, 0x3150
CC_IR_REGS = {25: CC_D25IR, 26: CC_D26IR, 27: CC_D27IR, 28: CC_D28IR, 29: CC_D29IR,
              31: CC_D31IR}
CC_DIR_DEFAULT = 0x3210
CC_DIR_SHIFT = 4
CC_DIR_MASK = 0x7
CC_GCS = 0x3410
CC_GCS_DEFAULT = 0x00000020
GSI_BASE = PIC_NUM_PINS     # PIRQ n -> GSI 16 + n
RCRB_LAYER = "ich9-rcrb"


class _ChipsetConfig:
    """The RCRB as a memory target (little-endian bytes)."""

    def __init__(self, lpc: "ICH9LPC"):
        self.lpc = lpc

    def read(self, offset: int, size: int) -> int:
        size = min(size, CC_SIZE - offset)
        return int.from_bytes(self.lpc.chip_config[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        size = min(size, CC_SIZE - offset)
        self.lpc.chip_config[offset:offset + size] = value.to_bytes(8, "little")[:size]
        self.lpc._update_irr()


class ICH9LPC(ChipsetFunction):
    def __init__(self, ioapic, reset_request: Callable[[], None] | None = None,
                 memory=None, priority: int = 0):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_ISA_BRIDGE, revision=REVISION,
                         header_type=regs.HEADER_TYPE_MULTI_FUNCTION, name="ich9-lpc")
        self.ioapic = ioapic
        self.memory = memory
        self.priority = priority
        self.rst_cnt = ResetControl("lpc-reset-control", RST_CNT_KEEP, reset_request)
        self.apm = apm.APM(lambda value: None)     # ACPI mode / SMI: no ICH9 ACPI block
        self.chip_config = bytearray(CC_SIZE)
        self.irr = [[(slot + pin) % 4 + 4 for pin in range(4)] for slot in range(32)]
        self._pirq_sources: list[set] = [set() for _ in range(NB_PIRQS)]
        self._pic_levels: dict[int, bool] = {}
        self._apic_levels = [False] * NB_PIRQS
        self.rcrb: int | None = None
        self.power_on(PMBASE, PMBASE_DEFAULT.to_bytes(4, "little"))
        self.wmask[PMBASE:PMBASE + 4] = PMBASE_WMASK
        for i in range(4):
            self.power_on(PIRQA_ROUT + i, bytes([PIRQ_ROUT_DEFAULT]))
            self.power_on(PIRQE_ROUT + i, bytes([PIRQ_ROUT_DEFAULT]))
        self._reset_chip_config()

    # -- chipset configuration registers ----------------------------------------------------
    def _reset_chip_config(self) -> None:
        self.chip_config[:] = bytes(CC_SIZE)
        for reg in CC_IR_REGS.values():
            self.chip_config[reg:reg + 4] = CC_DIR_DEFAULT.to_bytes(4, "little")
        self.chip_config[CC_D30IR:CC_D30IR + 2] = bytes(2)
        self.chip_config[CC_GCS:CC_GCS + 4] = CC_GCS_DEFAULT.to_bytes(4, "little")
        self._update_irr()

    def _update_irr(self) -> None:
        for slot, reg in CC_IR_REGS.items():
            ir = int.from_bytes(self.chip_config[reg:reg + 2], "little")
            self.irr[slot] = [(ir >> (pin * CC_DIR_SHIFT)) & CC_DIR_MASK for pin in range(4)]
        self.irr[30] = [pin + 4 for pin in range(4)]     # the DMI-to-PCI bridge

    def _update_rcrb(self) -> None:
        value = int.from_bytes(self.config[RCBA:RCBA + 4], "little")
        new = value & RCBA_BA_MASK if value & RCBA_EN else None
        if new != self.rcrb:
            self.rcrb = new
            if self.memory is not None:
                self.memory.set_layer(RCRB_LAYER, [] if new is None else [
                    Region(new, new + CC_SIZE, _ChipsetConfig(self), name="lpc-rcrb-mmio")],
                    self.priority)

    # -- the router (emu.pci.bus.IntxRouter) --------------------------------------------
    def map_irq(self, bdf: int, pin: int) -> int:
        return self.irr[(bdf >> 3) & 31][pin - 1]

    def set_irq(self, pirq: int, source: object, level: bool) -> None:
        with self.lock:
            if level:
                self._pirq_sources[pirq].add(source)
            else:
                self._pirq_sources[pirq].discard(source)
            self._update_levels()

    def route(self, pirq: int) -> int | None:
        """APIC mode: PIRQ n reaches GSI 16 + n whatever the ISA routing."""
        return GSI_BASE + pirq

    def pic_route(self, pirq: int) -> int | None:
        reg = PIRQA_ROUT + pirq if pirq < 4 else PIRQE_ROUT + pirq - 4
        value = self.config[reg]
        if value & PIRQ_ROUT_IRQEN or value & PIRQ_ROUT_MASK >= PIC_NUM_PINS:
            return None
        return value & PIRQ_ROUT_MASK

    def _update_levels(self) -> None:
        pic: dict[int, bool] = {}
        for pirq in range(NB_PIRQS):
            level = bool(self._pirq_sources[pirq])
            if level != self._apic_levels[pirq]:
                self._apic_levels[pirq] = level
                self.ioapic.set_irq(GSI_BASE + pirq, level, self)
            irq = self.pic_route(pirq)
            if irq is not None:
                pic[irq] = pic.get(irq, False) or level
        for irq in set(pic) | set(self._pic_levels):
            level = pic.get(irq, False)
            if self._pic_levels.get(irq, False) != level:
                self.ioapic.set_irq(irq, level, (self, "pic"))
            if level:
                self._pic_levels[irq] = True
            else:
                self._pic_levels.pop(irq, None)

    # -- config space -------------------------------------------------------------------
    def config_changed(self, offset: int, size: int) -> None:
        if self.touches(offset, size, PIRQA_ROUT, 4) or self.touches(offset, size, PIRQE_ROUT, 4):
            self._update_levels()
        if self.touches(offset, size, RCBA, 4):
            self._update_rcrb()
        if self.touches(offset, size, GEN_PMCON_1, 2) and \
                self.config[GEN_PMCON_1] & GEN_PMCON_1_SMI_LOCK:
            self.wmask[GEN_PMCON_1] &= ~GEN_PMCON_1_SMI_LOCK   # locked until reset

    def reset_registers(self) -> None:
        for i in range(4):
            self.config[PIRQA_ROUT + i] = PIRQ_ROUT_DEFAULT
            self.config[PIRQE_ROUT + i] = PIRQ_ROUT_DEFAULT
        self.config[ACPI_CTRL] = 0
        self.config[PMBASE:PMBASE + 4] = PMBASE_DEFAULT.to_bytes(4, "little")
        self.config[RCBA:RCBA + 4] = bytes(4)
        self.wmask[GEN_PMCON_1] = 0xFF
        self._reset_chip_config()
        self.rst_cnt.reset()

    def after_reset(self) -> None:
        self._update_rcrb()
        self._update_levels()

    def stats(self) -> dict:
        return {"rcrb": self.rcrb, "pirq_levels": [int(x) for x in self._apic_levels]}
