"""Base address registers: what backs a BAR and where the guest put it.

A BAR is *register-backed* (every access goes to the device model's
``read(offset, size)`` / ``write(offset, size, value)``, like QEMU's
MemoryRegionOps) or *RAM-backed* (host memory the driver may map and use
with plain loads and stores, like a prefetchable BAR a Linux driver
``ioremap``s).  Bus accesses to a RAM-backed BAR read and write the memory.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Callable, Protocol


from emu.errors import EmuBug
from emu.spec import pci as regs
from emu.pci.errors import GuestAccessError

BAR_KINDS = ("mem32", "mem64", "io")
MIN_BAR_SIZE = {"mem32": 16, "mem64": 16, "io": 4}
MAX_BAR_SIZE = {"mem32": 1 << 31, "mem64": 1 << 63, "io": 256}
_CTYPES = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}


class RegisterOps(Protocol):
    """A register-backed region.  Raise GuestAccessError to refuse an access."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class RamBacking:
    """Host memory behind a RAM-backed BAR: ``length`` bytes at ``host_addr``.

    ``keepalive`` holds the object that owns the memory; ``accessible``
    (optional) tells whether ``[offset, offset+size)`` may be touched by a
    bus access -- a window with ``PROT_NONE`` holes passes one, so that a
    guest MMIO read of a hole answers all ones instead of faulting emu.
    ``readonly`` BARs ignore bus writes and map read-only.
    """

    def __init__(self, host_addr: int, length: int, *, readonly: bool = False,
                 keepalive: object = None,
                 accessible: Callable[[int, int], bool] | None = None):
        if host_addr <= 0 or length <= 0:
            raise EmuBug(f"RAM backing needs a host address and a length, got "
                         f"0x{host_addr:x}+0x{length:x}")
        self.host_addr = host_addr
        self.length = length
        self.readonly = readonly
        self.accessible = accessible
        self._keepalive = keepalive

    @classmethod
    def from_buffer(cls, buf, *, readonly: bool | None = None,
                    accessible: Callable[[int, int], bool] | None = None) -> "RamBacking":
        """Back a BAR with any C-contiguous buffer (mmap, bytearray, numpy...)."""
        view = memoryview(buf).cast("B")
        if readonly is None:
            readonly = view.readonly
        elif not readonly and view.readonly:
            raise EmuBug("a writable RAM BAR needs a writable buffer")
        if not view.readonly:
            # ctypes, not numpy, for the address: a machine starts without numpy
            import ctypes
            arr = (ctypes.c_char * view.nbytes).from_buffer(view)
            return cls(ctypes.addressof(arr), view.nbytes, readonly=readonly,
                       keepalive=(buf, view, arr), accessible=accessible)
        import numpy as np      # a read-only buffer (bytes): ctypes cannot take its address
        a = np.frombuffer(buf, dtype=np.uint8)
        return cls(a.ctypes.data, a.nbytes, readonly=readonly, keepalive=(buf, a),
                   accessible=accessible)

    def check(self, offset: int, size: int) -> None:
        if offset < 0 or offset + size > self.length or (
                self.accessible is not None and not self.accessible(offset, size)):
            raise GuestAccessError(
                "ram-unbacked", f"RAM BAR range 0x{offset:x}+{size} is not backed")

    def view(self, offset: int, length: int) -> memoryview:
        """A memoryview of ``[offset, offset+length)`` (caller bounds-checks)."""
        arr = (ctypes.c_char * length).from_address(self.host_addr + offset)
        mv = memoryview(arr).cast("B")
        return mv.toreadonly() if self.readonly else mv

    def read(self, offset: int, size: int) -> int:
        self.check(offset, size)
        if size in _CTYPES and offset % size == 0:     # one aligned load, as a CPU does
            return _CTYPES[size].from_address(self.host_addr + offset).value
        return int.from_bytes(ctypes.string_at(self.host_addr + offset, size), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.check(offset, size)
        if self.readonly:
            raise GuestAccessError("ram-readonly", f"write to read-only RAM BAR at 0x{offset:x}")
        if size in _CTYPES and offset % size == 0:
            _CTYPES[size].from_address(self.host_addr + offset).value = value
        else:
            ctypes.memmove(self.host_addr + offset, value.to_bytes(size, "little"), size)


def as_ram_backing(ram) -> RamBacking:
    """Accept a RamBacking, a ``(host_addr, length)`` pair or a buffer."""
    if isinstance(ram, RamBacking):
        return ram
    if isinstance(ram, tuple) and len(ram) == 2:
        return RamBacking(int(ram[0]), int(ram[1]))
    return RamBacking.from_buffer(ram)


@dataclass(eq=False)
class Bar:
    """One BAR of a function.  ``address`` is where the guest decodes it
    (None while it is not programmed or its decode is disabled)."""

    index: int
    size: int
    kind: str
    prefetchable: bool = False
    ops: RegisterOps | None = None
    ram: RamBacking | None = None
    address: int | None = None

    def __post_init__(self):
        if self.kind not in BAR_KINDS:
            raise EmuBug(f"BAR kind {self.kind!r} not in {BAR_KINDS}")
        if not 0 <= self.index < regs.NUM_BARS or (
                self.kind == "mem64" and self.index == regs.NUM_BARS - 1):
            raise EmuBug(f"BAR index {self.index} invalid for {self.kind}")
        if (self.size & (self.size - 1) or not
                MIN_BAR_SIZE[self.kind] <= self.size <= MAX_BAR_SIZE[self.kind]):
            raise EmuBug(f"BAR{self.index} size 0x{self.size:x} is not a power of two "
                         f"in [{MIN_BAR_SIZE[self.kind]}, 0x{MAX_BAR_SIZE[self.kind]:x}]")
        if (self.ops is None) == (self.ram is None):
            raise EmuBug(f"BAR{self.index} needs exactly one of ops= or ram=")
        if self.prefetchable and self.kind == "io":
            raise EmuBug("an I/O BAR cannot be prefetchable")
        if self.ram is not None and self.ram.length > self.size:
            raise EmuBug(f"BAR{self.index} RAM backing is larger than the BAR")

    @property
    def is_io(self) -> bool:
        return self.kind == "io"

    @property
    def is_64(self) -> bool:
        return self.kind == "mem64"

    @property
    def flags(self) -> int:
        """The read-only low bits of the BAR register."""
        if self.is_io:
            return regs.BAR_SPACE_IO
        return ((regs.BAR_MEM_TYPE_64 if self.is_64 else 0)
                | (regs.BAR_MEM_PREFETCH if self.prefetchable else 0))

    def read(self, offset: int, size: int) -> int:
        return (self.ops or self.ram).read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        (self.ops or self.ram).write(offset, size, value)
