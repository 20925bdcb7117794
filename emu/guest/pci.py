"""Guest side of PCI: what firmware and a kernel's PCI core do, using only
the bus API (configuration cycles, MMIO/port I/O, host mappings of
RAM-backed BARs, interrupt eventfds).

* :func:`enumerate_bus` scans device/function numbers and reads IDs.
* :func:`assign_resources` sizes every BAR (write all ones, read back the
  mask, with decode off), places it naturally aligned in its window
  (32-bit memory, 64-bit memory, I/O), writes INTERRUPT_LINE and enables
  decode and bus mastering -- SeaBIOS's job.
* :class:`PCIDevice` is a driver's handle on one function: config
  accessors, capability walk, BAR accessors and mappings, MSI-X set-up.

The device is untrusted from here too: nonsense it reports (a capability
loop, an MSI-X table outside its BAR) raises :class:`DriverError`.
"""
from __future__ import annotations

import select
import weakref
from dataclasses import dataclass, field
from typing import Protocol

from emu import eventfd
from emu.errors import PeerError
from emu.spec import pci as regs

MSI_ADDRESS = regs.MSI_ADDR_BASE          # destination: APIC 0, fixed delivery
FIRST_DEVICE_VECTOR = 0x30                 # Linux's first external vector
LAST_DEVICE_VECTOR = 0xEF


class DriverError(PeerError):
    """A device (or the bus) did not behave as the specification says."""


class BusAPI(Protocol):
    """What a guest may use: the methods of :class:`emu.machines.platform.Platform`."""

    def config_read(self, bdf: int, offset: int, size: int) -> int: ...
    def config_write(self, bdf: int, offset: int, size: int, value: int) -> None: ...
    def mmio_read(self, addr: int, size: int) -> int: ...
    def mmio_write(self, addr: int, size: int, value: int) -> None: ...
    def pio_read(self, port: int, size: int) -> int: ...
    def pio_write(self, port: int, size: int, value: int) -> None: ...
    def map_ram(self, addr: int, length: int): ...
    def ioeventfd_for(self, addr: int, size: int, data: int | None = None) -> int | None: ...
    def pio_ioeventfd_for(self, port: int, size: int, data: int | None = None) -> int | None: ...
    def interrupt_eventfd(self, vector: int) -> int: ...
    def intx_eventfd(self, line: int) -> int: ...
    def intx_route(self, bdf: int) -> int | None: ...


@dataclass
class BarInfo:
    index: int
    kind: str                   # "mem32" | "mem64" | "io"
    size: int
    prefetchable: bool
    address: int | None = None  # assigned address


@dataclass
class Window:
    """An address window the firmware hands out BARs from."""

    base: int
    limit: int                  # exclusive
    next: int = -1

    def __post_init__(self):
        if self.next < 0:
            self.next = self.base

    def take(self, size: int, align: int) -> int | None:
        addr = (self.next + align - 1) & ~(align - 1)
        if addr + size > self.limit:
            return None
        self.next = addr + size
        return addr


@dataclass
class ResourceWindows:
    mem32: Window = field(default_factory=lambda: Window(0xC000_0000, 0xFEC0_0000))
    mem64: Window = field(default_factory=lambda: Window(0x8_0000_0000, 0x80_0000_0000))
    io: Window = field(default_factory=lambda: Window(0xC000, 0x1_0000))


class VectorAllocator:
    """Hands out the guest's interrupt vectors (one "CPU", one IDT)."""

    def __init__(self, first: int = FIRST_DEVICE_VECTOR, last: int = LAST_DEVICE_VECTOR):
        self._free = list(range(first, last + 1))

    def alloc(self) -> int:
        if not self._free:
            raise DriverError("out of interrupt vectors")
        return self._free.pop(0)

    def free(self, vector: int) -> None:
        self._free.append(vector)
        self._free.sort()


_vectors_of_bus: "weakref.WeakKeyDictionary[object, VectorAllocator]" = \
    weakref.WeakKeyDictionary()


def reset_vectors(bus: BusAPI) -> None:
    """A reboot: the guest's interrupt vectors are all free again."""
    _vectors_of_bus.pop(bus, None)


def vectors_for(bus: BusAPI) -> VectorAllocator:
    """The default vector allocator of the guest that owns ``bus``."""
    alloc = _vectors_of_bus.get(bus)
    if alloc is None:
        alloc = _vectors_of_bus[bus] = VectorAllocator()
    return alloc


@dataclass(frozen=True)
class MsixVector:
    entry: int          # MSI-X table entry (the device's "vector" number)
    vector: int         # guest interrupt vector (MSI data)
    eventfd: int        # signalled when the message arrives


