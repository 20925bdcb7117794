"""Guest memory: regions, backends, bounds-checked translation.

A *region* is one contiguous piece of guest RAM: guest-physical address
(``gpa``), ``size``, the address the owning process (the vhost-user
front-end) uses for it (``uaddr``), and where it lives in a file descriptor
(``mmap_offset``).  A :class:`GuestMemory` is a sorted, non-overlapping table
of regions, each mapped ``MAP_SHARED`` in this process.

Two ways to get one:

* :func:`allocate` creates RAM for a VM we run (backends ``shm`` via
  posix_ipc -- the default --, ``memfd`` and ``file`` for hugetlbfs or
  tmpfs paths).  Its fd stays open so it can be sent to a peer.
* :func:`map_regions` maps regions whose fds came from a peer
  (``SET_MEM_TABLE``/``ADD_MEM_REG``); every check a hostile peer could abuse
  is made before ``mmap``.

Translation (:meth:`GuestMemory.translate_gpa` / ``translate_uaddr``) accepts
a range only when it lies wholly inside one region; arithmetic is on Python
ints so nothing wraps.  The C data path gets the same table as
``(gpa, size, uaddr, host_addr)`` tuples via :meth:`GuestMemory.table`.
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import stat
from bisect import bisect_right
from dataclasses import dataclass, field


from emu.errors import GuestMemoryError, RegionTableError

U64_MAX = (1 << 64) - 1
PAGE_SIZE = mmap.PAGESIZE
MAX_REGIONS_DEFAULT = 509  # QEMU's vhost-user memslot ceiling; callers lower it


def _host_addr(mm: mmap.mmap) -> int:
    """Virtual address of an mmap in this process (export released at once)."""
    buf = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(buf)
    finally:
        del buf


@dataclass(eq=False)
class Region:
    """One mapped region.  ``host_addr`` is the host address of ``gpa``."""

    gpa: int
    size: int
    uaddr: int
    mmap_offset: int
    fd: int | None = None          # kept only for RAM we own (to send it)
    _mm: mmap.mmap | None = field(default=None, repr=False)
    _delta: int = 0                # offset of ``gpa`` inside ``_mm``
    host_addr: int = 0
    # False for the further windows of one backing (RAM split around the
    # PCI hole): they share the first region's mapping and fd, which only
    # the owner unmaps and closes
    owner: bool = field(default=True, repr=False)

    @property
    def gpa_end(self) -> int:
        return self.gpa + self.size

    @property
    def mapped(self) -> bool:
        return self._mm is not None

    def buffer(self) -> memoryview:
        """A memoryview of the whole region (holds an export until released)."""
        if self._mm is None:
            raise GuestMemoryError(f"region gpa=0x{self.gpa:x} is unmapped")
        return memoryview(self._mm)[self._delta:self._delta + self.size]

    def _close(self) -> None:
        mm, self._mm = self._mm, None
        self.host_addr = 0
        if not self.owner:             # the owner region unmaps and closes
            self.fd = None
            return
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # numpy/memoryview views are still alive: dropping our
                # reference lets the last view unmap it; nothing leaks.
                pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class GuestMemory:
    """A table of mapped regions with bounds-checked translation."""

    def __init__(self, regions: list[Region], backend: str = "peer", name: str = ""):
        self.regions = sorted(regions, key=lambda r: r.gpa)
        self._gpa_starts = [r.gpa for r in self.regions]
        self._by_uaddr = sorted(self.regions, key=lambda r: r.uaddr)
        self._uaddr_starts = [r.uaddr for r in self._by_uaddr]
        self.backend = backend
        self.name = name
        self.closed = False

    # -- translation -------------------------------------------------------
    @staticmethod
    def _lookup(starts, regions, addr, length, base_of, what):
        if length < 0 or addr < 0 or addr > U64_MAX:
            raise GuestMemoryError(f"bad {what} range 0x{addr:x}+{length}")
        i = bisect_right(starts, addr) - 1
        if i >= 0:
            r = regions[i]
            off = addr - base_of(r)
            if off + max(length, 1) <= r.size and r.mapped:
                return r, off
        raise GuestMemoryError(
            f"{what} range 0x{addr:x}+0x{length:x} is not inside one mapped region")

    def translate_gpa(self, gpa: int, length: int = 1) -> tuple[Region, int]:
        """-> (region, offset in region) for ``[gpa, gpa+length)``."""
        return self._lookup(self._gpa_starts, self.regions, gpa, length,
                            lambda r: r.gpa, "gpa")

    def translate_uaddr(self, uaddr: int, length: int = 1) -> tuple[Region, int]:
        """Front-end virtual address (SET_VRING_ADDR) -> (region, offset)."""
        return self._lookup(self._uaddr_starts, self._by_uaddr, uaddr, length,
                            lambda r: r.uaddr, "uaddr")

    def gpa_to_host(self, gpa: int, length: int = 1) -> int:
        r, off = self.translate_gpa(gpa, length)
        return r.host_addr + off

    def uaddr_to_host(self, uaddr: int, length: int = 1) -> int:
        r, off = self.translate_uaddr(uaddr, length)
        return r.host_addr + off

    def uaddr_to_gpa(self, uaddr: int, length: int = 1) -> int:
        r, off = self.translate_uaddr(uaddr, length)
        return r.gpa + off

    # -- access ------------------------------------------------------------
    def view(self, gpa: int, length: int, dtype="u1"):
        """A writable numpy view of ``[gpa, gpa+length)`` (no copy).  numpy
        is imported here, on first use: a VM starting does not pay for it."""
        import numpy as np
        r, off = self.translate_gpa(gpa, length)
        return np.frombuffer(r._mm, dtype=np.uint8, count=length,
                             offset=r._delta + off).view(dtype)

    def read(self, gpa: int, length: int) -> bytes:
        r, off = self.translate_gpa(gpa, length)
        start = r._delta + off
        return r._mm[start:start + length]

    def write(self, gpa: int, data: bytes) -> None:
        r, off = self.translate_gpa(gpa, len(data))
        start = r._delta + off
        r._mm[start:start + len(data)] = data

    def fill(self, gpa: int, length: int, byte: int = 0) -> None:
        """Set ``[gpa, gpa+length)`` to *byte* (a driver zeroing its rings):
        one memset, with the GIL released, and no numpy."""
        r, off = self.translate_gpa(gpa, length)
        ctypes.memset(r.host_addr + off, byte, length)

    def table(self) -> list[tuple[int, int, int, int]]:
        """``(gpa, size, uaddr, host_addr)`` per region, sorted by gpa, for C."""
        return [(r.gpa, r.size, r.uaddr, r.host_addr) for r in self.regions]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.regions)

    # -- lifetime ----------------------------------------------------------
    def close(self) -> None:
        """Unmap every region and close every fd we hold.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        for r in self.regions:
            r._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        regs = ", ".join(f"[0x{r.gpa:x}+0x{r.size:x}]" for r in self.regions)
        return f"<GuestMemory {self.backend} {regs}{' closed' if self.closed else ''}>"


