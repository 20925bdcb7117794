"""A SET_MEM_TABLE that VM2 refuses while rings run leaves the previous
table mapped in the window and serving (emu VM2 process, echo app on vp0).

The scripted VM1 (evil_frontend.EchoPeer) proves the round trip, sends one
bad table -- every kind the window must refuse: fds that are not memory,
too small, read-only or sealed, a layout larger than the window, more than
max-mem, and tables the kernel refuses only at mmap time (a hugetlbfs
offset that is not huge-page aligned, on the first or the second region) --
and then:

* traffic flows again on the old table, and the books balance: every frame
  VM1 sent was read by VM2 once and echoed once;
* GET_VRING_BASE answers the ring's real position (not a fault on memory
  the refusal took away: the bug this file is about crashed VM2 there);
* RESET_OWNER or a disconnect releases the peer's memory: VM2's fds and
  mappings are back to what they were (``Victim.after``).
"""
from __future__ import annotations

import fcntl
import os
import socket

import pytest

from emu.memory import F_SEAL_FUTURE_WRITE
from emu.vhost_user.messages import (FrontendRequest as F, MemoryRegion, MemoryTable,
                                     VringState)

from .conftest import Expect
from .evil_frontend import EchoPeer, eventfd

MiB, GiB = 1 << 20, 1 << 30


class Fds:
    """fds a case sends (closed when the case ends)."""

    def __init__(self):
        self.fds: list[int] = []

    def keep(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def memfd(self, size: int, flags: int = 0, name: str = "evilpeer-bad") -> int:
        fd = self.keep(os.memfd_create(name, os.MFD_CLOEXEC | flags))
        os.ftruncate(fd, size)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def ring_region(p: EchoPeer) -> MemoryRegion:
    """The region the running rings live in: every new table must hold it."""
    r = p.ram.regions[0]
    return MemoryRegion(r.gpa, r.size, r.uaddr, r.mmap_offset)


def same_region_other_fd(make_fd):
    """The ring region, backed by the fd ``make_fd(peer, fds)`` returns."""
    def build(p: EchoPeer, fds: Fds):
        return (ring_region(p),), (make_fd(p, fds),)
    return build


def reopen(flags: int):
    """The peer's own memfd opened again through /proc with ``flags``."""
    return same_region_other_fd(
        lambda p, fds: fds.keep(os.open(f"/proc/self/fd/{p.ram.regions[0].fd}", flags)))


def sealed(seal: int):
    def make(p, fds):
        fd = fds.memfd(2 * MiB, os.MFD_ALLOW_SEALING)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seal)
        return fd
    return same_region_other_fd(make)


def pipe(p, fds):
    r, w = os.pipe()
    fds.keep(w)
    return fds.keep(r)


def unix_socket(p, fds):
    a, b = socket.socketpair()
    a.close()
    return fds.keep(b.detach())


def with_extra(*extra):
    """The ring region (its real fd) plus ``extra`` regions ``(gpa, size, offset, fd_fn)``."""
    def build(p: EchoPeer, fds: Fds):
        regions, sent = [ring_region(p)], [p.ram.regions[0].fd]
        uaddr = 0x7F0000000000
        for gpa, size, offset, fd_fn in extra:
            regions.append(MemoryRegion(gpa, size, uaddr, offset))
            sent.append(fd_fn(fds))
            uaddr += size + GiB
        return tuple(regions), tuple(sent)
    return build


def hugetlb(fds: Fds) -> int:
    # hugetlbfs maps only at huge-page-aligned offsets: mmap says EINVAL
    return fds.memfd(4 * MiB, os.MFD_HUGETLB, "evilpeer-huge")


def sparse(size: int):
    return lambda fds: fds.memfd(size)


def hugetlb_first(p: EchoPeer, fds: Fds):
    r = ring_region(p)
    return (MemoryRegion(r.gpa, r.size, r.uaddr, 4096),), (hugetlb(fds),)


# (id, table builder, text the victim's log must show)
KINDS = [
    ("fd-smaller-than-its-region", same_region_other_fd(lambda p, fds: fds.memfd(MiB)),
     "past the end of its fd"),
    ("fd-of-size-0", same_region_other_fd(lambda p, fds: fds.memfd(0)), "size 0"),
    ("pipe", same_region_other_fd(pipe), "not a regular file"),
    ("socket", same_region_other_fd(unix_socket), "not a regular file"),
    ("eventfd", same_region_other_fd(lambda p, fds: fds.keep(eventfd())), "not a regular file"),
    ("directory", same_region_other_fd(lambda p, fds: fds.keep(os.open("/tmp", os.O_RDONLY))),
     "not a regular file"),
    ("read-only-memfd", reopen(os.O_RDONLY), "open read-only"),
    ("o-path-fd", reopen(os.O_PATH), "O_PATH"),
    ("write-sealed-memfd", sealed(fcntl.F_SEAL_WRITE), "sealed against writing"),
    ("future-write-sealed-memfd", sealed(F_SEAL_FUTURE_WRITE), "sealed against writing"),
    # 2 MiB + (2 GiB + 4 KiB) + (2 GiB - 3 MiB) < 4 GiB (max-mem), but in 2 MiB slots
    # the last region ends 1 MiB past the 4 GiB window
    ("layout-larger-than-the-window",
     with_extra((1 << 40, 2 * GiB + 4096, 0, sparse(2 * GiB + 4096)),
                (2 << 40, 2 * GiB - 3 * MiB, 0, sparse(2 * GiB - 3 * MiB))),
     "bytes of window"),
    ("more-than-max-mem", with_extra((1 << 40, 4 * GiB, 0, sparse(4 * GiB))), "exceeds max-mem"),
    ("mmap-fails-on-the-first-region", hugetlb_first, "mmap of region"),
    ("mmap-fails-on-the-second-region", with_extra((GiB, MiB, 4096, hugetlb)), "mmap of region"),
]


