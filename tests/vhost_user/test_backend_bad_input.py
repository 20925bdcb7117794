"""The bad-input checklist (reference notes §7) against the back-end: each
hostile request is refused with a typed error, changes nothing, touches no
memory outside a mapped region and leaks no fd."""
from __future__ import annotations

import os
import socket

import pytest

from emu.errors import RegionTableError
from emu.memory import allocate
from emu.vhost_user.backend import IMPLEMENTED
from emu.vhost_user.errors import ProtocolViolation
from emu.vhost_user.messages import (FrontendRequest as F, Inflight, Log, MemoryRegion,
                                     MemoryTable, ProtocolFeature as PF, SingleMemRegion, U64,
                                     VringAddr, VringFd, VringState)

PLAIN_PF = int(IMPLEMENTED) & ~PF.NET_MTU
MiB = 1 << 20


@pytest.fixture
def h(harness):
    harness.negotiate(PLAIN_PF)
    return harness


def _last_error(h):
    return h.backend.refused[-1][1]


def _table(*regions):
    return MemoryTable(tuple(MemoryRegion(*r) for r in regions))


# -- 3, 4: memory tables ----------------------------------------------------------------------
BAD_TABLES = {
    "zero-size region": [(0, 0, 0x7F0000000000, 0)],
    "gpa wraps": [((1 << 64) - 0x1000, 0x2000, 0x7F0000000000, 0)],
    "uaddr wraps": [(0, 0x2000, (1 << 64) - 0x1000, 0)],
    "offset wraps": [(0, 0x2000, 0x7F0000000000, (1 << 64) - 0x1000)],
    "overlap in gpa": [(0, 0x100000, 0x7F0000000000, 0), (0x80000, 0x100000, 0x7F1000000000, 0)],
    "overlap in uaddr": [(0, 0x100000, 0x7F0000000000, 0), (0x200000, 0x100000, 0x7F0000080000, 0)],
    "mmap offset past the fd": [(0, 0x1000, 0x7F0000000000, 2 * MiB)],
    "region larger than the fd": [(0, 4 * MiB, 0x7F0000000000, 0)],
}


@pytest.mark.parametrize("name", sorted(BAD_TABLES))
def test_bad_memory_table(h, ram, name):
    fd = ram.regions[0].fd
    regions = BAD_TABLES[name]
    ack = h.send(F.SET_MEM_TABLE, _table(*regions), (fd,) * len(regions), need_reply=True)
    assert ack[0].payload == U64(1)
    assert isinstance(_last_error(h), RegionTableError)
    assert h.backend.memory is None and not h.mapper.live


def test_more_regions_than_the_backend_allows(no_fd_leak, ram, vu):
    h = vu.Harness(max_regions=2)
    h.negotiate(PLAIN_PF)
    fd = ram.regions[0].fd
    u = ram.regions[0].uaddr
    regions = [(i * 0x10000, 0x10000, u + i * 0x10000, i * 0x10000) for i in range(3)]
    assert h.send(F.SET_MEM_TABLE, _table(*regions), (fd,) * 3, need_reply=True)[0].payload == U64(1)
    assert h.backend.memory is None
    h.close()


def test_memory_fd_must_be_a_file(h):
    efd = h.eventfd()
    assert h.send(F.SET_MEM_TABLE, _table((0, 0x1000, 0x7F0000000000, 0)), (efd,),
                  need_reply=True)[0].payload == U64(1)
    assert isinstance(_last_error(h), RegionTableError)


def test_add_mem_reg_past_the_fd(h, ram):
    r = ram.regions[0]
    spec = SingleMemRegion(MemoryRegion(0, r.size, r.uaddr, r.size))
    assert h.ack(F.ADD_MEM_REG, spec, (r.fd,)) == 1
    assert h.backend.memory is None


# -- 5: ring index on every ring message -----------------------------------------------------
RING_MESSAGES = [
    (F.SET_VRING_NUM, lambda i: VringState(i, 256)),
    (F.SET_VRING_BASE, lambda i: VringState(i, 0)),
    (F.SET_VRING_ENABLE, lambda i: VringState(i, 1)),
    (F.SET_VRING_ADDR, lambda i: VringAddr(i, 0, 0, 0, 0, 0)),
]