# -- region-table validation -------------------------------------------------
def validate_regions(specs, max_regions: int = MAX_REGIONS_DEFAULT) -> None:
    """Reject a table a hostile peer could use against us.

    ``specs`` is a sequence of ``(gpa, size, uaddr, mmap_offset)``.  Regions
    must be non-empty, must not wrap the 64-bit space, and must not overlap
    in guest-physical nor in front-end-virtual space (translation would be
    ambiguous otherwise).
    """
    if not 1 <= len(specs) <= max_regions:
        raise RegionTableError(f"region count {len(specs)} not in 1..{max_regions}")
    for gpa, size, uaddr, off in specs:
        if size == 0:
            raise RegionTableError(f"zero-size region at gpa 0x{gpa:x}")
        for name, base in (("gpa", gpa), ("uaddr", uaddr), ("mmap_offset", off)):
            if base < 0 or base + size - 1 > U64_MAX:
                raise RegionTableError(
                    f"region {name} 0x{base:x}+0x{size:x} wraps the address space")
    for key, name in ((0, "guest-physical"), (2, "front-end virtual")):
        ordered = sorted(specs, key=lambda s: s[key])
        for a, b in zip(ordered, ordered[1:]):
            if a[key] + a[1] > b[key]:
                raise RegionTableError(
                    f"regions overlap in {name} space at 0x{b[key]:x}")