class Books:
    """Frames VM1 sent and got back in this test, and VM2's count of them."""

    def __init__(self, victim, peer: EchoPeer):
        self.victim, self.peer = victim, peer
        self.read0 = self._count("peer1")         # VM1's TX ring, read by VM2
        self.echoed0 = self._count("peer0")       # VM1's RX ring, filled by VM2
        self.sent = 0

    def _count(self, queue: str) -> int:
        return self.victim.vm2.queue("vp0", queue).get("packets", 0)

    def roundtrips(self, n: int = 3) -> None:
        for _ in range(n):
            self.peer.roundtrip(self.sent)
            self.sent += 1

    def balance(self) -> None:
        p = self.peer
        assert p.tx.used_idx() == self.sent and p.rx.used_idx() == self.sent
        self.victim.vm2.wait(lambda: (self._count("peer1") - self.read0,
                                      self._count("peer0") - self.echoed0)
                             == (self.sent, self.sent), 10, f"VM2 to count {self.sent} frames")
        errors = sum(self.victim.vm2.queue("vp0", q).get("errors", 0) for q in ("peer0", "peer1"))
        assert errors == self.errors0, "a ring error after a refused table"

    def vring_bases(self) -> None:
        """GET_VRING_BASE of both rings: the next avail index of each."""
        for ring in (self.peer.tx, self.peer.rx):
            reply = self.peer.fe.call(F.GET_VRING_BASE, VringState(ring.index, 0))
            assert reply.payload == VringState(ring.index, self.sent), reply


def refuse(peer: EchoPeer, build, fds: Fds) -> None:
    regions, sent = build(peer, fds)
    assert peer.fe.status(F.SET_MEM_TABLE, MemoryTable(regions), sent) == 1


def _start(victim):
    peer = EchoPeer(victim.sock)
    books = Books(victim, peer)
    books.errors0 = sum(victim.vm2.queue("vp0", q).get("errors", 0) for q in ("peer0", "peer1"))
    books.roundtrips()
    return peer, books


@pytest.mark.parametrize("kind", [k[0] for k in KINDS])
def test_refused_table_then_traffic_then_vring_base_then_disconnect(victim, kind):
    _, build, text = next(k for k in KINDS if k[0] == kind)
    before = victim.before()
    rollbacks = victim.vm2.device("vp0")["window_rollbacks"]
    peer, books = _start(victim)
    fds = Fds()
    try:
        refuse(peer, build, fds)
        books.roundtrips()                   # the old table serves again
        refuse(peer, build, fds)             # and again: nothing was lost the first time
        books.roundtrips()
        books.balance()
        books.vring_bases()
        # refused by a check: the window was never touched; refused by mmap:
        # the old table was mapped again, once per refusal
        assert victim.vm2.device("vp0")["window_rollbacks"] - rollbacks == \
            (2 if kind.startswith("mmap-") else 0)
    finally:
        fds.close()
        peer.close()
    victim.after(before, Expect(refused=("SET_MEM_TABLE",), log=(text,)))


def test_every_refusal_in_a_row_then_reset_owner(victim):
    """All kinds back to back on one connection, then RESET_OWNER: the
    peer's memory is released while the connection stays."""
    from .evil_frontend import MARKER
    from .procs import peer_mappings
    before = victim.before()
    refused0 = victim.counters()["refused"].get("SET_MEM_TABLE", 0)
    peer, books = _start(victim)
    fds = Fds()
    try:
        for _, build, _ in KINDS:
            refuse(peer, build, fds)
            books.roundtrips(2)
        books.balance()
        assert victim.counters()["refused"]["SET_MEM_TABLE"] == refused0 + len(KINDS)
        assert peer_mappings(victim.vm2, MARKER), "the old table is not mapped"
        peer.fe.send(F.RESET_OWNER)
        assert peer.fe.u64(F.GET_FEATURES)              # served after the reset
        victim.vm2.wait(lambda: not peer_mappings(victim.vm2, MARKER), 10,
                        "the peer's memory to be released by RESET_OWNER")
    finally:
        fds.close()
        peer.close()
    victim.after(before, Expect(refused=("SET_MEM_TABLE",)))


def test_a_good_table_after_refusals_replaces_the_old_one(victim):
    """After a refusal the next good table is taken as usual (the window
    kept nothing of the refused one)."""
    before = victim.before()
    peer, books = _start(victim)
    fds = Fds()
    try:
        refuse(peer, with_extra((GiB, MiB, 4096, hugetlb)), fds)
        books.roundtrips()
        assert peer.fe.set_mem_table(peer.ram) == 0      # the rings resume on it by themselves
        books.roundtrips()
        books.balance()
        books.vring_bases()
    finally:
        fds.close()
        peer.close()
    victim.after(before, Expect(refused=("SET_MEM_TABLE",)))