@pytest.mark.parametrize("index", [2, 255, 0x10000, 0xFFFFFFFF])
@pytest.mark.parametrize("req,payload", RING_MESSAGES, ids=[r[0].name for r in RING_MESSAGES])
def test_ring_index_out_of_range(h, req, payload, index):
    """0x10000 would truncate to ring 0 in a u16: it must not touch ring 0."""
    assert h.ack(req, payload(index)) == 1
    assert "out of range" in str(_last_error(h))
    v0 = h.backend.vrings[0]
    assert (v0.num, v0.base, v0.enabled, v0.addr) == (0, 0, False, None)


@pytest.mark.parametrize("req", [F.SET_VRING_KICK, F.SET_VRING_CALL, F.SET_VRING_ERR])
def test_fd_message_index_out_of_range(h, req):
    efd = h.eventfd()
    assert h.ack(req, VringFd(2), (efd,)) == 1
    assert h.ack(req, VringFd(255, nofd=True)) == 1
    assert all(v.kick_fd is None and v.call_fd is None and v.err_fd is None for v in h.backend.vrings)


def test_get_vring_base_index_out_of_range_drops_the_connection(h):
    with pytest.raises(ProtocolViolation):
        h.send(F.GET_VRING_BASE, VringState(0x10000, 0))


# -- 6: ring size ---------------------------------------------------------------------------------
@pytest.mark.parametrize("num", [0, 3, 255, 32769, 65536, 1 << 31])
def test_bad_ring_size(h, num):
    assert h.ack(F.SET_VRING_NUM, VringState(0, num)) == 1
    assert h.backend.vrings[0].num == 0


def test_ring_base_beyond_u16_on_a_split_ring(h):
    assert h.ack(F.SET_VRING_BASE, VringState(0, 0x10000)) == 1
    assert h.ack(F.SET_VRING_BASE, VringState(0, 0xFFFF)) == 0


# -- 7: rings inside mapped memory ----------------------------------------------------------
@pytest.mark.parametrize("case", ["desc past end", "used straddles end", "avail unmapped",
                                  "desc unaligned", "used unaligned", "log", "before num"])
def test_ring_outside_memory(h, ram, case):
    h.set_mem(ram)
    u, size = ram.regions[0].uaddr, ram.size
    num = 256
    if case != "before num":
        h.send(F.SET_VRING_NUM, VringState(0, num))
    desc, avail, used = u, u + 0x1000, u + 0x2000
    if case == "desc past end":
        desc = u + size
    elif case == "used straddles end":
        used = u + size - 8
    elif case == "avail unmapped":
        avail = 0x1000
    elif case == "desc unaligned":
        desc = u + 8
    elif case == "used unaligned":
        used = u + 0x2002
    if case == "log":            # the log address is a GPA used later, never a reason to refuse
        assert h.ack(F.SET_VRING_ADDR, VringAddr(0, 1, desc, used, avail, 1 << 60)) == 0
        return
    assert h.ack(F.SET_VRING_ADDR, VringAddr(0, 0, desc, used, avail, 0)) == 1
    assert isinstance(_last_error(h), ProtocolViolation)
    v = h.backend.vrings[0]
    assert not v.addressed and v.addr is None and v.desc == 0


def test_ring_address_before_memory(h):
    h.send(F.SET_VRING_NUM, VringState(0, 8))
    assert h.ack(F.SET_VRING_ADDR, VringAddr(0, 0, 0x1000, 0x3000, 0x2000, 0)) == 1
    assert "before a memory table" in str(_last_error(h))


# -- 8: dirty log ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size,offset", [(0, 0), (4096, (1 << 64) - 2048), (8192, 0), (4096, 4096)])
def test_bad_log(h, size, offset):
    fd = os.memfd_create("log", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4096)
    try:
        assert h.reply(F.SET_LOG_BASE, Log(size, offset), (fd,)).payload == U64(1)
    finally:
        os.close(fd)
    assert h.backend.log is None


def test_log_fd_must_be_an_eventfd(h):
    r, w = os.pipe()
    try:
        assert h.ack(F.SET_LOG_FD, None, (r,)) == 1
    finally:
        os.close(r)
        os.close(w)
    assert h.backend.log_fd is None


# -- 16: fd abuse ------------------------------------------------------------------------------------
def test_kick_and_call_fds_must_be_eventfds(h, ram):
    memfd = ram.regions[0].fd
    a, b = socket.socketpair()
    try:
        assert h.ack(F.SET_VRING_KICK, VringFd(0), (memfd,)) == 1
        assert "not an eventfd" in str(_last_error(h))
        assert h.ack(F.SET_VRING_CALL, VringFd(0), (b.fileno(),)) == 1
        assert h.ack(F.SET_VRING_ERR, VringFd(1), (memfd,)) == 1
    finally:
        a.close()
        b.close()
    assert all(v.kick_fd is None and v.call_fd is None and v.err_fd is None for v in h.backend.vrings)