F_SEAL_WRITE = getattr(fcntl, "F_SEAL_WRITE", 0x0008)
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)


def _fd_kind(st: os.stat_result) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISFIFO, "pipe"), (stat.S_ISCHR, "character device")):
        if test(st.st_mode):
            return name
    return "special file (an eventfd or another anonymous inode)" if not st.st_mode & 0o170000 \
        else "special file"


def check_mappable(fd: int, offset: int, size: int, *, writable: bool = True,
                   what: str = "memory fd") -> os.stat_result:
    """Every reason a peer's ``fd`` cannot back ``[offset, offset+size)``
    mapped shared (and writable), as a :class:`RegionTableError` -- never a
    bare OSError: the fd's type, its access mode (a read-only reopen via
    /proc/PID/fd), its seals (F_SEAL_WRITE), its size.  For every mapper of
    peer memory (:func:`map_regions`, the vhost-pci window, the dirty log
    and inflight areas); the mmap that follows may still fail (a kernel
    limit), which the caller turns into a RegionTableError too."""
    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as e:
        raise RegionTableError(f"{what}: {e.strerror}") from None
    if flags & getattr(os, "O_PATH", 0):
        raise RegionTableError(f"{what} is an O_PATH handle: it cannot be mapped")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise RegionTableError(f"{what} is a {_fd_kind(st)}, not a regular file / memfd / "
                               "shm object")
    access = flags & os.O_ACCMODE
    if access == os.O_WRONLY or (writable and access != os.O_RDWR):
        mode = "write-only" if access == os.O_WRONLY else "read-only"
        raise RegionTableError(f"{what} is open {mode}: it cannot be mapped "
                               f"{'read/write' if writable else 'readable'}")
    if writable:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0                         # not a memfd: no seals
        if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            raise RegionTableError(f"{what} is sealed against writing (F_SEAL_WRITE or "
                                   "F_SEAL_FUTURE_WRITE): it cannot be mapped shared read/write")
    if offset < 0 or size < 0 or offset + size > st.st_size:
        held = "an fd of size 0" if st.st_size == 0 else f"0x{st.st_size:x} bytes"
        raise RegionTableError(f"region [0x{offset:x}+0x{size:x}) lies past the end of its fd "
                               f"({held})")
    return st


def _map_fd(fd: int, offset: int, size: int, writable: bool = True):
    """mmap ``[offset, offset+size)`` of ``fd``; -> (mmap, delta of offset)."""
    check_mappable(fd, offset, size, writable=writable)
    try:
        align = max(PAGE_SIZE, os.fstatvfs(fd).f_bsize)  # hugetlbfs: huge page size
    except OSError:
        align = PAGE_SIZE
    base = offset - offset % align
    delta = offset - base
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        mm = mmap.mmap(fd, delta + size, mmap.MAP_SHARED, prot, offset=base)
    except (OSError, ValueError, OverflowError) as e:
        raise RegionTableError(f"mmap of region failed: {e}") from None
    return mm, delta


def map_regions(specs, fds, max_regions: int = MAX_REGIONS_DEFAULT,
                max_total: int | None = None) -> GuestMemory:
    """Map a peer's memory table.  Takes ownership of ``fds``: every one is
    closed before return, whether mapping succeeds or not (the mappings keep
    what they need)."""
    try:
        specs = [tuple(int(v) for v in s) for s in specs]
        if len(fds) != len(specs):
            raise RegionTableError(f"{len(fds)} fds for {len(specs)} regions")
        validate_regions(specs, max_regions)
        if max_total is not None and sum(s[1] for s in specs) > max_total:
            raise RegionTableError(
                f"memory table maps {sum(s[1] for s in specs)} bytes, cap is {max_total}")
        regions: list[Region] = []
        try:
            for (gpa, size, uaddr, off), fd in zip(specs, fds):
                mm, delta = _map_fd(fd, off, size)
                r = Region(gpa, size, uaddr, off, None, mm, delta)
                r.host_addr = _host_addr(mm) + delta
                regions.append(r)
        except BaseException:
            for r in regions:
                r._close()
            raise
        return GuestMemory(regions, backend="peer")
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


