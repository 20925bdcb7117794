"""The back-end with packed rings (VIRTIO_F_RING_PACKED negotiated): ring
sizes and alignment in SET_VRING_ADDR, wrap counters in SET/GET_VRING_BASE
(QEMU's two halves, DPDK's one), queue sizes that are not powers of two,
the packed inflight region, a format change refused while rings run --
and the front-end's half: the packed layout it sends."""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from emu.spec import virtio_ring_packed as P
from emu.vhost_user import shm
from emu.vhost_user.backend import IMPLEMENTED
from emu.vhost_user.client import FrontendVring
from emu.vhost_user.messages import (FrontendRequest as F, Inflight, ProtocolFeature as PF, U64,
                                     VirtioFeature as VF, VringAddr, VringFd, VringState)
from emu.vhost_user.vring import packed_base, packed_reply_base

PLAIN_PF = int(IMPLEMENTED) & ~PF.NET_MTU
PACKED_FEATURES = VF.VERSION_1 | VF.NET_MRG_RXBUF | VF.RING_PACKED | VF.PROTOCOL_FEATURES


@pytest.fixture
def ph(no_fd_leak, vu):
    dev = vu.RecordingDevice(features=vu.NET_FEATURES | VF.RING_PACKED)
    h = vu.Harness(dev)
    yield h
    h.close()
    assert not h.mapper.live


def packed_addr(mem, index: int, base_gpa: int, num: int, *, driver_off: int = 0,
                device_off: int = 0) -> VringAddr:
    desc, driver, device, _ = P.ring_layout(base_gpa, num)
    u = lambda gpa: mem.regions[0].uaddr + gpa
    return VringAddr(index, 0, u(desc), u(device + device_off), u(driver + driver_off), 0)


def start_packed(h, ram, index: int, base_gpa: int, num: int, base: int) -> None:
    h.send(F.SET_VRING_NUM, VringState(index, num))
    h.send(F.SET_VRING_BASE, VringState(index, base))
    h.send(F.SET_VRING_ADDR, packed_addr(ram, index, base_gpa, num))
    h.send(F.SET_VRING_KICK, VringFd(index), (h.eventfd(),))


def test_packed_ring_areas_are_translated_with_their_sizes(ph, ram):
    ph.negotiate(PLAIN_PF, PACKED_FEATURES)
    assert ph.backend.packed and ph.set_mem(ram) == 0
    start_packed(ph, ram, 0, 0x10000, 100, P.off_wrap(7, 0))   # 100: not a power of two
    v = ph.backend.vrings[0]
    assert v.packed and v.started and v.num == 100
    s = ph.device.started_with[0]
    assert (s["desc_gpa"], s["avail_gpa"], s["used_gpa"]) == (0x10000, 0x10000 + 1600, 0x10000 + 1604)
    assert s["base"] == P.off_wrap(7, 0)


def test_packed_areas_need_4_byte_alignment(ph, ram):
    ph.negotiate(PLAIN_PF, PACKED_FEATURES)
    ph.set_mem(ram)
    ph.send(F.SET_VRING_NUM, VringState(0, 64))
    ph.send(F.SET_VRING_ADDR, packed_addr(ram, 0, 0x10000, 64, driver_off=2))
    ph.send(F.SET_VRING_ADDR, packed_addr(ram, 0, 0x10000, 64, device_off=2))
    assert ph.refused() == ["SET_VRING_ADDR", "SET_VRING_ADDR"]
    assert not ph.backend.vrings[0].addressed
    ph.send(F.SET_VRING_ADDR, packed_addr(ram, 0, 0x10000, 64))   # a good one after them
    assert ph.backend.vrings[0].addressed


def test_packed_sizes(ph):
    ph.negotiate(PLAIN_PF, PACKED_FEATURES)
    for num, ok in ((1, True), (6, True), (32768, True), (0, False), (32769, False)):
        ph.backend.refused.clear()
        ph.send(F.SET_VRING_NUM, VringState(0, num))
        assert (ph.refused() == []) is ok, num


def test_split_sizes_stay_powers_of_two(harness):
    harness.negotiate(PLAIN_PF, VF.VERSION_1 | VF.PROTOCOL_FEATURES)
    harness.send(F.SET_VRING_NUM, VringState(0, 100))
    assert harness.refused() == ["SET_VRING_NUM"]


