"""MSI-X (PCI Local Bus 3.0 §6.8.2): the capability, the vector table and
the pending-bit array, the latter two in register-backed BAR regions.

Delivery follows the spec and QEMU's ``hw/pci/msix.c``: a vector is
*masked* when its entry's mask bit is set or the function is masked
(message-control function-mask bit set, or MSI-X not enabled).  Notifying a
masked vector sets its pending bit; when it becomes unmasked with the bit
set, the message is sent then and the bit cleared.  Each message is a
DMA write of ``data`` to ``address`` through the function (so it needs bus
mastering) into the platform's interrupt controller.

Table entries are read and written with aligned 32- or 64-bit accesses
(spec: other sizes are undefined; here they are refused and counted).  The
PBA is read-only.  Every entry starts masked.
"""
from __future__ import annotations

import struct

from emu.errors import EmuBug
from emu.spec import pci as regs
from emu.pci.errors import GuestAccessError
from emu.pci.function import PCIFunction


class MSIX:
    """MSI-X for ``function`` with ``nvectors`` entries.  Register
    :attr:`table_ops` and :attr:`pba_ops` in the BARs named by
    ``table_bar``/``pba_bar`` at ``table_offset``/``pba_offset``."""

    def __init__(self, function: PCIFunction, nvectors: int, table_bar: int,
                 table_offset: int, pba_bar: int, pba_offset: int):
        if not 1 <= nvectors <= regs.MSIX_MAX_VECTORS:
            raise EmuBug(f"MSI-X vector count {nvectors} not in 1..2048")
        if table_offset % 8 or pba_offset % 8:
            raise EmuBug("MSI-X table and PBA offsets must be 8-byte aligned")
        self.function = function
        self.nvectors = nvectors
        self.table = bytearray(nvectors * regs.MSIX_ENTRY_SIZE)
        self.pending = bytearray((nvectors + 63) // 64 * 8)
        self.table_size = len(self.table)
        self.pba_size = len(self.pending)
        self.delivered = 0
        body = struct.pack("<HII", nvectors - 1, table_offset | table_bar,
                           pba_offset | pba_bar)
        wmask = struct.pack("<HII", regs.MSIX_FLAGS_ENABLE | regs.MSIX_FLAGS_MASKALL, 0, 0)
        self.cap_offset = function.add_capability(regs.CAP_ID_MSIX, body, wmask,
                                                  on_write=self._control_written)
        self.table_ops = _TableOps(self)
        self.pba_ops = _PbaOps(self)
        function.add_reset_hook(self.reset)
        self.reset()

    # -- state --------------------------------------------------------------------
    @property
    def control(self) -> int:
        return self.function._get(self.cap_offset + regs.MSIX_FLAGS, 2)

    @property
    def enabled(self) -> bool:
        return bool(self.control & regs.MSIX_FLAGS_ENABLE)

    @property
    def function_masked(self) -> bool:
        c = self.control
        return not c & regs.MSIX_FLAGS_ENABLE or bool(c & regs.MSIX_FLAGS_MASKALL)

    def _entry(self, vector: int, field: int) -> int:
        off = vector * regs.MSIX_ENTRY_SIZE + field
        return int.from_bytes(self.table[off:off + 4], "little")

    def vector_masked(self, vector: int) -> bool:
        return bool(self._entry(vector, regs.MSIX_ENTRY_VECTOR_CTRL) & regs.MSIX_ENTRY_CTRL_MASKBIT)

    def is_masked(self, vector: int) -> bool:
        return self.function_masked or self.vector_masked(vector)

    def is_pending(self, vector: int) -> bool:
        return bool(self.pending[vector // 8] & (1 << (vector % 8)))

    def _set_pending(self, vector: int, on: bool) -> None:
        bit = 1 << (vector % 8)
        if on:
            self.pending[vector // 8] |= bit
        else:
            self.pending[vector // 8] &= ~bit

    def message(self, vector: int) -> tuple[int, int]:
        """(address, data) programmed in entry ``vector``."""
        addr = self._entry(vector, regs.MSIX_ENTRY_ADDR_LO) | (
            self._entry(vector, regs.MSIX_ENTRY_ADDR_HI) << 32)
        return addr, self._entry(vector, regs.MSIX_ENTRY_DATA)

    # -- device side ----------------------------------------------------------------
    def notify(self, vector: int) -> bool:
        """Signal ``vector``.  Returns False if MSI-X is disabled (the device
        should use INTx then); True when the message was sent or left
        pending because the vector is masked."""
        with self.function.lock:
            if not self.enabled:
                return False
            if not 0 <= vector < self.nvectors:
                raise EmuBug(f"{self.function.name}: MSI-X vector {vector} >= {self.nvectors}")
            if self.is_masked(vector):
                self._set_pending(vector, True)
            else:
                self._send(vector)
            return True

    def clear_pending(self, vector: int) -> None:
        """The device withdrew the event behind a masked vector."""
        with self.function.lock:
            self._set_pending(vector, False)

    def _send(self, vector: int) -> None:
        addr, data = self.message(vector)
        self.delivered += 1
        self.function.send_msi(addr, data)

    def _deliver_unmasked_pending(self) -> None:
        if self.function_masked:
            return
        for vector in range(self.nvectors):
            if self.is_pending(vector) and not self.vector_masked(vector):
                self._set_pending(vector, False)
                self._send(vector)

    def _control_written(self, offset: int, size: int) -> None:
        if _touches(offset, size, regs.MSIX_FLAGS, 2):
            self._deliver_unmasked_pending()

    def reset(self) -> None:
        """Every entry masked with address/data 0, nothing pending (the
        capability's control bits are reset by the function itself)."""
        self.table[:] = bytes(len(self.table))
        for v in range(self.nvectors):
            off = v * regs.MSIX_ENTRY_SIZE + regs.MSIX_ENTRY_VECTOR_CTRL
            self.table[off] = regs.MSIX_ENTRY_CTRL_MASKBIT
        self.pending[:] = bytes(len(self.pending))


def _touches(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


def _check_dword_qword(what: str, offset: int, size: int) -> None:
    if size not in (4, 8) or offset % size:
        raise GuestAccessError("msix-bad-access",
                               f"MSI-X {what} access of size {size} at 0x{offset:x}")


class _TableOps:
    def __init__(self, msix: MSIX):
        self.msix = msix

    def read(self, offset: int, size: int) -> int:
        _check_dword_qword("table", offset, size)
        return int.from_bytes(self.msix.table[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        _check_dword_qword("table", offset, size)
        for i in range(0, size, 4):
            self._write_dword(offset + i, (value >> (8 * i)) & 0xFFFFFFFF)

    def _write_dword(self, offset: int, value: int) -> None:
        m = self.msix
        vector, field = divmod(offset, regs.MSIX_ENTRY_SIZE)
        if field == regs.MSIX_ENTRY_VECTOR_CTRL:
            value &= regs.MSIX_ENTRY_CTRL_MASKBIT       # other bits reserved
        m.table[offset:offset + 4] = value.to_bytes(4, "little")
        if (field == regs.MSIX_ENTRY_VECTOR_CTRL and m.is_pending(vector)
                and not m.is_masked(vector)):
            m._set_pending(vector, False)
            m._send(vector)


class _PbaOps:
    def __init__(self, msix: MSIX):
        self.msix = msix

    def read(self, offset: int, size: int) -> int:
        _check_dword_qword("PBA", offset, size)
        return int.from_bytes(self.msix.pending[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        raise GuestAccessError("msix-pba-write", f"write to the read-only PBA at 0x{offset:x}")
