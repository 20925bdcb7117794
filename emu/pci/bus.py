"""A PCI root bus: functions at device/function numbers, configuration
cycles by BDF, the decode of programmed BARs into the platform's address
spaces (system memory and I/O ports: :mod:`emu.address_space`), bus
mastering (MSI writes go out as memory writes), ioeventfds and INTx
routing.

Address decoding: a BAR takes part once the guest has programmed a valid
address and enabled the matching decode bit in its command register; the
bus's layer of each address space is rebuilt whenever that changes.
Overlapping BARs are the guest's mistake; the outcome is deterministic:
the BAR of the lower (BDF, BAR index) wins the overlap, as if it had the
higher priority.  What the host bridge decodes itself (CF8/CFC), RAM and
the APIC window live in other layers, above this one.

Locking: one re-entrant lock (``lock``, the machine lock if one is passed
in) is held for every access and is shared with plugged functions and the
address spaces, so guest-thread accesses and device-side events from other
threads are serialised.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from emu import trace
from emu.errors import EmuBug
from emu.address_space import AddressSpace, Region
from emu.spec import pci as regs
from emu.pci.bar import Bar
from emu.pci.errors import BusError
from emu.pci.function import PCIFunction, all_ones
from emu.pci.irq import InterruptController

_cfg_read, _cfg_write = trace.event("pci_cfg_read"), trace.event("pci_cfg_write")
_bar_read, _bar_write = trace.event("pci_bar_read"), trace.event("pci_bar_write")

INTX_GSI_BASE = 16          # PIRQ A..D -> GSI 16..19 (the default router)
PCI_LAYER = "pci"
CONFIG_SIZES = (1, 2, 4)


class IntxRouter(Protocol):
    """Where the bus's INTx pins go: the chipset's interrupt router (PIIX3,
    ICH9 LPC) or :class:`SwizzleRouter`.  A pin reaches one router input
    (a PIRQ); the router ORs the functions driving each input and drives
    the interrupt controller's lines as its routing registers say."""

    def map_irq(self, bdf: int, pin: int) -> int:
        """The router input INTx ``pin`` (1..4 = INTA..INTD) of ``bdf`` reaches."""

    def set_irq(self, pirq: int, source: object, level: bool) -> None:
        """``source`` (a function) drives input ``pirq`` to ``level``."""

    def route(self, pirq: int) -> int | None:
        """The interrupt line (GSI) input ``pirq`` reaches now, None if it
        is not routed (what firmware reads from ACPI _PRT and writes to
        INTERRUPT_LINE)."""


class SwizzleRouter:
    """A bus without a chipset router: the usual swizzle (slot + pin - 1)
    mod 4 onto four fixed lines from GSI 16."""

    def __init__(self, irq: InterruptController):
        self.irq = irq

    def map_irq(self, bdf: int, pin: int) -> int:
        return ((bdf >> 3) % 32 + pin - 1) % regs.INTX_PINS

    def set_irq(self, pirq: int, source: object, level: bool) -> None:
        self.irq.set_intx(INTX_GSI_BASE + pirq, source, level)

    def route(self, pirq: int) -> int | None:
        return INTX_GSI_BASE + pirq


def make_bdf(bus: int, device: int, function: int) -> int:
    return (bus << 8) | (device << 3) | function


def format_bdf(bdf: int) -> str:
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 31:02x}.{bdf & 7}"


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


class _BarTarget:
    """One BAR as an address-space target (offsets relative to the BAR)."""

    def __init__(self, function: PCIFunction, bar: Bar):
        self.function, self.bar = function, bar

    @property
    def ram(self):
        return self.bar.ram

    def read(self, offset: int, size: int) -> int:
        value = self.function.bar_read(self.bar.index, offset, size)
        if _bar_read.on:
            bdf = self.function.bdf or 0
            _bar_read(self.function.name, bdf >> 8, (bdf >> 3) & 31, bdf & 7, self.bar.index,
                      offset, size, value)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if _bar_write.on:
            bdf = self.function.bdf or 0
            _bar_write(self.function.name, bdf >> 8, (bdf >> 3) & 31, bdf & 7, self.bar.index,
                       offset, size, value)
        self.function.bar_write(self.bar.index, offset, size, value)

    def ioeventfd_at(self, offset: int, size: int, data: int | None) -> int | None:
        return self.function.ioeventfd_at(self.bar.index, offset, size, data)


def _disjoint(windows: list[Region]) -> list[Region]:
    """``windows`` in priority order -> disjoint pieces (a BAR partly hidden
    by a higher-priority one keeps the parts that show, BAR-relative)."""
    taken: list[Region] = []
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
        taken += [Region(s, e, w.target, origin=w.start, name=w.name) for s, e in parts]
    return taken


