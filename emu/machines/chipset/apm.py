"""The APM control/status ports at 0xB2/0xB3 (QEMU 7.2 ``hw/isa/apm.c``):
a write to the control port (APMC) passes the command to the chipset's
power management (0xF1/0xF0 enable/disable ACPI mode; anything else would
raise an SMI, which emu has no SMM for); the status port (APMS) is plain
storage.  Byte registers: a wider access is one access per byte, as
QEMU's memory core splits it."""
from __future__ import annotations

from typing import Callable

from emu.address_space import Region

APM_CNT_IOPORT = 0xB2
APM_STS_IOPORT = 0xB3
ACPI_ENABLE = 0xF1
ACPI_DISABLE = 0xF0


class APM:
    def __init__(self, command: Callable[[int], None]):
        self.command = command
        self.apmc = self.apms = 0
        self.smi_requests = 0

    def region(self) -> Region:
        return Region(APM_CNT_IOPORT, APM_STS_IOPORT + 1, self, name="apm-io")

    def read(self, offset: int, size: int) -> int:
        return sum(self._read_byte(offset + i) << (8 * i) for i in range(size))

    def _read_byte(self, offset: int) -> int:
        return self.apmc if offset == 0 else self.apms

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def _write_byte(self, offset: int, value: int) -> None:
        if offset == 0:
            self.apmc = value
            self.command(value)
        else:
            self.apms = value
