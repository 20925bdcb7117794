"""The vhost-pci peer-memory window: one fixed virtual-address reservation
into which a peer's memory regions are mapped, re-mapped and revoked.

Why a reservation: a PCI BAR has a fixed size and the driver maps it once,
so the peer's regions must appear at stable offsets of one contiguous range
(the driver's C loop keeps host pointers into it).  Why never ``munmap``
while the device lives: a data-path thread may still hold a pointer; the
range is instead *replaced* with ``MAP_FIXED``:

* ``unmap``  -> ``PROT_NONE`` reservation again (the peer's pages are
  released; a driver that broke its promise faults, which is its bug);
* ``revoke`` -> private zero pages (for a driver that did not acknowledge in
  time: a late access reads zeros, writes go nowhere, nothing crashes and
  the peer's memory is no longer reachable).

A new table comes in two steps, so that a refused one changes nothing:
:meth:`PeerWindow.prepare` makes every check that needs no mapping (region
count and overlap, the layout against the window, the fds: kind, size,
access mode, seals) and :meth:`PeerWindow.install` maps it.  The window is
one table wide, so the device takes the old table away in between (unmap or
revoke, after its driver's acknowledgement); the window keeps the old
table's fds until a new one is in, and when the kernel refuses part of the
new table at mmap time it maps the old one again where it was: the host
addresses the peer's rings were translated to stay valid.

Mapped regions are exposed as a :class:`WindowMemory` of
:class:`WindowRegion`\\ s, whose ``host_addr`` values point into the window.
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os
import threading
from dataclasses import dataclass

from emu.errors import RegionTableError
from emu.memory import (GuestMemory, MAX_REGIONS_DEFAULT, PAGE_SIZE, Region, check_mappable,
                        validate_regions)

log = logging.getLogger(__name__)

# the process's own symbols (libc among them): ctypes.util.find_library would
# run ldconfig in a subprocess while the VM starts
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value
MAP_FIXED = 0x10
MAP_NORESERVE = 0x4000
SLOT_ALIGN = 2 << 20  # 2 MiB: keeps huge-page-backed regions huge
PROT_NONE = 0
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE


def _mmap(addr, length, prot, flags, fd=-1, offset=0) -> int:
    p = _libc.mmap(addr, length, prot, flags, fd, offset)
    if p is None or p == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return p


def _round_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@dataclass(eq=False)
class WindowRegion(Region):
    """A peer region mapped in the window, ``window_offset`` bytes from its
    start (the offset the metadata page publishes)."""

    window_offset: int = 0


class WindowMemory(GuestMemory):
    """A table mapped in a :class:`PeerWindow`.  The window owns the
    mappings (they go with ``unmap``/``revoke``): closing this unmaps nothing."""

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class _Slot:
    """One region of a table and where it lands in the window."""
    gpa: int
    size: int
    uaddr: int
    mmap_offset: int
    fd: int
    window_offset: int

    @property
    def delta(self) -> int:            # a region may start inside a page
        return self.mmap_offset % PAGE_SIZE

    @property
    def start(self) -> int:            # window offset of the first mapped page
        return self.window_offset - self.delta

    @property
    def length(self) -> int:
        return _round_up(self.delta + self.size, PAGE_SIZE)

    @property
    def range(self) -> tuple[int, int]:
        return self.start, self.length


class TablePlan:
    """A checked table, not mapped yet (:meth:`PeerWindow.prepare`).  It
    owns its fds until :meth:`PeerWindow.install` takes them or
    :meth:`close` closes them."""

    def __init__(self, slots: list[_Slot]):
        self.slots = slots

    @property
    def size(self) -> int:
        return sum(s.size for s in self.slots)

    def close(self) -> None:
        slots, self.slots = self.slots, []
        _close_all(s.fd for s in slots)


class PeerWindow:
    """A ``size``-byte reservation; regions live at offsets inside it."""

    def __init__(self, size: int):
        if size <= 0 or size & (size - 1) or size % PAGE_SIZE:
            raise ValueError(f"window size {size} is not a power of two >= page size")
        self.size = size
        self.base = _mmap(None, size, PROT_NONE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        self._lock = threading.Lock()
        self._live: list[tuple[int, int]] = []     # (offset, length) mapped to a peer
        self._revoked: list[tuple[int, int]] = []  # (offset, length) zero-filled
        self._table: list[_Slot] = []              # the last table installed: its fds are ours
        self.revocations = 0
        self.rollbacks = 0                         # installs refused by mmap, old table re-mapped
        self.closed = False

    # -- layout -------------------------------------------------------------
    def layout(self, specs) -> list[int]:
        """Window offset of each region's first byte (gpa order, 2 MiB slots)."""
        offsets, cursor = [], 0
        for gpa, size, uaddr, off in sorted(specs, key=lambda s: s[0]):
            delta = off % PAGE_SIZE          # region may start inside a page
            start = _round_up(cursor, SLOT_ALIGN)
            offsets.append(start + delta)
            cursor = start + delta + size
        if cursor > self.size:
            raise RegionTableError(
                f"peer memory needs 0x{cursor:x} bytes of window, it has 0x{self.size:x}")
        return offsets

    # -- a new table ----------------------------------------------------------
    def prepare(self, specs, fds, *, max_regions: int = MAX_REGIONS_DEFAULT,
                max_total: int | None = None) -> TablePlan:
        """Check a peer memory table without touching the window; takes
        ownership of ``fds`` (closed if the table is refused)."""
        fds = list(fds)
        try:
            specs = [tuple(int(v) for v in s) for s in specs]
            if len(fds) != len(specs):
                raise RegionTableError(f"{len(fds)} fds for {len(specs)} regions")
            validate_regions(specs, max_regions)
            total = sum(s[1] for s in specs)
            if max_total is not None and total > max_total:
                raise RegionTableError(
                    f"memory table of 0x{total:x} bytes exceeds max-mem 0x{max_total:x}")
            order = sorted(range(len(specs)), key=lambda i: specs[i][0])
            offsets = self.layout([specs[i] for i in order])
            slots = [_Slot(*specs[i], fds[i], woff) for i, woff in zip(order, offsets)]
            for s in slots:     # the checks of every mapper of peer memory
                check_mappable(s.fd, s.mmap_offset, s.size,
                               what=f"memory fd of region gpa=0x{s.gpa:x}")
        except BaseException:
            _close_all(fds)
            raise
        return TablePlan(slots)

    def install(self, plan: TablePlan) -> WindowMemory:
        """Map a prepared table.  The previous one must have been unmapped or
        revoked (the device does that after its driver's acknowledgement).
        If mmap refuses a region, the previous table is mapped again where it
        was and RegionTableError is raised: the caller keeps it."""
        with self._lock:
            if self._live:
                plan.close()
                raise RegionTableError("window still holds a previous table")
            done: list[_Slot] = []
            try:
                for s in plan.slots:
                    self._map(s)
                    done.append(s)
            except OSError as e:
                failed = plan.slots[len(done)]
                # the refused MAP_FIXED may already have unmapped its range
                # (mmap(2): "the existing mapping may have been removed"):
                # put that range back too, before anything else can land there
                for s in done + [failed]:
                    self._undo(*s.range)
                plan.close()
                back = self._restore()
                raise RegionTableError(
                    f"mmap of region gpa 0x{failed.gpa:x}+0x{failed.size:x} failed: {e.strerror}; "
                    + ("the previous table is mapped again" if back else
                       "no previous table to go back to")) from None
            old, self._table, plan.slots = self._table, plan.slots, []
            _close_all(s.fd for s in old)
            self._live = [s.range for s in self._table]
            regions = [self._region(s) for s in self._table]
        return WindowMemory(regions, backend="window")

    def map_table(self, specs, fds, max_regions: int = MAX_REGIONS_DEFAULT) -> WindowMemory:
        """:meth:`prepare` and :meth:`install` in one; takes ownership of fds."""
        return self.install(self.prepare(specs, fds, max_regions=max_regions))

    def _map(self, s: _Slot) -> None:
        # A MAP_FIXED mmap that fails may already have unmapped the range it
        # was to replace (mmap(2)), leaving a hole in the window that any
        # thread's next allocation can land in -- and the roll-back's
        # MAP_FIXED would then map over that allocation.  So the mapping is
        # first tried where the kernel likes (a hugetlbfs offset that is not
        # huge-page aligned, a file that refuses mmap fail here, harmlessly),
        # and only then placed: the same mapping again, at the window.
        off = s.mmap_offset - s.delta
        trial = _mmap(None, s.length, PROT_RW, mmap.MAP_SHARED, s.fd, off)
        _libc.munmap(trial, s.length)
        _mmap(self.base + s.start, s.length, PROT_RW, mmap.MAP_SHARED | MAP_FIXED, s.fd, off)

    def _region(self, s: _Slot) -> WindowRegion:
        host = self.base + s.window_offset
        buf = (ctypes.c_char * s.size).from_address(host)
        return WindowRegion(s.gpa, s.size, s.uaddr, s.mmap_offset, None, buf, 0, host,
                            window_offset=s.window_offset)

    def _restore(self) -> bool:
        """Map the last installed table again at its offsets (lock held).
        If the kernel refuses even that, its range gets zero pages (the host
        addresses into it stay harmless) and the table is forgotten."""
        if not self._table:
            return False
        try:
            for s in self._table:
                self._map(s)
        except OSError as e:
            log.error("peer window: the previous table cannot be mapped again (%s): "
                      "its range is revoked", e.strerror)
            for s in self._table:
                self._zero(*s.range)
            self._revoked += [s.range for s in self._table if s.range not in self._revoked]
            self._forget()
            return False
        self._live = [s.range for s in self._table]
        self.rollbacks += 1
        return True

    # -- taking a table away ----------------------------------------------------
    def _reserve(self, offset: int, length: int) -> None:
        _mmap(self.base + offset, length, PROT_NONE,
              mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE)

    def _undo(self, offset: int, length: int) -> None:
        """Take a half-installed region back to what the range was before,
        on a path that is already failing: zero pages where it was revoked
        -- a driver that never acknowledged may still be reading there, and
        must not fault --, the reservation elsewhere."""
        end, cursor = offset + length, offset
        for o, ln in sorted(self._revoked):
            lo, hi = max(o, offset), min(o + ln, end)
            if lo >= hi:
                continue
            if cursor < lo:
                self._blank(cursor, lo - cursor)
            self._blank(lo, hi - lo, zero=True)
            cursor = hi
        if cursor < end:
            self._blank(cursor, end - cursor)

    def _blank(self, offset: int, length: int, zero: bool = False) -> None:
        try:
            (self._zero if zero else self._reserve)(offset, length)
        except OSError as e:
            log.error("peer window: cannot %s [0x%x+0x%x) again: %s",
                      "zero" if zero else "reserve", offset, length, e.strerror)

    def _zero(self, offset: int, length: int) -> None:
        _mmap(self.base + offset, length, PROT_RW,
              mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE)

    def unmap(self) -> None:
        """Release the peer's pages: the driver has promised not to touch
        them.  The table's fds stay until :meth:`forget` or the next install."""
        with self._lock:
            for o, ln in self._live + self._revoked:
                self._reserve(o, ln)
            self._live, self._revoked = [], []

    def revoke(self) -> None:
        """Replace the peer's pages with zero pages (driver did not ack)."""
        with self._lock:
            for o, ln in self._live:
                self._zero(o, ln)
            if self._live:
                self.revocations += 1
            self._revoked += [r for r in self._live if r not in self._revoked]
            self._live = []

    def forget(self) -> None:
        """The table taken away will not come back: close its fds."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        old, self._table = self._table, []
        _close_all(s.fd for s in old)

    # -- queries --------------------------------------------------------------
    @property
    def mapped(self) -> bool:
        return bool(self._live)

    def accessible(self, offset: int, length: int) -> bool:
        """Whether ``[offset, offset+length)`` is backed (by the peer, or by
        zero pages after a revocation): a bus access there cannot fault."""
        with self._lock:
            return self._inside(offset, length, self._live + self._revoked)

    def holds(self, offset: int, length: int) -> bool:
        """Whether ``[offset, offset+length)`` is the peer's memory now."""
        with self._lock:
            return self._inside(offset, length, self._live)

    def _inside(self, offset: int, length: int, ranges) -> bool:
        if offset < 0 or length <= 0 or offset + length > self.size:
            return False
        return any(o <= offset and offset + length <= o + ln for o, ln in ranges)

    def close(self) -> None:
        """Drop the whole reservation (device teardown, data path stopped)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                _libc.munmap(self.base, self.size)
                self._live, self._revoked = [], []
                self._forget()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