class PCIBus:
    """``memory`` and ``io``: the address spaces the bus decodes BARs into
    (and sends bus-master writes to); ``irq``: where INTx lines go."""

    def __init__(self, memory: AddressSpace, io: AddressSpace, irq: InterruptController,
                 lock: threading.RLock | None = None, bus_number: int = 0,
                 priority: int = 0):
        self.memory, self.io, self.irq = memory, io, irq
        self.lock = lock if lock is not None else threading.RLock()
        self.bus_number = bus_number
        self.priority = priority
        self.functions: dict[int, PCIFunction] = {}
        self.unclaimed: Counter[str] = Counter()
        self.router: IntxRouter = SwizzleRouter(irq)
        self._rebuild()

    def set_router(self, router: IntxRouter) -> None:
        """Wire the INTx pins to the chipset's router (before any pin is asserted)."""
        with self.lock:
            self.router = router

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
                          self.master_write)
            function.add_mapping_listener(self._on_mapping)
            self.functions[bdf] = function
            same_slot = [f for b, f in self.functions.items() if b >> 3 == bdf >> 3]
            if len(same_slot) > 1:
                for f in same_slot:
                    f.set_multifunction()
            function.update_mappings()
            self._rebuild()
        return bdf

    def unplug(self, bdf: int) -> PCIFunction:
        """Take the function at ``bdf`` off the bus (a hot unplug): its INTx
        deasserts, its BARs leave the address spaces, configuration cycles
        to it answer all ones from now on."""
        with self.lock:
            function = self.functions.pop(bdf, None)
            if function is None:
                raise EmuBug(f"{format_bdf(bdf)} is empty")
            pin = function.config[regs.INTERRUPT_PIN]
            if 1 <= pin <= regs.INTX_PINS:
                self.router.set_irq(self.router.map_irq(bdf, pin), function, False)
            function.unplug()
            self._rebuild()
            return function

    def _on_mapping(self, function: PCIFunction, bar: Bar) -> None:
        if self.functions.get(function.bdf) is function:
            self._rebuild()

    def _intx_sink(self, function: PCIFunction, bdf: int):
        pin = function.config[regs.INTERRUPT_PIN]
        if not 1 <= pin <= regs.INTX_PINS:
            return None

        def sink(level: bool) -> None:
            # routed at each change: the chipset's routing is the router's state
            self.router.set_irq(self.router.map_irq(bdf, pin), function, level)
        return sink

    def intx_route(self, bdf: int, pin: int | None = None) -> int | None:
        """The interrupt line (GSI) a function's INTx pin reaches through
        the router now; None if it has no pin or the router does not route
        it.  A firmware reads this (ACPI _PRT) and writes INTERRUPT_LINE."""
        if pin is None:
            f = self.functions.get(bdf)
            pin = f.config[regs.INTERRUPT_PIN] if f is not None else 0
        if not 1 <= pin <= regs.INTX_PINS:
            return None
        return self.router.route(self.router.map_irq(bdf, pin))

    def _rebuild(self) -> None:
        mem, io = [], []
        for bdf in sorted(self.functions):
            f = self.functions[bdf]
            for idx in sorted(f.bars):
                bar = f.bars[idx]
                if bar.address is not None:
                    r = Region(bar.address, bar.address + bar.size, _BarTarget(f, bar),
                               name=f"{format_bdf(bdf)} BAR{idx}")
                    (io if bar.is_io else mem).append(r)
        self.memory.set_layer(PCI_LAYER, _disjoint(mem), self.priority)
        self.io.set_layer(PCI_LAYER, _disjoint(io), self.priority)

    # -- bus mastering ------------------------------------------------------------------
    def master_write(self, address: int, data: int) -> bool:
        """A function's 32-bit memory write (an MSI message): it goes to the
        memory space like any DMA -- the APIC window turns it into an
        interrupt, RAM stores it.  Nothing there: counted by the interrupt
        controller as an invalid message (a master abort on real hardware)."""
        if self.memory.write(address, 4, data):
            return True
        self.irq.refuse(address, data)
        return False

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
                return all_ones(size) if size in CONFIG_SIZES else 0xFFFFFFFF
            value = f.config_read(offset, size)
            if _cfg_read.on:
                _cfg_read(f.name, bdf >> 8, (bdf >> 3) & 31, bdf & 7, offset, value)
            return value

    def config_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        with self.lock:
            f = self._function_at(bdf)
            if f is None:
                self.unclaimed["config_write"] += 1
                return
            if _cfg_write.on:
                _cfg_write(f.name, bdf >> 8, (bdf >> 3) & 31, bdf & 7, offset, int(value))
            f.config_write(offset, size, int(value))

    # -- RAM-backed BARs, ioeventfds --------------------------------------------------
    def map_ram(self, addr: int, length: int) -> RamMapping:
        """A host mapping of ``[addr, addr+length)`` of one decoded RAM-backed
        BAR (the driver's ``ioremap``).  Raises BusError for anything else."""
        with self.lock:
            r = self.memory.lookup(addr, length) if length > 0 else None
            target = r.target if r is not None else None
            ram = target.ram if isinstance(target, _BarTarget) else None
            off = r.offset(addr) if r is not None else 0
            if ram is None or off + length > ram.length:
                self.unclaimed["map_ram"] += 1
                raise BusError(f"0x{addr:x}+0x{length:x} is not inside one decoded "
                               f"RAM-backed BAR")
            return RamMapping(addr, ram.host_addr + off, length, ram.view(off, length),
                              ram.readonly, ram)

    def ioeventfd_for(self, addr: int, size: int, data: int | None = None, *,
                      io: bool = False) -> int | None:
        """The eventfd a guest write of ``size`` bytes (value ``data``) at
        MMIO ``addr`` (``io``: I/O port ``addr``) would signal, if a device
        bound one there: a driver's C data path may signal it directly (a
        doorbell without an exit)."""
        space = self.io if io else self.memory
        with self.lock:
            if size not in space.sizes or addr < 0:
                return None
            r = space.lookup(addr, size)
            if r is None or not isinstance(r.target, _BarTarget):
                return None
            return r.target.ioeventfd_at(r.offset(addr), size, data)

    def stats(self) -> dict:
        with self.lock:
            return {"unclaimed": dict(self.unclaimed),
                    "functions": {format_bdf(b): f.errors.as_dict()
                                  for b, f in sorted(self.functions.items())},
                    "irq": self.irq.stats()}
