"""Address spaces: system memory and the x86 I/O port space, as every
initiator sees them -- a guest driver, an outside test program (qtest), a
device's DMA or MSI write.

An :class:`AddressSpace` holds *layers* in priority order.  Each layer is a
set of disjoint :class:`Region`\\ s owned by one component (guest RAM, the
platform's fixed devices, the PCI bus's decoded BARs); the owner replaces
its layer whole when its layout changes (the PCI bus does on every BAR or
command-register change).  An access goes to the first region, in layer
priority order, that contains it wholly and accepts it; anything else is
*unclaimed*: writes are dropped, reads return all ones -- or zero for a
space made with ``unassigned_ones=False`` -- both counted in
:attr:`AddressSpace.unclaimed` under ``NAME_read``/``NAME_write`` (and
``NAME_read_bad``... for a malformed access).  QEMU's PC answers unassigned
I/O ports with all ones (``unassigned_io_ops``) and unassigned memory with
zero (``unassigned_mem_ops``), to a guest and a qtest client alike.

A region's ``target`` does the access: ``read(offset, size) -> int`` and
``write(offset, size, value)``, with ``offset`` relative to the target's
own origin (``region.start - region.origin``), so a BAR split by an
overlapping one keeps its BAR-relative offsets.  A target may also offer
``accepts(offset, size)`` (decline an access so a lower layer may take it),
``ram`` (a :class:`~emu.pci.bar.RamBacking`, for host mappings and bulk
copies) and ``ioeventfd_at(offset, size, data)``.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from emu import trace
from emu.errors import EmuBug, PeerError

_unimp = trace.item("unimp")


def all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


class Target(Protocol):
    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class Region:
    """``[start, end)`` of a space served by ``target``; ``origin`` is the
    space address of the target's offset 0."""

    start: int
    end: int
    target: Target = field(compare=False)
    origin: int | None = None
    name: str = ""

    @property
    def base(self) -> int:
        return self.start if self.origin is None else self.origin

    def offset(self, addr: int) -> int:
        return addr - self.base


class _Layer:
    def __init__(self, name: str, priority: int):
        self.name = name
        self.priority = priority
        self.regions: list[Region] = []
        self.starts: list[int] = []

    def set(self, regions: Iterable[Region]) -> None:
        rs = sorted(regions, key=lambda r: r.start)
        for a, b in zip(rs, rs[1:]):
            if b.start < a.end:
                raise EmuBug(f"layer {self.name}: {a.name or a.start:} overlaps {b.name or b.start}")
        self.regions, self.starts = rs, [r.start for r in rs]

    def find(self, addr: int, size: int) -> Region | None:
        i = bisect_right(self.starts, addr) - 1
        if i >= 0:
            r = self.regions[i]
            if addr + size <= r.end:
                return r
        return None


