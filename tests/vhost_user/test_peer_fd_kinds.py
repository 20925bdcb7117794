"""Every kind of fd a peer can send where memory is expected (class 4):
each is a typed refusal (status 1, counted, logged), never an OS error
that drops the connection; the table mapped before it stays mapped and
in use; nothing leaks.  The same for a mapper that lets an OSError out
(the vhost-pci window's MAP_FIXED mmap does)."""
from __future__ import annotations

import fcntl
import os
import socket

import pytest

from emu.errors import RegionTableError
from emu.memory import allocate, check_mappable, map_regions
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.device import DefaultMapper
from emu.vhost_user.messages import (FrontendRequest as F, Inflight, Log, MemoryRegion,
                                     MemoryTable, ProtocolFeature as PF, SingleMemRegion)

MiB = 1 << 20


def _memfd(size: int = 2 * MiB, seals: int = 0) -> int:
    fd = os.memfd_create("emu-test-kind", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _reopened(flags: int) -> int:
    m = _memfd()
    try:
        return os.open(f"/proc/self/fd/{m}", flags | os.O_CLOEXEC)
    finally:
        os.close(m)


def _socket() -> int:
    a, b = socket.socketpair()
    a.close()
    return b.detach()


def _pipe() -> int:
    r, w = os.pipe()
    os.close(w)
    return r


#: kind -> (fd maker, words the refusal must contain)
KINDS = {
    "sealed-write": (lambda: _memfd(seals=fcntl.F_SEAL_WRITE), "sealed against writing"),
    "sealed-future-write": (lambda: _memfd(seals=getattr(fcntl, "F_SEAL_FUTURE_WRITE", 16)),
                            "sealed against writing"),
    "read-only-reopen": (lambda: _reopened(os.O_RDONLY), "open read-only"),
    "write-only-reopen": (lambda: _reopened(os.O_WRONLY), "open write-only"),
    "shorter-than-the-region": (lambda: _memfd(4096), "past the end of its fd"),
    "size-0": (lambda: _memfd(0), "past the end of its fd"),
    "pipe": (_pipe, "is a pipe"),
    "socket": (_socket, "is a socket"),
    "eventfd": (lambda: os.eventfd(0, os.EFD_CLOEXEC), "special file"),
    "directory": (lambda: os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
                  "is a directory"),
    "dev-null": (lambda: os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC), "character device"),
    "o-path": (lambda: os.open("/tmp", os.O_PATH | os.O_CLOEXEC), "O_PATH"),
}


def _send(h, ram, req, fd):
    uaddr = ram.regions[0].uaddr
    if req == "SET_MEM_TABLE":               # the same layout: only the fd is bad
        return h.ack(F.SET_MEM_TABLE, MemoryTable((MemoryRegion(0, 2 * MiB, uaddr, 0),)), (fd,))
    if req == "ADD_MEM_REG":
        return h.ack(F.ADD_MEM_REG, SingleMemRegion(MemoryRegion(8 * MiB, 2 * MiB,
                                                                 uaddr + 8 * MiB, 0)), (fd,))
    if req == "SET_LOG_BASE":
        return h.reply(F.SET_LOG_BASE, Log(4096 * 2, 0), (fd,)).payload.value
    return h.ack(F.SET_INFLIGHT_FD, Inflight(2 * MiB, 0, 2, 256), (fd,))


@pytest.mark.parametrize("req", ["SET_MEM_TABLE", "ADD_MEM_REG", "SET_LOG_BASE", "SET_INFLIGHT_FD"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bad_fd_after_a_good_table_is_refused_and_the_table_stays(harness, ram, kind, req):
    h = harness
    h.backend.counters = PeerCounters()
    h.negotiate()
    assert h.set_mem(ram) == 0
    running = req != "SET_INFLIGHT_FD"          # (the inflight area may change only when idle)
    if running:
        h.setup_ring(ram, 0, 0x10000)
    good = h.device.mem
    make, words = KINDS[kind]
    fd = make()
    try:
        status = _send(h, ram, req, fd)
    finally:
        os.close(fd)
    assert status == 1, (kind, req)
    assert words in str(h.backend.refused[-1][1]), h.backend.refused[-1]
    assert h.backend.counters.refused[req] == 1
    assert h.device.mem is good and not good.closed           # the old table stands
    assert h.backend.vrings[0].started == running            # and its ring still runs
    assert h.set_mem(ram) == 0                               # the connection goes on


class _OSErrorMapper(DefaultMapper):
    """A mapper that lets an OSError out, as PeerWindow.map_table did for a
    read-only or write-sealed memfd (PermissionError from MAP_FIXED mmap)."""

    def map(self, specs, fds):
        for fd in fds:
            os.close(fd)
        raise PermissionError(13, "mmap: Permission denied")


def test_an_oserror_from_a_mapper_is_a_refusal_not_a_dropped_connection(no_fd_leak, vu, ram):
    h = vu.Harness()
    h.mapper.map = _OSErrorMapper().map
    try:
        h.negotiate()
        assert h.set_mem(ram) == 1
        name, err = h.backend.refused[-1]
        assert name == "SET_MEM_TABLE" and "Permission denied" in str(err)
        assert h.u64(F.GET_FEATURES)                          # still served
    finally:
        h.close()


# -- the helper the window (and every mapper of peer memory) can call ---------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_check_mappable_types_every_refusal(kind):
    make, words = KINDS[kind]
    fd = make()
    try:
        with pytest.raises(RegionTableError, match=words):
            check_mappable(fd, 0, 2 * MiB)
        with pytest.raises(RegionTableError):
            map_regions([(0, 2 * MiB, 0, 0)], [os.dup(fd)])
    finally:
        os.close(fd)


def test_check_mappable_passes_our_own_ram():
    mem = allocate(2 * MiB, "memfd")
    try:
        check_mappable(mem.regions[0].fd, 0, 2 * MiB)
    finally:
        mem.close()


def test_log_base_and_inflight_need_the_features(harness):
    """(The requests above are reached with LOG_SHMFD / INFLIGHT_SHMFD negotiated.)"""
    offered = harness.u64(F.GET_PROTOCOL_FEATURES)
    assert offered & PF.LOG_SHMFD and offered & PF.INFLIGHT_SHMFD
