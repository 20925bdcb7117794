"""The PIIX4 power-management function, PCI function 00:01.3 (8086:7113,
QEMU 7.2 ``hw/acpi/piix4.c``): ACPI on the pc machine.

* PM I/O block (64 bytes) at PMBASE (config 0x40, bits 15:6) while PMIOSE
  (config 0x80 bit 0) is set: PM1a event (+0), PM1a control (+4), PM timer
  (+8) -- :mod:`.acpi_regs`.
* Fixed ports: GPE0 at 0xAFE0 (4 bytes), the ACPI PCI hotplug block at
  0xAE00 (:mod:`.acpi_pcihp`), the legacy CPU-present bitmap at 0xAF00
  (32 bytes, read-only), APM at 0xB2 (:mod:`.apm`: 0xF1/0xF0 switch
  SCI_EN).
* The SCI is ISA IRQ 9 (I/O APIC input 9).
* SMBus: the host controller's base (config 0x90 = 0xB101) and enable
  (0xD2 = 0x09) hold QEMU's values; its registers are not modelled.

Reset (QEMU's ``piix4_pm_reset``): config 0x58-0x5B cleared, PMBASE back
to 0x0001, PMIOSE off, PM1/GPE registers cleared, pending hotplug removals
carried out.  Config 0x5B bit 1 stays clear as on QEMU's TCG/qtest machines
(``smm-enabled``: QEMU sets it only without SMM, to mark SMM "already
initialised"); an APM command other than ACPI enable/disable would then
raise an SMI only if the guest sets it -- emu has no SMM and counts it.
"""
from __future__ import annotations

from typing import Callable

from emu.address_space import Region
from emu.machines.chipset import acpi_pcihp, apm
from emu.machines.chipset.acpi_regs import GPE_PCI_HOTPLUG, AcpiRegisters
from emu.machines.chipset.function import ChipsetFunction

VENDOR_ID = 0x8086
DEVICE_ID = 0x7113              # 82371AB PIIX4 ACPI
REVISION = 0x03
CLASS_BRIDGE_OTHER = 0x068000
STATUS_RESET = 0x0280           # DEVSEL medium | fast back-to-back

PMBASE = 0x40
PMBASE_MASK = 0xFFC0
PMBASE_IO = 0x01                # the I/O-space indicator bit
PMREGMISC = 0x80
PMIOSE = 0x01
PM_IO_LEN = 64
SMBBA = 0x90
SMB_IO_BASE = 0xB100
SMBHSTCFG = 0xD2
SMB_ENABLED = 0x09
DEVACTB_SMM = 0x5B
SMM_ALREADY_INIT = 0x02
GPE_BASE = 0xAFE0
GPE_LEN = 4
SCI_IRQ = 9
CPU_HOTPLUG_BASE = 0xAF00       # PIIX4_CPU_HOTPLUG_IO_BASE
CPU_HOTPLUG_LEN = 32            # ACPI_GPE_PROC_LEN: one bit per APIC id
S4_TYPE = 2
PM_IO_LAYER = "piix4-pm-io"

# registers QEMU's machine-ready notifier sets once (no LPT, no COM ports in emu)
POWER_ON = {0x5F: 0x10, 0x63: 0x60, 0x67: 0x00}