# -- RAM we own ----------------------------------------------------------------
BACKENDS = ("shm", "memfd", "file")


def _open_backing(backend: str, size: int, name: str, mem_path: str | None) -> int:
    if backend == "shm":
        import posix_ipc  # lazy: keeps start-up fast
        # os.urandom, not secrets: secrets imports hashlib and hmac (OpenSSL) at start-up
        shm_name = f"/emu-{os.getpid()}-{name or 'ram'}-{os.urandom(4).hex()}"
        shm = posix_ipc.SharedMemory(shm_name, posix_ipc.O_CREX, mode=0o600, size=size)
        # Unlink at once: the fd keeps the object alive and nothing is left
        # in /dev/shm if we die.
        fd = os.dup(shm.fd)
        shm.close_fd()
        shm.unlink()
        return fd
    if backend == "memfd":
        fd = os.memfd_create(f"emu-{name or 'ram'}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return fd
    if backend == "file":
        if not mem_path:
            raise RegionTableError("memory-backend-file needs mem-path")
        if os.path.isdir(mem_path):
            # a hugetlbfs/tmpfs mount: a private file, unlinked at once
            fd = os.open(mem_path, os.O_TMPFILE | os.O_RDWR, 0o600) \
                if hasattr(os, "O_TMPFILE") else -1
            if fd < 0:
                raise RegionTableError(f"cannot create a file in {mem_path}")
        else:
            fd = os.open(mem_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise RegionTableError(f"unknown memory backend {backend!r} (have {', '.join(BACKENDS)})")


def check_layout(size: int, layout) -> list[tuple[int, int, int]]:
    """``layout``: ``(gpa, offset, length)`` windows of one backing of
    ``size`` bytes; each byte of the backing appears in exactly one window,
    in order, and no two windows overlap in guest-physical space."""
    windows = [tuple(int(v) for v in w) for w in layout]
    pos = 0
    for gpa, offset, length in windows:
        if offset != pos or length <= 0 or length % PAGE_SIZE or gpa % PAGE_SIZE \
                or gpa < 0 or gpa + length - 1 > U64_MAX:
            raise RegionTableError(f"RAM window gpa 0x{gpa:x} offset 0x{offset:x} length "
                                   f"0x{length:x} does not continue the backing at 0x{pos:x}")
        pos += length
    if pos != size:
        raise RegionTableError(f"RAM windows cover 0x{pos:x} of 0x{size:x} bytes")
    ordered = sorted(windows)
    for a, b in zip(ordered, ordered[1:]):
        if a[0] + a[2] > b[0]:
            raise RegionTableError(f"RAM windows overlap at gpa 0x{b[0]:x}")
    return windows


def allocate(size: int, backend: str = "shm", name: str = "", gpa: int = 0,
             mem_path: str | None = None, layout=None) -> GuestMemory:
    """Create guest RAM of ``size`` bytes on ``backend``, at ``gpa`` or, with
    ``layout`` (``(gpa, offset, length)`` windows, see :func:`check_layout`),
    as several guest-physical ranges of the one backing -- the RAM a PC
    splits around the PCI hole below 4 GiB.

    As QEMU does, each region's ``uaddr`` is this process's virtual address
    of it and its ``mmap_offset`` its offset in the backing; the fd is kept
    open so that a front-end can pass it on (once per region: vhost-user's
    SET_MEM_TABLE has one fd per region).
    """
    if size <= 0 or size % PAGE_SIZE:
        raise RegionTableError(f"RAM size {size} is not a positive multiple of {PAGE_SIZE}")
    windows = check_layout(size, layout if layout is not None else [(gpa, 0, size)])
    fd = _open_backing(backend, size, name, mem_path)
    try:
        mm, delta = _map_fd(fd, 0, size)
    except BaseException:
        os.close(fd)
        raise
    host = _host_addr(mm)
    regions = [Region(g, length, host + off, off, fd, mm, delta + off, host + off, owner=i == 0)
               for i, (g, off, length) in enumerate(windows)]
    return GuestMemory(regions, backend=backend, name=name)
