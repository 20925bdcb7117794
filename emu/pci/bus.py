"""A PCI root bus: functions at device/function numbers, configuration
cycles by BDF (and the legacy 0xCF8/0xCFC mechanism on the port space),
MMIO and port I/O dispatch to programmed BARs, host mappings of RAM-backed
BARs, ioeventfds, and the interrupt controller.

This is the *whole* API a guest driver uses; it never sees device models.

Address decoding: a BAR takes part once the guest has programmed a valid
address and enabled the matching decode bit in its command register; the
address map is rebuilt whenever that changes.  Overlapping BARs are the
guest's mistake; the outcome is deterministic: the BAR of the lower
(BDF, BAR index) wins the overlap, as if it had the higher priority.  The
host bridge's 0xCF8 and 0xCFC..0xCFF ports win over any I/O BAR.  An access
must lie wholly inside one decoded piece; anything else is *unclaimed*:
reads return all ones, writes are dropped, both counted in
:attr:`PCIBus.unclaimed`.

Locking: one re-entrant lock (``lock``, the machine lock if one is passed
in) is held for every access and is shared with plugged functions, so
guest-thread accesses and device-side events from other threads are
serialised.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

from emu.errors import EmuBug
from emu.spec import pci as regs
from emu.pci.bar import Bar
from emu.pci.errors import BusError
from emu.pci.function import PCIFunction, all_ones
from emu.pci.irq import InterruptController

CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
CONFIG_ADDRESS_ENABLE = 0x80000000
INTX_GSI_BASE = 16          # PIRQ A..D -> GSI 16..19 (Q35-style routing)
MMIO_SIZES = (1, 2, 4, 8)
PIO_SIZES = (1, 2, 4)


def make_bdf(bus: int, device: int, function: int) -> int:
    return (bus << 8) | (device << 3) | function


def format_bdf(bdf: int) -> str:
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 31:02x}.{bdf & 7}"


@dataclass(frozen=True)
class _Piece:
    """A decoded range ``[start, end)`` that belongs to one BAR."""

    start: int
    end: int
    function: PCIFunction
    bar: Bar


@dataclass(frozen=True)
class RamMapping:
    """A host mapping of part of a RAM-backed BAR, for a driver's plain
    loads and stores (and for its C data path: ``host_addr``)."""

    guest_addr: int
    host_addr: int
    length: int
    view: memoryview
    readonly: bool
    backing: object = field(repr=False, default=None)   # keeps the memory alive


class _AddressMap:
    def __init__(self):
        self.pieces: list[_Piece] = []
        self.starts: list[int] = []

    def rebuild(self, windows: list[_Piece]) -> None:
        """``windows`` in priority order -> disjoint pieces sorted by start."""
        taken: list[_Piece] = []
        for w in windows:
            parts = [(w.start, w.end)]
            for t in taken:
                nxt = []
                for s, e in parts:
                    if e <= t.start or t.end <= s:
                        nxt.append((s, e))
                        continue
                    if s < t.start:
                        nxt.append((s, t.start))
                    if t.end < e:
                        nxt.append((t.end, e))
                parts = nxt
            taken += [_Piece(s, e, w.function, w.bar) for s, e in parts]
        self.pieces = sorted(taken, key=lambda p: p.start)
        self.starts = [p.start for p in self.pieces]

    def lookup(self, addr: int, size: int) -> _Piece | None:
        i = bisect_right(self.starts, addr) - 1
        if i >= 0:
            p = self.pieces[i]
            if addr + size <= p.end:
                return p
        return None


class PCIBus:
    def __init__(self, irq: InterruptController | None = None,
                 lock: threading.RLock | None = None, bus_number: int = 0):
        self._own_irq = irq is None
        self.irq = irq if irq is not None else InterruptController()
        self.lock = lock if lock is not None else threading.RLock()
        self.bus_number = bus_number
        self.functions: dict[int, PCIFunction] = {}
        self._mmio = _AddressMap()
        self._pio = _AddressMap()
        self._config_address = 0
        self.unclaimed: Counter[str] = Counter()

    # -- building ---------------------------------------------------------------
    def plug(self, function: PCIFunction, device: int, fn: int = 0) -> int:
        """Put ``function`` at ``device``.``fn``; returns its BDF."""
        if not (0 <= device < 32 and 0 <= fn < 8):
            raise EmuBug(f"bad device/function {device}.{fn}")
        bdf = make_bdf(self.bus_number, device, fn)
        with self.lock:
            if bdf in self.functions:
                raise EmuBug(f"{format_bdf(bdf)} is already taken")
            function.plug(self, bdf, self.lock, self._intx_sink(function, bdf),
                          self.irq.deliver_msi)
            function.add_mapping_listener(lambda f, b: self._rebuild())
            self.functions[bdf] = function
            same_slot = [f for b, f in self.functions.items() if b >> 3 == bdf >> 3]
            if len(same_slot) > 1:
                for f in same_slot:
                    f.set_multifunction()
            function.update_mappings()
            self._rebuild()
        return bdf

    def _intx_sink(self, function: PCIFunction, bdf: int):
        line = self.intx_route(bdf, function.config[regs.INTERRUPT_PIN])
        if line is None:
            return None
        return lambda level: self.irq.set_intx(line, function, level)

    def intx_route(self, bdf: int, pin: int | None = None) -> int | None:
        """The interrupt line (GSI) a function's INTx pin is wired to, by
        the usual swizzle (slot + pin - 1) mod 4; None if it has no pin.
        A firmware reads this (ACPI _PRT) and writes INTERRUPT_LINE."""
        if pin is None:
            f = self.functions.get(bdf)
            pin = f.config[regs.INTERRUPT_PIN] if f is not None else 0
        if not 1 <= pin <= regs.INTX_PINS:
            return None
        return INTX_GSI_BASE + ((bdf >> 3) % 32 + pin - 1) % regs.INTX_PINS

    def _rebuild(self) -> None:
        mem, io = [], []
        for bdf in sorted(self.functions):
            f = self.functions[bdf]
            for idx in sorted(f.bars):
                bar = f.bars[idx]
                if bar.address is not None:
                    piece = _Piece(bar.address, bar.address + bar.size, f, bar)
                    (io if bar.is_io else mem).append(piece)
        self._mmio.rebuild(mem)
        self._pio.rebuild(io)

    # -- configuration cycles -----------------------------------------------------
    def _function_at(self, bdf: int) -> PCIFunction | None:
        if not 0 <= bdf <= 0xFFFF or bdf >> 8 != self.bus_number:
            return None
        return self.functions.get(bdf)

    def config_read(self, bdf: int, offset: int, size: int) -> int:
        """A configuration read; an absent function answers all ones."""
        with self.lock:
            f = self._function_at(bdf)
            if f is None:
                self.unclaimed["config_read"] += 1
                return all_ones(size) if size in PIO_SIZES else 0xFFFFFFFF
            return f.config_read(offset, size)

    def config_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        with self.lock:
            f = self._function_at(bdf)
            if f is None:
                self.unclaimed["config_write"] += 1
                return
            f.config_write(offset, size, int(value))

    # -- MMIO and port I/O ----------------------------------------------------------
    def _access(self, amap: _AddressMap, what: str, addr: int, size: int,
                sizes: tuple[int, ...], limit: int) -> _Piece | None:
        """The piece claiming the access, or None (counted under ``what``
        or, for a malformed access, ``what``_bad)."""
        if size not in sizes or not 0 <= addr <= limit - size:
            self.unclaimed[f"{what}_bad"] += 1
            return None
        p = amap.lookup(addr, size)
        if p is None:
            self.unclaimed[what] += 1
        return p

    def mmio_read(self, addr: int, size: int) -> int:
        with self.lock:
            p = self._access(self._mmio, "mmio_read", addr, size, MMIO_SIZES, 1 << 64)
            if p is None:
                return all_ones(size) if size in MMIO_SIZES else all_ones(8)
            return p.function.bar_read(p.bar.index, addr - p.bar.address, size)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        with self.lock:
            p = self._access(self._mmio, "mmio_write", addr, size, MMIO_SIZES, 1 << 64)
            if p is None:
                return
            p.function.bar_write(p.bar.index, addr - p.bar.address, size, int(value))

    def pio_read(self, port: int, size: int) -> int:
        with self.lock:
            host = self._config_port_read(port, size)
            if host is not None:
                return host
            p = self._access(self._pio, "pio_read", port, size, PIO_SIZES, 1 << 16)
            if p is None:
                return all_ones(size) if size in PIO_SIZES else 0xFFFFFFFF
            return p.function.bar_read(p.bar.index, port - p.bar.address, size)

    def pio_write(self, port: int, size: int, value: int) -> None:
        with self.lock:
            if self._config_port_write(port, size, int(value)):
                return
            p = self._access(self._pio, "pio_write", port, size, PIO_SIZES, 1 << 16)
            if p is None:
                return
            p.function.bar_write(p.bar.index, port - p.bar.address, size, int(value))

    # legacy configuration mechanism #1: CONFIG_ADDRESS (dword only) + CONFIG_DATA
    def _config_port_read(self, port: int, size: int) -> int | None:
        if port == CONFIG_ADDRESS_PORT and size == 4:
            return self._config_address
        target = self._config_data_target(port, size)
        if target is None:
            return None
        if target is False:
            return all_ones(size)
        bdf, off = target
        return self.config_read(bdf, off, size)

    def _config_port_write(self, port: int, size: int, value: int) -> bool:
        if port == CONFIG_ADDRESS_PORT and size == 4:
            self._config_address = value & 0x80FFFFFC
            return True
        target = self._config_data_target(port, size)
        if target is None:
            return False
        if target is not False:
            bdf, off = target
            self.config_write(bdf, off, size, value)
        return True

    def _config_data_target(self, port: int, size: int):
        """None: not a CONFIG_DATA access; False: claimed but no cycle
        (mechanism disabled or the access crosses the dword); else (bdf, offset)."""
        if not CONFIG_DATA_PORT <= port < CONFIG_DATA_PORT + 4:
            return None
        lane = port - CONFIG_DATA_PORT
        if size not in PIO_SIZES or lane % size or not self._config_address & CONFIG_ADDRESS_ENABLE:
            self.unclaimed["config_data_ignored"] += 1
            return False
        bdf = (self._config_address >> 8) & 0xFFFF
        return bdf, (self._config_address & 0xFC) + lane

    # -- RAM-backed BARs, ioeventfds, interrupts ---------------------------------------
    def map_ram(self, addr: int, length: int) -> RamMapping:
        """A host mapping of ``[addr, addr+length)`` of one decoded RAM-backed
        BAR (the driver's ``ioremap``).  Raises BusError for anything else."""
        with self.lock:
            p = None
            if length > 0 and 0 <= addr <= (1 << 64) - length:
                p = self._mmio.lookup(addr, length)
            ram = p.bar.ram if p is not None else None
            off = addr - p.bar.address if p is not None else 0
            if ram is None or off + length > ram.length:
                self.unclaimed["map_ram"] += 1
                raise BusError(f"0x{addr:x}+0x{length:x} is not inside one decoded "
                               f"RAM-backed BAR")
            return RamMapping(addr, ram.host_addr + off, length, ram.view(off, length),
                              ram.readonly, ram)

    def ioeventfd_for(self, addr: int, size: int, data: int | None = None) -> int | None:
        """The eventfd a guest write of ``size`` bytes (value ``data``) at
        MMIO ``addr`` would signal, if a device bound one there: a driver's
        C data path may signal it directly (a doorbell without an exit)."""
        with self.lock:
            if size not in MMIO_SIZES or addr < 0:
                return None
            p = self._mmio.lookup(addr, size)
            if p is None:
                return None
            return p.function.ioeventfd_at(p.bar.index, addr - p.bar.address, size, data)

    def interrupt_eventfd(self, vector: int) -> int:
        """The eventfd MSI ``vector`` signals (the guest's IDT entry)."""
        return self.irq.eventfd(vector)

    def intx_eventfd(self, line: int) -> int:
        return self.irq.intx_eventfd(line)

    def close(self) -> None:
        if self._own_irq:
            self.irq.close()

    def stats(self) -> dict:
        with self.lock:
            return {"unclaimed": dict(self.unclaimed),
                    "functions": {format_bdf(b): f.errors.as_dict()
                                  for b, f in sorted(self.functions.items())},
                    "irq": self.irq.stats()}
