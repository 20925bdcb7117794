"""ACPI fixed-hardware registers (ACPI 6.4, 4.8 "ACPI Hardware
Features"): the PM1a event block (status/enable), PM1a control, the PM
timer and the GPE0 block, with the System Control Interrupt they drive --
QEMU 7.2's ``hw/acpi/core.c``, which both its PIIX4 and ICH9 use.

* PM1 status bits are write-1-to-clear; TMR_STS is set once the PM timer
  passes its overflow time (computed when read, from the machine clock).
* PM1 control: writing SLP_EN with SLP_TYP 0 (soft off) or the S4 type
  asks the machine to power off; SCI_EN follows the APM ACPI-enable/disable
  commands (:meth:`AcpiRegisters.apm_command`).
* The PM timer: 24 bits at 3.579545 MHz of the machine clock.
* GPE0: status bytes (write-1-to-clear) then enable bytes; a GPE event
  sets a status bit (PCI hotplug: bit 1).
* SCI level = (PM1 status & enable & {timer, global lock, power button,
  RTC}) or (GPE0 status & enable) != 0, re-evaluated after every access
  and event (QEMU's ``acpi_update_sci``).  QEMU also arms a timer for the
  PM timer overflow; here the overflow shows at the next access.

Register widths follow QEMU's memory-region ``valid``/``impl`` sizes: PM1
event and control are 16-bit registers (a byte access at an odd offset of
the event block reads 0, a dword one is two word accesses, as in QEMU),
the timer a 32-bit one, GPE0 byte-wide.
"""
from __future__ import annotations

from typing import Callable

from emu.address_space import Region, all_ones

PM_TIMER_FREQUENCY = 3_579_545
NS_PER_S = 1_000_000_000

# PM1 status / enable (ACPI 6.4, Table 4.13 / 4.14)
TMR_STS = 0x0001
GBL_STS = 0x0020
PWRBTN_STS = 0x0100
RTC_STS = 0x0400
TMR_EN = 0x0001
GBL_EN = 0x0020
PWRBTN_EN = 0x0100
RTC_EN = 0x0400
PM1_COMMON_ENABLED = TMR_EN | GBL_EN | PWRBTN_EN | RTC_EN
# PM1 control (Table 4.16)
SCI_EN = 0x0001
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 0x7
SLP_EN = 0x2000
SOFT_OFF_TYPE = 0

PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN = 4, 2, 4
PM1_CNT_OFFSET, PM_TMR_OFFSET = 4, 8          # within the PM I/O block (PIIX4, ICH9)
GPE_PCI_HOTPLUG = 0x02                        # QEMU's ACPI_PCI_HOTPLUG_STATUS


class _Sized:
    """A register block served as QEMU's memory core serves its
    MemoryRegionOps: an access wider than ``valid`` is split into accesses
    of ``valid`` bytes (``flatview_read``'s ``memory_access_size``); one
    narrower than ``impl`` reads/writes the ``impl``-wide register at the
    same offset and keeps its low bytes (``access_with_adjusted_size``)."""

    impl = 1
    valid = 4

    def read(self, offset: int, size: int) -> int:
        n = min(size, self.valid)
        value = 0
        for i in range(0, size, n):
            value |= (self.read_reg(offset + i, max(n, self.impl)) & all_ones(n)) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        n = min(size, self.valid)
        for i in range(0, size, n):
            self.write_reg(offset + i, max(n, self.impl), (value >> (8 * i)) & all_ones(n))