def test_vring_base_halves(ph, ram):
    """QEMU sends both halves (avail in bits 0-15, used in 16-31, each with
    its wrap counter in the top bit); a position past the ring is refused;
    GET_VRING_BASE answers both halves, equal for an in-order device."""
    ph.negotiate(PLAIN_PF, PACKED_FEATURES)
    ph.set_mem(ram)
    ph.send(F.SET_VRING_NUM, VringState(0, 256))
    for bad in (P.off_wrap(256, 1), P.off_wrap(3, 1) | P.off_wrap(300, 0) << 16):
        ph.send(F.SET_VRING_BASE, VringState(0, bad))
    assert ph.refused() == ["SET_VRING_BASE", "SET_VRING_BASE"]
    qemu_fresh = P.off_wrap(0, 1) | P.off_wrap(0, 1) << 16
    ph.send(F.SET_VRING_BASE, VringState(0, qemu_fresh))
    assert ph.backend.vrings[0].base == qemu_fresh and packed_base(qemu_fresh) == (0, 1, 0, 1)
    ph.send(F.SET_VRING_ADDR, packed_addr(ram, 0, 0x10000, 256))
    ph.send(F.SET_VRING_KICK, VringFd(0), (ph.eventfd(),))
    ph.device.stop_result = {0: P.off_wrap(42, 0)}
    reply = ph.reply(F.GET_VRING_BASE, VringState(0, 0))
    half = P.off_wrap(42, 0)
    assert reply.payload == VringState(0, half | half << 16) == VringState(0, packed_reply_base(half))


def test_format_cannot_change_under_running_rings(ph, ram):
    ph.negotiate(PLAIN_PF, PACKED_FEATURES)
    ph.set_mem(ram)
    start_packed(ph, ram, 0, 0x10000, 64, P.off_wrap(0, 1))
    ph.send(F.SET_FEATURES, U64(VF.VERSION_1 | VF.PROTOCOL_FEATURES))
    assert ph.refused() == ["SET_FEATURES"] and ph.backend.packed
    # QEMU toggles LOG_ALL with SET_FEATURES while rings run: same format, fine
    ph.send(F.SET_FEATURES, U64(PACKED_FEATURES | VF.LOG_ALL))
    assert ph.refused() == ["SET_FEATURES"] and ph.backend.vrings[0].started


def test_packed_inflight_area(ph, vu):
    """GET_INFLIGHT_FD after SET_FEATURES with RING_PACKED: the packed
    region (QueueRegionPacked), initialised as DPDK does; SET_INFLIGHT_FD
    takes one back unchanged."""
    ph.negotiate(PLAIN_PF, PACKED_FEATURES)
    reply = ph.reply(F.GET_INFLIGHT_FD, Inflight(0, 0, 2, 100))
    p = reply.payload
    assert p.mmap_size == 2 * shm.inflight_queue_size(100, packed=True)
    assert shm.inflight_queue_size(100, packed=True) == (32 * 100 + 32 + 63) // 64 * 64
    area = ph.backend.inflight
    assert area.packed
    q1 = area.queue_addr(1)
    head = ctypes.string_at(q1, 32)
    assert int.from_bytes(head[10:12], "little") == 100          # desc_num
    assert (head[20], head[21]) == (1, 1)                        # both wrap counters
    nexts = np.frombuffer(ctypes.string_at(q1 + 32, 32 * 100), np.uint16)[1::16]
    assert list(nexts) == list(range(1, 101))                   # the free list
    ctypes.memmove(q1 + 16, b"\x05\x00", 2)                     # used_idx, as a crash left it
    keep = os.dup(reply.fds[0])
    h2 = vu.Harness(vu.RecordingDevice(features=vu.NET_FEATURES | VF.RING_PACKED))
    try:
        h2.negotiate(PLAIN_PF, PACKED_FEATURES)
        assert h2.ack(F.SET_INFLIGHT_FD, p, (keep,)) == 0
        got = h2.backend.inflight
        assert got.packed and ctypes.string_at(got.queue_addr(1) + 16, 2) == b"\x05\x00"
    finally:
        h2.close()
        os.close(keep)