class _CpuPresent:
    def __init__(self, cpus: int):
        self.bitmap = bytearray(CPU_HOTPLUG_LEN)
        for i in range(min(cpus, CPU_HOTPLUG_LEN * 8)):
            self.bitmap[i // 8] |= 1 << (i % 8)
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.bitmap[offset:offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        # (QEMU switches to its modern CPU hotplug interface on a 0 at +0;
        # emu has no CPU hotplug: the bitmap stays)
        self.writes += 1


class PIIX4PM(ChipsetFunction):
    """``io``: the I/O address space the PM block is decoded into;
    ``ioapic``: where the SCI goes; ``clock``: the machine clock (ns);
    ``bus_slots``: the pcihp's view of the root bus (see
    :class:`~.acpi_pcihp.AcpiPciHotplug`); ``power_off``: the guest asked
    for soft-off (or S4)."""

    def __init__(self, io, ioapic, clock: Callable[[], int], *, cpus: int = 1,
                 fixed_slots: Callable[[], int], eject: Callable[[int], None],
                 power_off: Callable[[], None] | None = None, priority: int = 0):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_BRIDGE_OTHER, revision=REVISION,
                         interrupt_pin=1, status=STATUS_RESET, name="piix4-pm")
        self.io = io
        self.ioapic = ioapic
        self.priority = priority
        self.power_off = power_off
        self.acpi = AcpiRegisters(clock, self._set_sci, self._sleep, gpe_len=GPE_LEN,
                                  s4_type=S4_TYPE)
        self.apm = apm.APM(self._apm_command)
        self.pcihp = acpi_pcihp.AcpiPciHotplug(fixed_slots, eject,
                                               lambda: self.acpi.send_gpe(GPE_PCI_HOTPLUG))
        self.cpus = _CpuPresent(cpus)
        self.smi_requests = 0
        self.power_on(PMBASE, bytes([PMBASE_IO]))
        self.power_on(SMBBA, (SMB_IO_BASE | 1).to_bytes(2, "little"))
        self.power_on(SMBHSTCFG, bytes([SMB_ENABLED]))
        for off, value in POWER_ON.items():
            self.power_on(off, bytes([value]))
        self._pm_base: int | None = None

    def fixed_regions(self) -> list[Region]:
        return [self.acpi.gpe_region(GPE_BASE), self.pcihp.region(), self.apm.region(),
                Region(CPU_HOTPLUG_BASE, CPU_HOTPLUG_BASE + CPU_HOTPLUG_LEN, self.cpus,
                       name="acpi-cpu-hotplug")]

    # -- PM I/O block -------------------------------------------------------------------
    @property
    def pm_base(self) -> int | None:
        """Where the PM block is decoded, None while PMIOSE is off."""
        return self._pm_base

    def _update_pm_io(self) -> None:
        base = None
        if self.config[PMREGMISC] & PMIOSE:
            base = int.from_bytes(self.config[PMBASE:PMBASE + 4], "little") & PMBASE_MASK
        if base != self._pm_base:
            self._pm_base = base
            self.io.set_layer(PM_IO_LAYER, [] if base is None else self.acpi.pm_regions(base),
                              self.priority)

    def config_changed(self, offset: int, size: int) -> None:
        if self.touches(offset, size, PMBASE, 4) or self.touches(offset, size, PMREGMISC):
            self._update_pm_io()

    # -- SCI, sleep, APM ----------------------------------------------------------------
    def _set_sci(self, level: bool) -> None:
        self.ioapic.set_irq(SCI_IRQ, level, self)

    def _sleep(self, typ: int) -> None:
        if typ in (0, S4_TYPE) and self.power_off is not None:
            self.power_off()

    def _apm_command(self, value: int) -> None:
        self.acpi.apm_command(value == apm.ACPI_ENABLE, value == apm.ACPI_DISABLE)
        if value not in (apm.ACPI_ENABLE, apm.ACPI_DISABLE) \
                and self.config[DEVACTB_SMM] & SMM_ALREADY_INIT:
            self.smi_requests += 1     # an SMI: emu has no SMM

    def power_button(self) -> None:
        with self.lock:
            self.acpi.power_button()

    # -- reset --------------------------------------------------------------------------
    def reset_registers(self) -> None:
        self.config[0x58:0x5C] = bytes(4)
        self.config[PMBASE] = PMBASE_IO
        self.config[PMREGMISC] = 0
        self.acpi.reset()

    def after_reset(self) -> None:
        self.acpi.update_sci()
        self._update_pm_io()
        self.pcihp.reset()

    def stats(self) -> dict:
        return {"pm_base": self._pm_base, **self.acpi.stats(), "hotplug": self.pcihp.stats(),
                "smi_requests": self.smi_requests}