class AddressSpace:
    """``size`` bytes of addresses; ``sizes`` are the access widths a single
    load or store may have (1/2/4/8 for memory, 1/2/4 for I/O ports)."""

    def __init__(self, name: str, size: int, sizes: tuple[int, ...],
                 lock: threading.RLock | None = None, *, unassigned_ones: bool = True):
        self.name = name
        self.size = size
        self.sizes = sizes
        self.unassigned_ones = unassigned_ones
        self.lock = lock if lock is not None else threading.RLock()
        self._layers: list[_Layer] = []
        self.unclaimed: Counter[str] = Counter()

    # -- layout -----------------------------------------------------------------
    def set_layer(self, name: str, regions: Iterable[Region], priority: int = 0) -> None:
        """Replace layer ``name`` (created on first use) with ``regions``.
        Higher ``priority`` wins where layers overlap."""
        with self.lock:
            layer = next((la for la in self._layers if la.name == name), None)
            if layer is None:
                layer = _Layer(name, priority)
                self._layers.append(layer)
                self._layers.sort(key=lambda la: -la.priority)
            elif layer.priority != priority:
                raise EmuBug(f"{self.name}: layer {name} changed priority")
            layer.set(regions)

    def regions(self) -> list[tuple[str, Region]]:
        """Every region with its layer, highest priority first (info mtree)."""
        with self.lock:
            return [(la.name, r) for la in self._layers for r in la.regions]

    def layers(self) -> list[tuple[str, int, list[Region]]]:
        """``(name, priority, regions)`` of every layer, highest priority first."""
        with self.lock:
            return [(la.name, la.priority, list(la.regions)) for la in self._layers]

    # -- dispatch -----------------------------------------------------------------
    def lookup(self, addr: int, size: int) -> Region | None:
        """The region that takes ``[addr, addr+size)``, or None."""
        if not 0 <= addr <= self.size - max(size, 1):
            return None
        for layer in self._layers:
            r = layer.find(addr, size)
            if r is not None:
                accepts = getattr(r.target, "accepts", None)
                if accepts is None or accepts(r.offset(addr), size):
                    return r
        return None

    def _claim(self, what: str, addr: int, size: int) -> Region | None:
        if size not in self.sizes or not 0 <= addr <= self.size - size:
            self.unclaimed[f"{self.name}_{what}_bad"] += 1
            if _unimp.on:
                _unimp.log(f"{self.name}: invalid {what} (size {size}, addr 0x{addr:x})")
            return None
        r = self.lookup(addr, size)
        if r is None:
            self.unclaimed[f"{self.name}_{what}"] += 1
            if _unimp.on:   # -d unimp: nothing implements this address
                _unimp.log(f"{self.name}: unassigned {what} (size {size}, addr 0x{addr:x})")
        return r

    def read(self, addr: int, size: int) -> int:
        """One load of ``size`` bytes (little-endian value)."""
        with self.lock:
            r = self._claim("read", addr, size)
            if r is None:
                if not self.unassigned_ones:
                    return 0
                return all_ones(size if size in self.sizes else max(self.sizes))
            return r.target.read(r.offset(addr), size) & all_ones(size)

    def write(self, addr: int, size: int, value: int) -> bool:
        """One store; False if nothing took it."""
        with self.lock:
            r = self._claim("write", addr, size)
            if r is None:
                return False
            r.target.write(r.offset(addr), size, int(value) & all_ones(size))
            return True

    # -- bulk (qtest read/write/memset, DMA) ------------------------------------------
    def _pieces(self, addr: int, length: int):
        """Split ``[addr, addr+length)`` into accesses: whole RAM runs, and
        naturally aligned loads/stores of at most the widest size elsewhere."""
        end = addr + length
        widest = max(self.sizes)
        while addr < end:
            r = self.lookup(addr, 1)
            ram = getattr(r.target, "ram", None) if r is not None else None
            if ram is not None:
                n = min(end, r.end) - addr
                yield r, addr, n, True
            else:
                n = widest
                while n > 1 and (addr % n or addr + n > end or
                                 (r is not None and addr + n > r.end)):
                    n //= 2
                yield r, addr, n, False
            addr += n

    def read_bytes(self, addr: int, length: int) -> bytes:
        if length < 0 or not 0 <= addr <= self.size - length:
            raise ValueError(f"{self.name}: range 0x{addr:x}+0x{length:x} is outside the space")
        out = bytearray()
        with self.lock:
            for r, a, n, is_ram in self._pieces(addr, length):
                if is_ram:
                    out += self._ram_run(r, a, n) or b"\xff" * n
                else:
                    out += self.read(a, n).to_bytes(n, "little")
        return bytes(out)

    def write_bytes(self, addr: int, data: bytes) -> None:
        if not 0 <= addr <= self.size - len(data):
            raise ValueError(f"{self.name}: range 0x{addr:x}+0x{len(data):x} is outside the space")
        with self.lock:
            pos = 0
            for r, a, n, is_ram in self._pieces(addr, len(data)):
                chunk = data[pos:pos + n]
                pos += n
                if is_ram:
                    view = self._ram_run(r, a, n, write=True)
                    if view is not None:
                        view[:] = chunk
                else:
                    self.write(a, n, int.from_bytes(chunk, "little"))

    def _ram_run(self, r: Region, addr: int, n: int, write: bool = False):
        """A view of a RAM run, or None (counted) where the backing has a
        hole there (the vhost-pci window between peer regions) or is
        read-only: a bulk access must never fault emu."""
        ram = r.target.ram
        try:
            ram.check(r.offset(addr), n)
        except PeerError:
            self.unclaimed[f"{self.name}_ram_unbacked"] += 1
            return None
        if write and ram.readonly:
            self.unclaimed[f"{self.name}_write_readonly"] += 1
            return None
        return ram.view(r.offset(addr), n)

    def stats(self) -> dict:
        with self.lock:
            return dict(self.unclaimed)
