"""QEMU's firmware configuration device, I/O-port flavour (QEMU 7.2
``hw/nvram/fw_cfg.c``, ``docs/specs/fw_cfg.txt``) at 0x510 on the PC
machines: what firmware (SeaBIOS, OVMF) and QEMU's test library read to
learn the machine -- RAM size, CPU count, the e820 map, named files.

Ports:

* 0x510/0x511 (one 2-byte region, as QEMU's): a 16-bit write selects an
  item (and rewinds it); a byte read, at either port, returns the item's
  next byte (zeros past its end, and for an item that does not exist).
  Byte writes are ignored (write support went in QEMU 2.4).  Other
  accesses read 0 and do nothing.
* 0x514 (8 bytes, big-endian): the DMA interface.  Reads return the
  signature "QEMU CFG"; writing the high then the low half of the guest
  address of a ``FWCfgDmaAccess`` {be32 control, be32 length, be64
  address} runs it: SELECT (bit 3, item in bits 31:16), then READ (bit 1),
  SKIP (bit 2) or WRITE (bit 4, only to writable items, whole length)
  of ``length`` bytes at ``address``; the control word is written back (0,
  or ERROR = bit 0).  Guest memory is reached through the machine's memory
  space: a transfer touching anything that is not claimed fails with ERROR.

Items: keys below 0x8000 are generic, 0x8000 | n architecture-specific;
bit 14 (0x4000) of a selector is ignored.  Named files get keys from 0x20
in name order; key 0x19 is the directory: be32 count, then per file
{be32 size, be16 select, be16 reserved, char name[56]} (QEMU's table has
room for 32 files and is read whole).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

from emu.address_space import Region, all_ones
from emu.errors import EmuBug

FW_CFG_IO_BASE = 0x510
FW_CFG_CTL_SIZE = 2
FW_CFG_DMA_IO_BASE = 0x514
FW_CFG_DMA_SIZE = 8

FW_CFG_SIGNATURE = 0x00
FW_CFG_ID = 0x01
FW_CFG_UUID = 0x02
FW_CFG_RAM_SIZE = 0x03
FW_CFG_NOGRAPHIC = 0x04
FW_CFG_NB_CPUS = 0x05
FW_CFG_NUMA = 0x0D
FW_CFG_BOOT_MENU = 0x0E
FW_CFG_MAX_CPUS = 0x0F
FW_CFG_FILE_DIR = 0x19
FW_CFG_FILE_FIRST = 0x20
FW_CFG_FILE_SLOTS = 0x20
FW_CFG_WRITE_CHANNEL = 0x4000
FW_CFG_ARCH_LOCAL = 0x8000
FW_CFG_ENTRY_MASK = ~(FW_CFG_WRITE_CHANNEL | FW_CFG_ARCH_LOCAL) & 0xFFFF
FW_CFG_INVALID = 0xFFFF
# x86 (hw/i386/fw_cfg.h)
FW_CFG_ACPI_TABLES = FW_CFG_ARCH_LOCAL + 0
FW_CFG_SMBIOS_ENTRIES = FW_CFG_ARCH_LOCAL + 1
FW_CFG_IRQ0_OVERRIDE = FW_CFG_ARCH_LOCAL + 2
FW_CFG_HPET = FW_CFG_ARCH_LOCAL + 4

FW_CFG_VERSION = 0x01           # the traditional interface
FW_CFG_VERSION_DMA = 0x02
FW_CFG_SIGNATURE_BYTES = b"QEMU"
FW_CFG_DMA_SIGNATURE = 0x51454D5520434647      # "QEMU CFG"

FW_CFG_DMA_CTL_ERROR = 0x01
FW_CFG_DMA_CTL_READ = 0x02
FW_CFG_DMA_CTL_SKIP = 0x04
FW_CFG_DMA_CTL_SELECT = 0x08
FW_CFG_DMA_CTL_WRITE = 0x10
DMA_ACCESS = struct.Struct(">IIQ")              # control, length, address
FILE_ENTRY = struct.Struct(">IHH56s")           # size, select, reserved, name
FILE_NAME_MAX = 56
ZERO_CHUNK = 1 << 20


@dataclass
class Item:
    data: bytes | bytearray | None
    writable: bool = False
    write_cb: Callable[[int, int], None] | None = None     # (offset, length)

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else 0


class FwCfg:
    """``memory``: the address space DMA transfers reach (system memory)."""

    def __init__(self, memory, file_slots: int = FW_CFG_FILE_SLOTS, dma: bool = True):
        self.memory = memory
        self.file_slots = file_slots
        self.dma_enabled = dma
        self.items: list[dict[int, Item]] = [{}, {}]          # generic, arch-local
        self.files: list[tuple[str, Item]] = []
        self.cur_entry = FW_CFG_INVALID
        self.cur_offset = 0
        self.dma_addr = 0
        self.dma_errors = 0
        self.add_bytes(FW_CFG_SIGNATURE, FW_CFG_SIGNATURE_BYTES)
        self.add_i32(FW_CFG_ID, FW_CFG_VERSION | (FW_CFG_VERSION_DMA if dma else 0))
        self._write_directory()
        self.select(FW_CFG_SIGNATURE)

    # -- items --------------------------------------------------------------------------
    def add_bytes(self, key: int, data: bytes | None, writable: bool = False) -> None:
        arch = 1 if key & FW_CFG_ARCH_LOCAL else 0
        index = key & FW_CFG_ENTRY_MASK
        if index >= self.max_entry:
            raise EmuBug(f"fw_cfg key 0x{key:x} beyond 0x{self.max_entry:x}")
        self.items[arch][index] = Item(bytearray(data) if writable else
                                       (bytes(data) if data is not None else None), writable)

    def add_i16(self, key: int, value: int) -> None:
        self.add_bytes(key, struct.pack("<H", value))

    def add_i32(self, key: int, value: int) -> None:
        self.add_bytes(key, struct.pack("<I", value))

    def add_i64(self, key: int, value: int) -> None:
        self.add_bytes(key, struct.pack("<Q", value))

    def add_file(self, name: str, data: bytes, writable: bool = False,
                 write_cb: Callable[[int, int], None] | None = None) -> None:
        raw = name.encode()
        if not raw or len(raw) >= FILE_NAME_MAX:
            raise EmuBug(f"fw_cfg file name {name!r} is empty or too long")
        if any(n == name for n, _ in self.files):
            raise EmuBug(f"duplicate fw_cfg file name: {name}")
        if len(self.files) >= self.file_slots:
            raise EmuBug("fw_cfg has no free file slot")
        item = Item(bytearray(data) if writable else bytes(data), writable, write_cb)
        self.files.append((name, item))
        self.files.sort(key=lambda f: f[0].encode())         # QEMU: strcmp order
        for i, (_, it) in enumerate(self.files):
            self.items[0][FW_CFG_FILE_FIRST + i] = it
        self._write_directory()

    def file(self, name: str) -> bytes | None:
        return next((bytes(it.data) for n, it in self.files if n == name), None)

    def _write_directory(self) -> None:
        table = bytearray(4 + FILE_ENTRY.size * self.file_slots)
        struct.pack_into(">I", table, 0, len(self.files))
        for i, (name, item) in enumerate(self.files):
            FILE_ENTRY.pack_into(table, 4 + FILE_ENTRY.size * i, item.length,
                                 FW_CFG_FILE_FIRST + i, 0, name.encode())
        self.items[0][FW_CFG_FILE_DIR] = Item(bytes(table))

    @property
    def max_entry(self) -> int:
        return FW_CFG_FILE_FIRST + self.file_slots

    # -- the interface ------------------------------------------------------------------
    def select(self, key: int) -> bool:
        key &= 0xFFFF
        self.cur_offset = 0
        if key & FW_CFG_ENTRY_MASK >= self.max_entry:
            self.cur_entry = FW_CFG_INVALID
            return False
        self.cur_entry = key
        return True

    def _current(self) -> Item | None:
        if self.cur_entry == FW_CFG_INVALID:
            return None
        arch = 1 if self.cur_entry & FW_CFG_ARCH_LOCAL else 0
        return self.items[arch].get(self.cur_entry & FW_CFG_ENTRY_MASK)

    def data_read(self, size: int) -> int:
        """The next ``size`` bytes as QEMU composes them: big-endian, zero
        padded on the right past the end."""
        item = self._current()
        value, n = 0, size
        if item is not None and item.data is not None and self.cur_offset < item.length:
            while n and self.cur_offset < item.length:
                value = (value << 8) | item.data[self.cur_offset]
                self.cur_offset += 1
                n -= 1
            value <<= 8 * n
        return value

    def regions(self) -> list[Region]:
        out = [Region(FW_CFG_IO_BASE, FW_CFG_IO_BASE + FW_CFG_CTL_SIZE, _Comb(self), name="fwcfg")]
        if self.dma_enabled:
            out.append(Region(FW_CFG_DMA_IO_BASE, FW_CFG_DMA_IO_BASE + FW_CFG_DMA_SIZE,
                              _Dma(self), name="fwcfg.dma"))
        return out

    def reset(self) -> None:
        self.select(FW_CFG_SIGNATURE)
        self.dma_addr = 0

    # -- DMA ----------------------------------------------------------------------------
    def _claimed(self, addr: int, length: int) -> bool:
        """Whether every byte of the range is claimed by a region of memory."""
        if addr < 0 or length < 0 or addr + length > self.memory.size:
            return False
        end = addr + length
        while addr < end:
            r = self.memory.lookup(addr, 1)
            if r is None:
                return False
            addr = r.end
        return True

    def _mem_read(self, addr: int, length: int) -> bytes | None:
        return self.memory.read_bytes(addr, length) if self._claimed(addr, length) else None

    def _mem_write(self, addr: int, data: bytes) -> bool:
        if not self._claimed(addr, len(data)):
            return False
        self.memory.write_bytes(addr, data)
        return True

    def _mem_zero(self, addr: int, length: int) -> bool:
        if not self._claimed(addr, length):
            return False
        for off in range(0, length, ZERO_CHUNK):
            self.memory.write_bytes(addr + off, bytes(min(ZERO_CHUNK, length - off)))
        return True

    def dma_transfer(self) -> None:
        """Run the FWCfgDmaAccess at the latched guest address."""
        dma_addr, self.dma_addr = self.dma_addr, 0
        raw = self._mem_read(dma_addr, DMA_ACCESS.size)
        if raw is None:
            self.dma_errors += 1
            self._mem_write(dma_addr, struct.pack(">I", FW_CFG_DMA_CTL_ERROR))
            return
        control, length, address = DMA_ACCESS.unpack(raw)
        if control & FW_CFG_DMA_CTL_SELECT:
            self.select(control >> 16)
        item = self._current()
        read = bool(control & FW_CFG_DMA_CTL_READ)
        write = not read and bool(control & FW_CFG_DMA_CTL_WRITE)
        if not (read or write or control & FW_CFG_DMA_CTL_SKIP):
            length = 0
        status = 0
        while length > 0 and not status & FW_CFG_DMA_CTL_ERROR:
            if item is None or item.data is None or self.cur_offset >= item.length:
                n = length
                if read and not self._mem_zero(address, n):
                    status |= FW_CFG_DMA_CTL_ERROR
                if write:
                    status |= FW_CFG_DMA_CTL_ERROR
            else:
                n = min(length, item.length - self.cur_offset)
                if read and not self._mem_write(
                        address, bytes(item.data[self.cur_offset:self.cur_offset + n])):
                    status |= FW_CFG_DMA_CTL_ERROR
                if write:
                    data = self._mem_read(address, n) if item.writable and n == length else None
                    if data is None:
                        status |= FW_CFG_DMA_CTL_ERROR
                    else:
                        item.data[self.cur_offset:self.cur_offset + n] = data
                        if item.write_cb is not None:
                            item.write_cb(self.cur_offset, n)
                self.cur_offset += n
            address = (address + n) & 0xFFFFFFFFFFFFFFFF
            length -= n
        if status & FW_CFG_DMA_CTL_ERROR:
            self.dma_errors += 1
        self._mem_write(dma_addr, struct.pack(">I", status))

    def stats(self) -> dict:
        return {"selected": self.cur_entry, "offset": self.cur_offset,
                "files": [n for n, _ in self.files], "dma_errors": self.dma_errors}


class _Comb:
    """0x510 (selector) and 0x511 (data) as QEMU's one "fwcfg" region."""

    def __init__(self, fw: FwCfg):
        self.fw = fw

    def read(self, offset: int, size: int) -> int:
        return self.fw.data_read(1) if size == 1 else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 2:
            self.fw.select(value)


def _bswap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


class _Dma:
    """0x514: a big-endian register (the CPU's value arrives byte-swapped)."""

    def __init__(self, fw: FwCfg):
        self.fw = fw

    def read(self, offset: int, size: int) -> int:
        shift = (FW_CFG_DMA_SIZE - offset - size) * 8
        return _bswap((FW_CFG_DMA_SIGNATURE >> shift) & all_ones(size), size)

    def write(self, offset: int, size: int, value: int) -> None:
        value = _bswap(value, size)
        if size == 4 and offset == 0:
            self.fw.dma_addr = value << 32
        elif size == 4 and offset == 4:
            self.fw.dma_addr |= value
            self.fw.dma_transfer()
        elif size == 8 and offset == 0:
            self.fw.dma_addr = value
            self.fw.dma_transfer()