def test_front_end_sends_the_packed_layout(no_fd_leak, arun, vu):
    """emu's front-end against emu's back-end over a socketpair: with
    RING_PACKED acked it sends the packed areas (4 bytes each) and the base
    with its wrap counters, and gets both halves back at the stop."""
    import asyncio
    import socket
    from emu.memory import allocate
    from emu.vhost_user.backend import Backend
    from emu.vhost_user.client import FrontendClient
    from emu.vhost_user.frontend import Frontend
    from emu.vhost_user.transport import BackendConnection

    async def body():
        dev = vu.RecordingDevice(features=vu.NET_FEATURES | VF.RING_PACKED)
        backend = Backend(dev)
        a, b = socket.socketpair()
        conn = BackendConnection(a, backend)
        client = FrontendClient(sock=b, timeout=2.0, frontend=Frontend())
        ram = allocate(1 << 20, "memfd", name="packed-pair")
        kick = vu.eventfd()
        try:
            await client.connect()
            await client.handshake()
            desc, driver, device, _ = P.ring_layout(0x10000, 64)
            base = P.off_wrap(5, 0) | P.off_wrap(5, 0) << 16
            await client.start(PACKED_FEATURES, ram,
                               [FrontendVring(0, 64, desc, driver, device, base=base,
                                              kick_fd=kick)])
            v = backend.vrings[0]
            got = (v.packed, v.started, v.desc_gpa, v.avail_gpa, v.used_gpa, v.base)
            dev.stop_result = {0: P.off_wrap(9, 1)}
            bases = await client.stop()
            return got, bases
        finally:
            await client.close()
            await asyncio.wait_for(conn.done.wait(), 2)
            ram.close()
            os.close(kick)
    got, bases = arun(body())
    assert got == (True, True, 0x10000, 0x10000 + 1024, 0x10000 + 1028,
                   P.off_wrap(5, 0) | P.off_wrap(5, 0) << 16)
    assert bases == {0: P.off_wrap(9, 1) | P.off_wrap(9, 1) << 16}


def test_front_end_keeps_the_inflight_area_across_starts(no_fd_leak, arun, vu):
    """INFLIGHT_SHMFD negotiated: the first start asks for the area after
    SET_FEATURES (so a packed ring gets the packed layout), a later start
    gives the same area back."""
    import asyncio
    import socket
    from emu.memory import allocate
    from emu.vhost_user.backend import Backend
    from emu.vhost_user.client import FrontendClient
    from emu.vhost_user.frontend import DEFAULT_FRONTEND_PROTOCOL_FEATURES, Frontend
    from emu.vhost_user.transport import BackendConnection
    from emu.vhost_user.wirelog import WireLog
    recs = []

    async def body():
        dev = vu.RecordingDevice(features=vu.NET_FEATURES | VF.RING_PACKED)
        backend = Backend(dev, wire_log=WireLog(recs.append))
        a, b = socket.socketpair()
        conn = BackendConnection(a, backend)
        pf = DEFAULT_FRONTEND_PROTOCOL_FEATURES | PF.INFLIGHT_SHMFD
        client = FrontendClient(sock=b, timeout=2.0, frontend=Frontend(protocol_features=pf))
        ram = allocate(1 << 20, "memfd", name="inflight-pair")
        kick = vu.eventfd()
        try:
            await client.connect()
            await client.handshake()
            desc, driver, device, _ = P.ring_layout(0x10000, 64)
            rings = [FrontendVring(0, 64, desc, driver, device, base=0x80008000, kick_fd=kick)]
            await client.start(PACKED_FEATURES, ram, rings)
            first = backend.inflight
            assert first.packed and first.queue_size == 64 and client.inflight is not None
            await client.stop()
            await client.start(PACKED_FEATURES, ram, rings)
            again = backend.inflight
            return first is not again and again.packed
        finally:
            await client.close()
            await asyncio.wait_for(conn.done.wait(), 2)
            ram.close()
            os.close(kick)
    assert arun(body())                  # SET_INFLIGHT_FD installed the kept area afresh
    sent = [r["request"] for r in recs if r.get("dir") == "rx" and "request" in r]
    inflight = [n for n in sent if "INFLIGHT" in n]
    assert inflight == ["GET_INFLIGHT_FD", "SET_INFLIGHT_FD"], sent
    assert sent.index("GET_INFLIGHT_FD") > sent.index("SET_FEATURES")
