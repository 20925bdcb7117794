"""The PIIX3 IDE controller, PCI function 00:01.1 (8086:7010, QEMU 7.2
``hw/ide/piix.c``) with no drives attached.

Configuration space as QEMU's: programming interface 0x80 (bus-master
capable, both channels in compatibility mode), status DEVSEL medium and
fast back-to-back, BAR4 the 16-byte bus-master IDE block (BMIBA, I/O).
The bus-master registers are emulated (per channel at +0/+8: command
(bits 0 and 3), status (bits 5-6 read/write, 1-2 write-1-to-clear), the
PRD table address at +4); with no drive a started transfer never
progresses.  The compatibility-mode task-file ports (0x1F0.., 0x170..)
are not modelled: emu has no disks.
"""
from __future__ import annotations

from emu.machines.chipset.function import ChipsetFunction
from emu.pci.errors import GuestAccessError

VENDOR_ID = 0x8086
DEVICE_ID = 0x7010            # 82371SB PIIX3 IDE
CLASS_IDE = 0x010180          # mass storage / IDE / bus-master
STATUS_RESET = 0x0280         # DEVSEL medium | fast back-to-back
BMDMA_BAR = 4
BMDMA_SIZE = 16
BMDMA_CHANNEL = 8
BM_CMD_START = 0x01
BM_CMD_WRITABLE = 0x09
BM_STATUS_DMAING = 0x01
BM_STATUS_W1C = 0x06
BM_STATUS_RW = 0x60


class _BusMaster:
    """One channel's bus-master registers."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.cmd = self.status = self.addr = 0

    def write_cmd(self, value: int) -> None:
        if (value ^ self.cmd) & BM_CMD_START:
            if value & BM_CMD_START:
                self.status |= BM_STATUS_DMAING      # no drive: it never completes
            else:
                self.status &= ~BM_STATUS_DMAING
        self.cmd = value & BM_CMD_WRITABLE

    def write_status(self, value: int) -> None:
        self.status = (value & BM_STATUS_RW) | (self.status & BM_STATUS_DMAING) \
            | (self.status & ~value & BM_STATUS_W1C)


class _BusMasterBlock:
    def __init__(self, channels):
        self.channels = channels

    def read(self, offset: int, size: int) -> int:
        ch, reg = self.channels[offset // BMDMA_CHANNEL], offset % BMDMA_CHANNEL
        if reg >= 4:
            return (ch.addr >> (8 * (reg - 4))) & ((1 << (8 * size)) - 1)
        if size != 1:
            return (1 << (8 * size)) - 1
        return {0: ch.cmd, 2: ch.status}.get(reg, 0xFF)

    def write(self, offset: int, size: int, value: int) -> None:
        ch, reg = self.channels[offset // BMDMA_CHANNEL], offset % BMDMA_CHANNEL
        if reg >= 4:
            if reg + size > BMDMA_CHANNEL:
                raise GuestAccessError("bmdma-bad-access", f"PRD address write at +{reg}/{size}")
            shift, mask = 8 * (reg - 4), (1 << (8 * size)) - 1
            ch.addr = (ch.addr & ~(mask << shift)) | (((value & mask) << shift) & ~3)
            ch.addr &= 0xFFFFFFFF
        elif size == 1 and reg == 0:
            ch.write_cmd(value)
        elif size == 1 and reg == 2:
            ch.write_status(value)


class PIIX3IDE(ChipsetFunction):
    def __init__(self):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_IDE, status=STATUS_RESET, name="piix3-ide")
        self.channels = [_BusMaster(), _BusMaster()]
        self.add_bar(BMDMA_BAR, BMDMA_SIZE, "io", ops=_BusMasterBlock(self.channels))

    def reset_registers(self) -> None:
        for ch in self.channels:
            ch.reset()
