"""A guest memory's regions as the C engine sees them."""
from __future__ import annotations

from emu._ring import ffi, lib
from emu.errors import EmuBug


class RegionTable:
    """A memory's regions as the C engine sees them (sorted ``gpa, size,
    host``), plus the dirty log.

    Rebuild it with :meth:`update` only while no data path uses it (the
    C side reads it without locks)."""

    def __init__(self, mem=None, *, max_regions: int = 512):
        self._max = max_regions
        self._regions = ffi.new("struct emu_region[]", max_regions)
        self.ptr = ffi.new("struct emu_mem *")
        self.ptr.regions = self._regions
        self._keep = None
        self._log_keep = None
        if mem is not None:
            self.update(mem)

    def update(self, mem) -> None:
        """Load ``mem`` (a GuestMemory, or a list of (gpa, size, host))."""
        if mem is None:
            rows = []
        elif hasattr(mem, "regions"):
            rows = [(r.gpa, r.size, r.host_addr) for r in mem.regions if r.mapped]
        else:
            rows = list(mem)
        rows.sort()
        if len(rows) > self._max:
            raise EmuBug(f"{len(rows)} regions > table capacity {self._max}")
        for (g, s, _), (g2, _, _) in zip(rows, rows[1:]):
            if g + s > g2:
                raise EmuBug("overlapping regions reached the C table")
        for i, (g, s, h) in enumerate(rows):
            self._regions[i].gpa = g
            self._regions[i].size = s
            self._regions[i].host = ffi.cast("uint8_t *", h)
        self.ptr.nregions = len(rows)
        self._keep = mem

    def set_log(self, host_addr: int | None, size: int = 0) -> None:
        """Dirty log (VHOST_F_LOG_ALL): bitmap at ``host_addr`` of ``size`` bytes."""
        self.ptr.log = ffi.cast("uint8_t *", host_addr or 0)
        self.ptr.log_size = size if host_addr else 0

    def translate(self, gpa: int, length: int) -> int | None:
        p = lib.emu_mem_translate(self.ptr, gpa, length)
        return int(ffi.cast("uintptr_t", p)) or None

    def __len__(self) -> int:
        return int(self.ptr.nregions)
