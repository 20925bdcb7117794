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

Mapped regions are exposed as an ordinary :class:`emu.memory.GuestMemory`,
whose ``host_addr`` values point into the window.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import threading

from emu.errors import RegionTableError
from emu.memory import (GuestMemory, MAX_REGIONS_DEFAULT, PAGE_SIZE, Region,
                        validate_regions)

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


def _mmap(addr, length, prot, flags, fd=-1, offset=0) -> int:
    p = _libc.mmap(addr, length, prot, flags, fd, offset)
    if p is None or p == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return p


def _round_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


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
        self.revocations = 0
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

    # -- mapping ------------------------------------------------------------
    def map_table(self, specs, fds, max_regions: int = MAX_REGIONS_DEFAULT) -> GuestMemory:
        """Map a peer memory table into the window; takes ownership of fds.

        The previous table must have been unmapped or revoked first (the
        device does that after the driver's acknowledgement)."""
        try:
            specs = [tuple(int(v) for v in s) for s in specs]
            if len(fds) != len(specs):
                raise RegionTableError(f"{len(fds)} fds for {len(specs)} regions")
            validate_regions(specs, max_regions)
            order = sorted(range(len(specs)), key=lambda i: specs[i][0])
            specs_sorted = [specs[i] for i in order]
            fds_sorted = [fds[i] for i in order]
            offsets = self.layout(specs_sorted)
            with self._lock:
                if self._live:
                    raise RegionTableError("window still holds a previous table")
                regions, mapped = [], []
                try:
                    for (gpa, size, uaddr, off), fd, woff in zip(specs_sorted, fds_sorted, offsets):
                        st = os.fstat(fd)
                        if off + size > st.st_size:
                            raise RegionTableError(
                                f"region [0x{off:x}+0x{size:x}) lies past the end of its fd")
                        delta = off % PAGE_SIZE
                        length = _round_up(delta + size, PAGE_SIZE)
                        _mmap(self.base + woff - delta, length,
                              mmap.PROT_READ | mmap.PROT_WRITE,
                              mmap.MAP_SHARED | MAP_FIXED, fd, off - delta)
                        mapped.append((woff - delta, length))
                        buf = (ctypes.c_char * size).from_address(self.base + woff)
                        r = Region(gpa, size, uaddr, off, None, buf, 0, self.base + woff)
                        r.window_offset = woff
                        regions.append(r)
                except BaseException:
                    for o, ln in mapped:
                        self._reserve(o, ln)
                    raise
                self._live = mapped
            mem = GuestMemory(regions, backend="window")
            mem.close = lambda: None  # the window owns the mappings (see unmap)
            return mem
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _reserve(self, offset: int, length: int) -> None:
        _mmap(self.base + offset, length, PROT_NONE,
              mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE)

    def unmap(self) -> None:
        """Release the peer's pages: the driver has promised not to touch them."""
        with self._lock:
            for o, ln in self._live + self._revoked:
                self._reserve(o, ln)
            self._live, self._revoked = [], []

    def revoke(self) -> None:
        """Replace the peer's pages with zero pages (driver did not ack)."""
        with self._lock:
            for o, ln in self._live:
                _mmap(self.base + o, ln, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE)
            if self._live:
                self.revocations += 1
            self._revoked += [r for r in self._live if r not in self._revoked]
            self._live = []

    @property
    def mapped(self) -> bool:
        return bool(self._live)

    def accessible(self, offset: int, length: int) -> bool:
        """Whether ``[offset, offset+length)`` is backed (by the peer, or by
        zero pages after a revocation): a bus access there cannot fault."""
        if offset < 0 or length <= 0 or offset + length > self.size:
            return False
        with self._lock:
            return any(o <= offset and offset + length <= o + ln
                       for o, ln in self._live + self._revoked)

    def close(self) -> None:
        """Drop the whole reservation (device teardown, data path stopped)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                _libc.munmap(self.base, self.size)
                self._live, self._revoked = [], []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