class PCIDevice:
    """A driver's handle on the function at ``bdf``."""

    def __init__(self, bus: BusAPI, bdf: int):
        self.bus = bus
        self.bdf = bdf
        self.bars: dict[int, BarInfo] = {}
        self.msix: list[MsixVector] = []
        self._msix_cap: int | None = None

    # -- configuration space ------------------------------------------------------
    def cfg_read(self, offset: int, size: int) -> int:
        return self.bus.config_read(self.bdf, offset, size)

    def cfg_write(self, offset: int, size: int, value: int) -> None:
        self.bus.config_write(self.bdf, offset, size, value)

    @property
    def vendor_id(self) -> int:
        return self.cfg_read(regs.VENDOR_ID, 2)

    @property
    def device_id(self) -> int:
        return self.cfg_read(regs.DEVICE_ID, 2)

    @property
    def revision(self) -> int:
        return self.cfg_read(regs.REVISION_ID, 1)

    @property
    def class_code(self) -> int:
        return self.cfg_read(regs.REVISION_ID, 4) >> 8

    @property
    def subsystem_vendor_id(self) -> int:
        return self.cfg_read(regs.SUBSYSTEM_VENDOR_ID, 2)

    @property
    def subsystem_id(self) -> int:
        return self.cfg_read(regs.SUBSYSTEM_ID, 2)

    @property
    def interrupt_pin(self) -> int:
        return self.cfg_read(regs.INTERRUPT_PIN, 1)

    @property
    def command(self) -> int:
        return self.cfg_read(regs.COMMAND, 2)

    def set_command(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        self.cfg_write(regs.COMMAND, 2, (self.command | set_bits) & ~clear_bits & 0xFFFF)

    def capabilities(self) -> list[tuple[int, int]]:
        """``(cap_id, offset)`` for each capability, walked as Linux does
        (at most 48 hops, offsets >= 0x40, dword aligned, 0xff ends it)."""
        if not self.cfg_read(regs.STATUS, 2) & regs.STATUS_CAP_LIST:
            return []
        caps, seen = [], set()
        pos = self.cfg_read(regs.CAPABILITY_LIST, 1)
        for _ in range(regs.CAP_MAX_COUNT):
            if pos < regs.CAP_START:
                return caps
            pos &= ~3
            if pos in seen:
                raise DriverError(f"capability list of {self.bdf:04x} loops at 0x{pos:x}")
            seen.add(pos)
            cap_id = self.cfg_read(pos, 1)
            if cap_id == 0xFF:
                return caps
            caps.append((cap_id, pos))
            pos = self.cfg_read(pos + 1, 1)
        return caps

    def find_capabilities(self, cap_id: int) -> list[int]:
        return [off for cid, off in self.capabilities() if cid == cap_id]

    # -- BARs ---------------------------------------------------------------------
    def size_bars(self) -> dict[int, BarInfo]:
        """Size every BAR (decode off while probing, then restored)."""
        cmd = self.command
        self.cfg_write(regs.COMMAND, 2, cmd & ~(regs.COMMAND_IO | regs.COMMAND_MEMORY))
        try:
            self.bars = {}
            i = 0
            while i < regs.NUM_BARS:
                info = self._size_bar(i)
                if info is not None:
                    self.bars[i] = info
                i += 2 if info is not None and info.kind == "mem64" else 1
        finally:
            self.cfg_write(regs.COMMAND, 2, cmd)
        return self.bars

    def _probe(self, off: int) -> tuple[int, int]:
        orig = self.cfg_read(off, 4)
        self.cfg_write(off, 4, 0xFFFFFFFF)
        mask = self.cfg_read(off, 4)
        self.cfg_write(off, 4, orig)
        return orig, mask

    def _size_bar(self, i: int) -> BarInfo | None:
        """Size BAR ``i``; an address already programmed is kept (as Linux
        reads the resources firmware assigned)."""
        off = regs.BASE_ADDRESS_0 + 4 * i
        orig, mask = self._probe(off)
        if mask in (0, 0xFFFFFFFF):
            return None
        if mask & regs.BAR_SPACE_IO:
            bits = mask & ~regs.BAR_IO_FLAGS & 0xFFFF
            addr = orig & ~regs.BAR_IO_FLAGS & 0xFFFF
            return BarInfo(i, "io", bits & -bits, False, addr or None) if bits else None
        mem_type = (mask >> 1) & 3
        bits = mask & ~regs.BAR_MEM_FLAGS
        addr = orig & ~regs.BAR_MEM_FLAGS
        kind = "mem32"
        if mem_type == 2:
            if i == regs.NUM_BARS - 1:
                raise DriverError(f"{self.bdf:04x}: 64-bit BAR{i} has no upper half")
            orig_hi, hi = self._probe(off + 4)
            bits |= hi << 32
            addr |= orig_hi << 32
            kind = "mem64"
        elif mem_type != 0:
            raise DriverError(f"{self.bdf:04x}: BAR{i} has reserved memory type {mem_type}")
        if not bits:
            return None
        return BarInfo(i, kind, bits & -bits, bool(mask & regs.BAR_MEM_PREFETCH), addr or None)

    def program_bar(self, index: int, address: int) -> None:
        info = self.bars[index]
        off = regs.BASE_ADDRESS_0 + 4 * index
        self.cfg_write(off, 4, address & 0xFFFFFFFF)
        if info.kind == "mem64":
            self.cfg_write(off + 4, 4, address >> 32)
        info.address = address

    def _bar(self, index: int) -> BarInfo:
        info = self.bars.get(index)
        if info is None or info.address is None:
            raise DriverError(f"{self.bdf:04x}: BAR{index} is not assigned")
        return info

    def bar_address(self, index: int) -> int:
        return self._bar(index).address

    def bar_read(self, index: int, offset: int, size: int) -> int:
        info = self._bar(index)
        if info.kind == "io":
            return self.bus.pio_read(info.address + offset, size)
        return self.bus.mmio_read(info.address + offset, size)

    def bar_write(self, index: int, offset: int, size: int, value: int) -> None:
        info = self._bar(index)
        if info.kind == "io":
            self.bus.pio_write(info.address + offset, size, value)
        else:
            self.bus.mmio_write(info.address + offset, size, value)

    def map_bar(self, index: int, offset: int = 0, length: int | None = None):
        """Map (``ioremap``) a RAM-backed BAR range; -> the bus's RamMapping."""
        info = self._bar(index)
        if length is None:
            length = info.size - offset
        return self.bus.map_ram(info.address + offset, length)

    # -- interrupts ---------------------------------------------------------------------
    def intx_eventfd(self) -> int:
        """The eventfd of this function's INTx line (as firmware routed it)."""
        if not self.interrupt_pin:
            raise DriverError(f"{self.bdf:04x} has no INTx pin")
        return self.bus.intx_eventfd(self.cfg_read(regs.INTERRUPT_LINE, 1))

    def msix_table_size(self) -> int:
        cap = self._find_msix()
        return (self.cfg_read(cap + regs.MSIX_FLAGS, 2) & regs.MSIX_FLAGS_QSIZE) + 1

    def _find_msix(self) -> int:
        if self._msix_cap is None:
            caps = self.find_capabilities(regs.CAP_ID_MSIX)
            if not caps:
                raise DriverError(f"{self.bdf:04x} has no MSI-X capability")
            self._msix_cap = caps[0]
        return self._msix_cap

    def _msix_region(self, reg: int, length: int) -> tuple[int, int]:
        value = self.cfg_read(self._find_msix() + reg, 4)
        bir, off = value & regs.MSIX_BIR_MASK, value & ~regs.MSIX_BIR_MASK
        info = self.bars.get(bir)
        if info is None or info.kind == "io" or off + length > info.size:
            raise DriverError(f"{self.bdf:04x}: MSI-X structure BAR{bir}+0x{off:x} "
                              f"does not fit a memory BAR")
        return bir, off

    def enable_msix(self, count: int | None = None,
                    vectors: VectorAllocator | None = None) -> list[MsixVector]:
        """Program ``count`` table entries (default: all) with fresh guest
        vectors and enable MSI-X; INTx is disabled, as Linux does."""
        alloc = vectors or vectors_for(self.bus)
        cap = self._find_msix()
        size = self.msix_table_size()
        count = size if count is None else count
        if not 1 <= count <= size:
            raise DriverError(f"{count} MSI-X vectors requested, table has {size}")
        bir, table = self._msix_region(regs.MSIX_TABLE, size * regs.MSIX_ENTRY_SIZE)
        self._msix_region(regs.MSIX_PBA, (size + 63) // 64 * 8)
        ctrl = cap + regs.MSIX_FLAGS
        # Enable with the function masked while the table is programmed.
        self.cfg_write(ctrl, 2, regs.MSIX_FLAGS_ENABLE | regs.MSIX_FLAGS_MASKALL)
        self.set_command(regs.COMMAND_MASTER | regs.COMMAND_INTX_DISABLE)
        out = []
        for entry in range(count):
            vector = alloc.alloc()
            base = table + entry * regs.MSIX_ENTRY_SIZE
            self.bar_write(bir, base + regs.MSIX_ENTRY_ADDR_LO, 4, MSI_ADDRESS)
            self.bar_write(bir, base + regs.MSIX_ENTRY_ADDR_HI, 4, 0)
            self.bar_write(bir, base + regs.MSIX_ENTRY_DATA, 4, vector)
            self.bar_write(bir, base + regs.MSIX_ENTRY_VECTOR_CTRL, 4, 0)
            out.append(MsixVector(entry, vector, self.bus.interrupt_eventfd(vector)))
        self.cfg_write(ctrl, 2, regs.MSIX_FLAGS_ENABLE)
        self.msix = out
        return out

    def mask_msix_entry(self, entry: int, masked: bool) -> None:
        bir, table = self._msix_region(regs.MSIX_TABLE, (entry + 1) * regs.MSIX_ENTRY_SIZE)
        self.bar_write(bir, table + entry * regs.MSIX_ENTRY_SIZE + regs.MSIX_ENTRY_VECTOR_CTRL,
                       4, int(masked))

    def set_msix_function_mask(self, masked: bool) -> None:
        ctrl = self._find_msix() + regs.MSIX_FLAGS
        value = self.cfg_read(ctrl, 2) & (regs.MSIX_FLAGS_ENABLE | regs.MSIX_FLAGS_MASKALL)
        self.cfg_write(ctrl, 2, value | regs.MSIX_FLAGS_MASKALL if masked
                       else value & ~regs.MSIX_FLAGS_MASKALL)

    def msix_pending(self, entry: int) -> bool:
        bir, pba = self._msix_region(regs.MSIX_PBA, (entry // 64 + 1) * 8)
        return bool(self.bar_read(bir, pba + entry // 64 * 8, 8) >> (entry % 64) & 1)

    def __repr__(self) -> str:
        return f"<PCIDevice {self.bdf >> 8:02x}:{(self.bdf >> 3) & 31:02x}.{self.bdf & 7}>"


# -- firmware -----------------------------------------------------------------------------
def enumerate_bus(bus: BusAPI, bus_number: int = 0) -> list[PCIDevice]:
    """Scan every device number; functions 1-7 only if function 0 says it
    is multi-function.  A vendor ID of 0xffff means nothing is there."""
    found = []
    for dev in range(32):
        for fn in range(8):
            bdf = (bus_number << 8) | (dev << 3) | fn
            vendor = bus.config_read(bdf, regs.VENDOR_ID, 2)
            if vendor in (0xFFFF, 0x0000):
                if fn == 0:
                    break
                continue
            found.append(PCIDevice(bus, bdf))
            if fn == 0 and not bus.config_read(bdf, regs.HEADER_TYPE, 1) \
                    & regs.HEADER_TYPE_MULTI_FUNCTION:
                break
    return found


def assign_resources(bus: BusAPI, devices: list[PCIDevice],
                     windows: ResourceWindows | None = None) -> list[BarInfo]:
    """Size and place every BAR, route INTx, enable decode and bus mastering.
    64-bit BARs go above 4 GiB; largest first so alignment wastes little.
    Returns the BARs that did not fit (left unassigned, as firmware would)."""
    w = windows or ResourceWindows()
    todo: list[tuple[PCIDevice, BarInfo]] = []
    for d in devices:
        d.size_bars()
        todo += [(d, b) for b in d.bars.values()]
    unplaced = []
    for d, b in sorted(todo, key=lambda t: -t[1].size):
        win = {"io": w.io, "mem32": w.mem32, "mem64": w.mem64}[b.kind]
        align = b.size if b.kind == "io" else max(b.size, 0x1000)
        addr = win.take(b.size, align)
        if addr is None:
            unplaced.append(b)
            continue
        d.program_bar(b.index, addr)
    for d in devices:
        line = bus.intx_route(d.bdf) if d.interrupt_pin else None
        if line is not None:
            d.cfg_write(regs.INTERRUPT_LINE, 1, line)
        enable = regs.COMMAND_MASTER
        for b in d.bars.values():
            if b.address is not None:
                enable |= regs.COMMAND_IO if b.kind == "io" else regs.COMMAND_MEMORY
        d.set_command(enable)
    return unplaced


def probe(bus: BusAPI) -> list[PCIDevice]:
    """Firmware in one call: enumerate bus 0 and assign its resources."""
    devices = enumerate_bus(bus)
    assign_resources(bus, devices)
    return devices


def wait_interrupts(fds: list[int], timeout: float | None) -> set[int]:
    """Wait until one of ``fds`` is signalled (or ``timeout`` seconds);
    returns the signalled ones, their counters consumed."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ready = poller.poll(None if timeout is None else int(timeout * 1000))
    fired = set()
    for fd, _ in ready:
        if eventfd.drain(fd):
            fired.add(fd)
    return fired
