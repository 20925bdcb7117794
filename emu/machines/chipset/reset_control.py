"""The reset control register at I/O port 0xCF9 (PIIX3 RCR, ICH9
RST_CNT; one byte on top of CONFIG_ADDRESS): writing bit 2 (RST_CPU) asks
for a system reset -- the guest's reboot; QEMU's
``qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET)``.  The other
bits the chipset keeps read back."""
from __future__ import annotations

from typing import Callable

from emu.address_space import Region

RESET_CONTROL_PORT = 0xCF9
RST_CPU = 0x04


class ResetControl:
    """``request``: called on the accessing thread (machine lock held); it
    must only schedule the reset.  ``keep``: the bits that read back."""

    def __init__(self, name: str, keep: int, request: Callable[[], None] | None = None):
        self.name = name
        self.keep = keep
        self.request = request
        self.value = 0
        self.requests = 0

    def region(self) -> Region:
        return Region(RESET_CONTROL_PORT, RESET_CONTROL_PORT + 1, self, name=self.name)

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        if value & RST_CPU:
            self.requests += 1
            if self.request is not None:
                self.request()
            return
        self.value = value & self.keep

    def reset(self) -> None:
        self.value = 0