def test_repeated_fd_messages_do_not_accumulate_fds(h, ram):
    def count():
        return len(os.listdir("/proc/self/fd"))
    efd = h.eventfd()
    h.send(F.SET_VRING_CALL, VringFd(0), (efd,))
    h.send(F.SET_VRING_KICK, VringFd(0), (efd,))
    h.send(F.SET_LOG_FD, None, (efd,))
    h.send(F.SET_VRING_ERR, VringFd(1), (efd,))
    h.send(F.SET_MEM_TABLE, _table((0, 0x1000, ram.regions[0].uaddr, 0)), (ram.regions[0].fd,))
    a, b = socket.socketpair()
    h.send(F.SET_BACKEND_REQ_FD, None, (b.fileno(),))
    before = count()          # (a mapping holds an fd: CPython's mmap keeps a dup)
    for _ in range(50):
        h.send(F.SET_VRING_CALL, VringFd(0), (efd,))
        h.send(F.SET_VRING_KICK, VringFd(0), (efd,))
        h.send(F.SET_VRING_ERR, VringFd(1), (efd,))
        h.send(F.SET_LOG_FD, None, (efd,))
        h.send(F.SET_BACKEND_REQ_FD, None, (b.fileno(),))
        h.send(F.SET_MEM_TABLE, _table((0, 0x1000, ram.regions[0].uaddr, 0)), (ram.regions[0].fd,))
        h.send(F.REM_MEM_REG, SingleMemRegion(MemoryRegion(0, 0x1000, 0, 0)), (efd,))
    a.close()
    b.close()
    assert count() == before - 2


# -- 2: prerequisites and features ------------------------------------------------------------------
def test_requests_without_their_feature(no_fd_leak, ram, vu):
    h = vu.Harness()
    h.negotiate(PF.REPLY_ACK | PF.MQ)
    a, b = socket.socketpair()
    efd = h.eventfd()
    r = ram.regions[0]
    try:
        assert h.ack(F.SET_BACKEND_REQ_FD, None, (b.fileno(),)) == 1
        assert h.ack(F.NET_SET_MTU, U64(1500)) == 1
        assert h.ack(F.SET_STATUS, U64(1)) == 1
        assert h.ack(F.ADD_MEM_REG, SingleMemRegion(MemoryRegion(0, r.size, r.uaddr, 0)), (r.fd,)) == 1
        assert h.ack(F.SET_INFLIGHT_FD, Inflight(0x2000, 0, 1, 8), (efd,)) == 1
        assert h.ack(F.RESET_DEVICE) == 1
        assert h.reply(F.SET_LOG_BASE, Log(4096, 0), (r.fd,)).payload == U64(1)
        with pytest.raises(ProtocolViolation, match="INFLIGHT_SHMFD"):
            h.send(F.GET_INFLIGHT_FD, Inflight(0, 0, 1, 8))
    finally:
        a.close()
        b.close()
        h.close()
    assert all("negotiated" in str(e) for _, e in h.backend.refused)


def test_enable_value_must_be_0_or_1(h):
    assert h.ack(F.SET_VRING_ENABLE, VringState(0, 2)) == 1
    assert not h.backend.vrings[0].enabled


# -- 17: inflight ---------------------------------------------------------------------------------------
def test_inflight_num_queues_beyond_the_device(h):
    """DPDK CVE-2021-3839: an inflight area for more queues than exist."""
    fd = os.memfd_create("inflight", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 20)
    try:
        assert h.ack(F.SET_INFLIGHT_FD, Inflight(1 << 20, 0, 3, 256), (fd,)) == 1
        assert h.ack(F.SET_INFLIGHT_FD, Inflight(1 << 20, 0, 0, 256), (fd,)) == 1
    finally:
        os.close(fd)
    assert h.backend.inflight is None


# -- 18: SET_MEM_TABLE while rings run (see also test_backend) ------------------------------------------
def test_remap_while_running_keeps_rings_off_the_old_mapping(h, ram):
    h.set_mem(ram)
    h.setup_ring(ram, 0, 0x10000)
    other = allocate(2 * MiB, "memfd")
    try:
        other.regions[0].uaddr = ram.regions[0].uaddr       # same front-end layout, new fd
        other.write(0x10000, b"new memory")
        assert h.set_mem(other) == 0
        import ctypes
        assert ctypes.string_at(h.backend.vrings[0].desc, 10) == b"new memory"
    finally:
        other.close()