class _Pm1Event(_Sized):
    impl = valid = 2

    def __init__(self, regs: "AcpiRegisters"):
        self.r = regs

    def read_reg(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.r.pm1_status()
        if offset == 2:
            return self.r.pm1_en
        return 0

    def write_reg(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.r.write_pm1_status(value)
        elif offset == 2:
            self.r.pm1_en = value & 0xFFFF
            self.r.update_sci()


class _Pm1Control(_Sized):
    impl = valid = 2

    def __init__(self, regs: "AcpiRegisters"):
        self.r = regs

    def read_reg(self, offset: int, size: int) -> int:
        return self.r.pm1_cnt

    def write_reg(self, offset: int, size: int, value: int) -> None:
        self.r.write_pm1_cnt(value & 0xFFFF)


class _PmTimer(_Sized):
    impl = 4

    def __init__(self, regs: "AcpiRegisters"):
        self.r = regs

    def read_reg(self, offset: int, size: int) -> int:
        return self.r.pm_timer() & 0xFFFFFF

    def write_reg(self, offset: int, size: int, value: int) -> None:
        pass


class _Gpe:
    def __init__(self, regs: "AcpiRegisters"):
        self.r = regs

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(bytes(self.r.gpe_byte(offset + i) for i in range(size)), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self.r.write_gpe_byte(offset + i, (value >> (8 * i)) & 0xFF)
        self.r.update_sci()


class AcpiRegisters:
    """``clock``: the machine clock in ns (the virtual clock under qtest);
    ``sci``: drives the SCI line; ``sleep``: called with SLP_TYP when the
    guest sets SLP_EN; ``gpe_len``: bytes of the GPE0 block (half status,
    half enable); ``s4_type``: the SLP_TYP value of S4."""

    def __init__(self, clock: Callable[[], int], sci: Callable[[bool], None],
                 sleep: Callable[[int], None] | None = None, gpe_len: int = 4,
                 s4_type: int = 2, acpi_only: bool = False):
        self.clock = clock
        self.sci = sci
        self.sleep = sleep
        self.gpe_len = gpe_len
        self.s4_type = s4_type
        self.acpi_only = acpi_only
        self.sci_level = False
        self.sleep_requests = 0
        self.reset()

    # -- PM1 ---------------------------------------------------------------------------
    def _ticks(self) -> int:
        return self.clock() * PM_TIMER_FREQUENCY // NS_PER_S

    def pm_timer(self) -> int:
        return self._ticks()

    def pm1_status(self) -> int:
        if self.clock() >= self.overflow_time * NS_PER_S // PM_TIMER_FREQUENCY:
            self.pm1_sts |= TMR_STS
        return self.pm1_sts

    def write_pm1_status(self, value: int) -> None:
        if self.pm1_status() & value & TMR_STS:
            # the next overflow: the timer's bit 23 toggles (QEMU: 2^23 ticks)
            self.overflow_time = (self._ticks() + 0x800000) & ~0x7FFFFF
        self.pm1_sts &= ~value & 0xFFFF
        self.update_sci()

    def write_pm1_cnt(self, value: int) -> None:
        self.pm1_cnt = value & ~SLP_EN
        if value & SLP_EN:
            typ = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK
            self.sleep_requests += 1
            if self.sleep is not None:
                self.sleep(typ)

    def apm_command(self, enable: bool, disable: bool) -> None:
        """The APM ACPI-enable/disable commands (ACPI 6.4, 4.8.2.5)."""
        if self.acpi_only:
            return
        if enable:
            self.pm1_cnt |= SCI_EN
        elif disable:
            self.pm1_cnt &= ~SCI_EN

    def power_button(self) -> None:
        """The power button was pressed (QMP system_powerdown)."""
        if self.pm1_en & PWRBTN_EN:
            self.pm1_sts |= PWRBTN_STS
            self.update_sci()

    # -- GPE0 --------------------------------------------------------------------------
    def gpe_byte(self, offset: int) -> int:
        half = self.gpe_len // 2
        if offset < half:
            return self.gpe_sts[offset]
        if offset < self.gpe_len:
            return self.gpe_en[offset - half]
        return 0

    def write_gpe_byte(self, offset: int, value: int) -> None:
        half = self.gpe_len // 2
        if offset < half:
            self.gpe_sts[offset] &= ~value & 0xFF
        elif offset < self.gpe_len:
            self.gpe_en[offset - half] = value

    def send_gpe(self, bits: int) -> None:
        """An event for GPE0 status byte 0 (e.g. GPE_PCI_HOTPLUG)."""
        self.gpe_sts[0] |= bits
        self.update_sci()

    # -- SCI ---------------------------------------------------------------------------
    def update_sci(self) -> None:
        level = bool(self.pm1_status() & self.pm1_en & PM1_COMMON_ENABLED) \
            or bool(self.gpe_sts[0] & self.gpe_en[0])
        self.sci_level = level
        self.sci(level)

    # -- layout ------------------------------------------------------------------------
    def pm_regions(self, base: int) -> list[Region]:
        """PM1a event, PM1a control and PM timer of a PM block at ``base``."""
        return [Region(base, base + PM1_EVT_LEN, _Pm1Event(self), name="acpi-evt"),
                Region(base + PM1_CNT_OFFSET, base + PM1_CNT_OFFSET + PM1_CNT_LEN,
                       _Pm1Control(self), name="acpi-cnt"),
                Region(base + PM_TMR_OFFSET, base + PM_TMR_OFFSET + PM_TMR_LEN,
                       _PmTimer(self), name="acpi-tmr")]

    def gpe_region(self, base: int) -> Region:
        return Region(base, base + self.gpe_len, _Gpe(self), name="acpi-gpe0")

    def reset(self) -> None:
        """PM1 event, control, timer and GPE0 back to power-on."""
        self.pm1_sts = 0
        self.pm1_en = 0
        self.pm1_cnt = SCI_EN if self.acpi_only else 0
        self.overflow_time = 0
        self.gpe_sts = bytearray(self.gpe_len // 2)
        self.gpe_en = bytearray(self.gpe_len // 2)

    def stats(self) -> dict:
        return {"pm1_sts": self.pm1_sts, "pm1_en": self.pm1_en, "pm1_cnt": self.pm1_cnt,
                "gpe_sts": self.gpe_sts.hex(), "gpe_en": self.gpe_en.hex(),
                "sci": self.sci_level, "sleep_requests": self.sleep_requests}
