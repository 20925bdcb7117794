"""Test rigs for the ring engine: guest RAM, ring placement, eventfds,
guard-paged memory and fork isolation."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import signal
import traceback
from dataclasses import dataclass

import numpy as np
import pytest

from emu import memory, ring
from emu.spec import vhost, virtio as V, virtio_net as N, virtio_ring as R
from emu.memory import GuestMemory, PAGE_SIZE, Region

from .model import Memory, RingAddrs

KiB, MiB = 1 << 10, 1 << 20
V1 = V.F_VERSION_1
MRG = N.F_MRG_RXBUF
EVENT_IDX = V.F_EVENT_IDX
INDIRECT = V.F_INDIRECT_DESC
LOG = vhost.F_LOG_ALL


def feats(*, v1: bool = True, mrg: bool = False, event_idx: bool = False,
          indirect: bool = False, log: bool = False) -> int:
    """virtio feature bits; without v1 and mrg the net header is 10 bytes."""
    return ((V1 if v1 else 0) | (MRG if mrg else 0) | (EVENT_IDX if event_idx else 0)
            | (INDIRECT if indirect else 0) | (LOG if log else 0))


def place(base: int, num: int) -> RingAddrs:
    """A split ring at ``base`` in the legacy layout."""
    desc, avail, used, _ = R.ring_layout(base, num)
    return RingAddrs(num, desc, avail, used)


def ram(size: int = MiB, gpa: int = 0, name: str = "t") -> GuestMemory:
    return memory.allocate(size, "memfd", name=name, gpa=gpa)


def devq(table: ring.RegionTable, r: RingAddrs, features: int, **kw) -> ring.DeviceQueue:
    return ring.DeviceQueue.from_gpa(table, r.num, r.desc, r.avail, r.used,
                                     features=features, **kw)


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def signals(fd: int) -> int:
    """How many notifications the eventfd got since the last call."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def model_stats(q) -> dict:
    """A model queue's counters in DeviceQueue.stats() terms."""
    st = q.st
    return dict(packets=st.packets, bytes=st.bytes, drops=st.drops, errors=st.errors,
                notifies=st.notifies, suppressed=st.suppressed)


def engine_stats(q: ring.DeviceQueue) -> dict:
    s = q.stats()
    return {k: s[k] for k in ("packets", "bytes", "drops", "errors", "notifies", "suppressed")}


# -- guard-paged guest memory ----------------------------------------------------
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FIXED, _MAP_NORESERVE = 0x10, 0x4000


def _mmap(addr, length, prot, flags, fd=-1, off=0) -> int:
    p = _libc.mmap(addr, length, prot, flags, fd, off)
    if p in (None, ctypes.c_void_p(-1).value):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return p


class GuardedMemory:
    """Guest RAM whose regions each sit between PROT_NONE pages.

    One anonymous PROT_NONE reservation; each region of a memfd is mapped
    MAP_FIXED into it with ``guard`` bytes of reservation before, between
    and after.  Regions adjacent in guest-physical space are therefore
    *not* adjacent in host space: an engine that copied across the seam
    without splitting, or strayed a byte outside a region, faults."""

    def __init__(self, layout: list[tuple[int, int]], guard: int = PAGE_SIZE):
        layout = sorted(layout)
        self.size = guard + sum(sz + guard for _, sz in layout)
        self.base = _mmap(None, self.size, 0,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        fd = os.memfd_create("guarded", os.MFD_CLOEXEC)
        regions = []
        try:
            os.ftruncate(fd, sum(sz for _, sz in layout))
            host, off = self.base + guard, 0
            for gpa, sz in layout:
                _mmap(host, sz, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_SHARED | _MAP_FIXED, fd, off)
                buf = (ctypes.c_char * sz).from_address(host)
                regions.append(Region(gpa, sz, host, off, None, buf, 0, host))
                host += sz + guard
                off += sz
        finally:
            os.close(fd)                 # the mappings hold the pages
        self.mem = GuestMemory(regions, backend="guarded")
        self.mem.close = lambda: None    # we own the mappings

    def close(self) -> None:
        if self.base:
            _libc.munmap(self.base, self.size)
            self.base = 0


# -- fork isolation ------------------------------------------------------------------
def isolated(fn):
    """Run the test in a forked child so that a stray access (SIGSEGV on a
    guard page) or an abort is a clean failure of this test, not of the run.

    The child reports an exception's traceback (or fds the test left open)
    through a pipe; the parent fails with it, or with the signal that
    killed the child."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                  # child
            os.close(r)
            code = 0
            try:
                before = set(os.listdir("/proc/self/fd"))
                fn(*args, **kwargs)
                leaked = set(os.listdir("/proc/self/fd")) - before
                assert not leaked, f"fds left open: {sorted(leaked)}"
            except BaseException:
                os.write(w, traceback.format_exc().encode())
                code = 1
            finally:
                os.close(w)
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = f.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status)).name
            pytest.fail(f"child died of {sig}: the engine touched memory outside a region")
        if os.WEXITSTATUS(status):
            pytest.fail(f"in the isolated child:\n{report}", pytrace=False)

    return wrapper


def changed_ranges(before: list[bytes], mem: Memory) -> list[tuple[int, int]]:
    """(gpa, len) runs of bytes that differ from the snapshot ``before``."""
    out = []
    for (gpa, arr), old in zip(mem.regions, before):
        diff = np.flatnonzero(arr != np.frombuffer(old, np.uint8))
        if diff.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(diff) != 1)
        starts = np.concatenate(([diff[0]], diff[breaks + 1]))
        ends = np.concatenate((diff[breaks], [diff[-1]]))
        out += [(gpa + int(s), int(e - s + 1)) for s, e in zip(starts, ends)]
    return out


@dataclass
class Pair:
    """Two guest memories with identical layouts: one for the engine, one
    for the model, kept byte-identical before each operation."""
    engine: GuestMemory
    model: GuestMemory

    def sync(self) -> None:
        for a, b in zip(self.engine.regions, self.model.regions):
            self.model.view(b.gpa, b.size)[:] = self.engine.view(a.gpa, a.size)

    def equal(self) -> bool:
        return all(np.array_equal(self.engine.view(a.gpa, a.size), self.model.view(b.gpa, b.size))
                   for a, b in zip(self.engine.regions, self.model.regions))

    def close(self) -> None:
        self.engine.close()
        self.model.close()
