"""Back-end state machine: every request a net device can meet."""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import socket

import pytest

from emu.memory import allocate
from emu.vhost_user.backend import IMPLEMENTED
from emu.vhost_user.errors import ProtocolViolation
from emu.vhost_user.messages import (BackendRequest as B, Config, FrontendRequest as F,
                                     Inflight, Iotlb, Log, MemoryRegion, ProtocolFeature as PF,
                                     Rarp, SingleMemRegion, U64, VirtioFeature as VF,
                                     VRING_F_LOG, VringFd, VringState)
from emu.vhost_user.shm import inflight_queue_size
from emu.vhost_user.wirelog import WireLog

PLAIN_PF = int(IMPLEMENTED) & ~PF.NET_MTU


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
        return False
    except OSError:
        return True


def _start_two_rings(h, ram):
    h.negotiate(PLAIN_PF)
    assert h.set_mem(ram) == 0
    h.setup_ring(ram, 0, 0x10000)
    h.setup_ring(ram, 1, 0x20000)
    assert h.device.running == {0, 1}


# -- negotiation -------------------------------------------------------------------------------
def test_features_offer_adds_protocol_features(harness):
    assert harness.u64(F.GET_FEATURES) == harness.device.features() | VF.PROTOCOL_FEATURES


def test_protocol_feature_offer_per_vhost_pci_mode(no_fd_leak, vu):
    for mode, extra in (("auto", PF.VHOST_PCI | PF.EMU_VHOST_PCI), ("seed", PF.VHOST_PCI),
                        ("off", 0)):
        dev = vu.RecordingDevice(protocol_features=PF.MQ | PF.REPLY_ACK)
        h = vu.Harness(dev, vhost_pci=mode)
        assert h.u64(F.GET_PROTOCOL_FEATURES) == PF.MQ | PF.REPLY_ACK | extra
        h.close()


def test_device_cannot_offer_unimplemented_protocol_features(no_fd_leak, vu):
    dev = vu.RecordingDevice(protocol_features=PF.MQ | PF.PAGEFAULT | PF.HOST_NOTIFIER | 1 << 40)
    h = vu.Harness(dev, vhost_pci="off")
    assert h.u64(F.GET_PROTOCOL_FEATURES) == PF.MQ
    h.close()


def test_set_protocol_features_must_be_a_subset(harness):
    harness.send(F.SET_PROTOCOL_FEATURES, U64(PF.MQ | 1 << 40))
    assert harness.refused() == ["SET_PROTOCOL_FEATURES"]
    assert harness.backend.protocol_features == 0
    harness.send(F.SET_PROTOCOL_FEATURES, U64(PF.MQ | PF.REPLY_ACK))
    assert harness.backend.protocol_features == PF.MQ | PF.REPLY_ACK


def test_set_features_must_be_a_subset(harness):
    harness.send(F.SET_PROTOCOL_FEATURES, U64(PF.REPLY_ACK))
    assert harness.ack(F.SET_FEATURES, U64(VF.VERSION_1 | VF.RING_PACKED)) == 1
    assert harness.backend.acked_features is None
    assert harness.ack(F.SET_FEATURES, U64(VF.VERSION_1 | VF.PROTOCOL_FEATURES)) == 0
    assert ("set_features", VF.VERSION_1 | VF.PROTOCOL_FEATURES) in harness.device.calls


def test_reply_ack_only_where_the_request_has_no_reply(harness):
    harness.send(F.SET_PROTOCOL_FEATURES, U64(PF.REPLY_ACK | PF.MQ))
    replies = harness.send(F.GET_FEATURES, need_reply=True)
    # NEED_REPLY on a request with its own reply: just that reply
    assert len(replies) == 1 and isinstance(replies[0].payload, U64)
    assert replies[0].payload.value & VF.PROTOCOL_FEATURES
    assert harness.send(F.SET_OWNER, need_reply=True)[0].payload == U64(0)
    assert harness.send(F.SET_OWNER) == []
    for r in harness.send(F.SET_OWNER, need_reply=True):
        assert r.flags == 0x5 and r.request == F.SET_OWNER


def test_get_queue_num_and_ring_count(no_fd_leak, vu):
    dev = vu.RecordingDevice(queue_num=4)
    h = vu.Harness(dev)
    assert h.u64(F.GET_QUEUE_NUM) == 4
    assert h.backend.max_queues == 8
    h.send(F.SET_VRING_ENABLE, VringState(7, 1))
    h.send(F.SET_VRING_ENABLE, VringState(8, 1))
    assert h.refused() == ["SET_VRING_ENABLE"]
    h.close()


# -- memory ------------------------------------------------------------------------------------
def test_set_mem_table_maps_the_peer_memory(harness, ram):
    harness.negotiate(PLAIN_PF)
    assert harness.set_mem(ram) == 0
    mem = harness.backend.memory
    assert harness.device.mem is mem
    ram.write(0x1234, b"from the front-end")
    host = mem.gpa_to_host(0x1234, 18)
    assert ctypes.string_at(host, 18) == b"from the front-end"
    assert mem.uaddr_to_gpa(ram.regions[0].uaddr + 0x1234) == 0x1234


def test_vring_setup_starts_the_ring_with_translated_addresses(harness, ram, vu):
    harness.negotiate(PLAIN_PF)
    harness.set_mem(ram)
    harness.send(F.SET_VRING_NUM, VringState(0, 256))
    harness.send(F.SET_VRING_BASE, VringState(0, 17))
    harness.send(F.SET_VRING_ADDR, harness.ring_addr(ram, 0, 0x10000, 256))
    assert harness.device.running == set()
    harness.send(F.SET_VRING_KICK, VringFd(0), (harness.eventfd(),))
    assert harness.device.running == {0}
    v = harness.backend.vrings[0]
    desc, avail, used = vu.ring_layout(0x10000, 256)
    assert (v.desc_gpa, v.avail_gpa, v.used_gpa) == (desc, avail, used)
    assert v.desc == harness.backend.memory.gpa_to_host(desc)
    assert v.used == harness.backend.memory.gpa_to_host(used)
    assert v.base == 17 and v.num == 256 and not v.polling
    assert harness.device.started_with[0]["base"] == 17


def test_ring_started_without_kick_fd_polls(harness, ram):
    harness.negotiate(PLAIN_PF)
    harness.set_mem(ram)
    harness.setup_ring(ram, 0, 0x10000, kick=False)
    harness.send(F.SET_VRING_KICK, VringFd(0, nofd=True))
    v = harness.backend.vrings[0]
    assert v.started and v.polling and v.kick_fd is None


def test_second_mem_table_while_rings_run(harness, ram):
    _start_two_rings(harness, ram)
    harness.device.stop_result = {0: 40, 1: 41}
    old_mem = harness.backend.memory
    old_desc = harness.backend.vrings[0].desc
    harness.device.calls.clear()
    assert harness.set_mem(ram) == 0
    names = harness.device.names()
    assert names == ["vring_stop", "vring_stop", "map", "memory_changed", "unmap",
                     "vring_start", "vring_start"]
    assert harness.device.calls[4][1] is old_mem and old_mem.closed
    new = harness.backend.memory
    v = harness.backend.vrings[0]
    assert v.desc != old_desc and v.desc == new.gpa_to_host(0x10000)
    assert harness.device.started_with[0]["base"] == 40
    assert harness.device.started_with[1]["base"] == 41


def test_mem_table_that_strands_a_running_ring_is_refused(harness, ram):
    _start_two_rings(harness, ram)
    small = allocate(0x10000, "memfd")
    try:
        # same front-end addresses, but only the first 64 KiB: ring 0 at 0x10000 is outside
        region = small.regions[0]
        region.uaddr = ram.regions[0].uaddr
        assert harness.set_mem(small) == 1
    finally:
        small.close()
    assert harness.refused() == ["SET_MEM_TABLE"]
    assert harness.device.running == {0, 1}
    assert harness.backend.memory.regions[0].size == ram.size


def test_add_and_remove_memory_regions(harness, no_fd_leak):
    harness.negotiate(PLAIN_PF)
    assert harness.u64(F.GET_MAX_MEM_SLOTS) == 8
    low, high = allocate(0x100000, "memfd"), allocate(0x100000, "memfd", gpa=0x40000000)
    try:
        for m in (low, high):
            r = m.regions[0]
            assert harness.ack(F.ADD_MEM_REG, SingleMemRegion(
                MemoryRegion(r.gpa, r.size, r.uaddr, 0)), (r.fd,)) == 0
        mem = harness.backend.memory
        assert [(r.gpa, r.size) for r in mem.regions] == [(0, 0x100000), (0x40000000, 0x100000)]
        high.write(0x40000010, b"high")
        assert ctypes.string_at(mem.gpa_to_host(0x40000010, 4), 4) == b"high"
        # a ring in the high region, running: that region cannot go
        harness.setup_ring(high, 0, 0x40010000)
        assert harness.device.running == {0}
        r = high.regions[0]
        spec = SingleMemRegion(MemoryRegion(r.gpa, r.size, r.uaddr, 0))
        assert harness.ack(F.REM_MEM_REG, spec) == 1
        # the low one can, with the ring kept running across it
        r = low.regions[0]
        assert harness.ack(F.REM_MEM_REG, SingleMemRegion(MemoryRegion(r.gpa, r.size, r.uaddr, 0))) == 0
        assert [(r.gpa, r.size) for r in harness.backend.memory.regions] == [(0x40000000, 0x100000)]
        assert harness.device.running == {0}
        assert len(harness.mapper.live) == 1
        assert harness.ack(F.REM_MEM_REG, SingleMemRegion(MemoryRegion(0, 0x100000, r.uaddr, 0))) == 1
    finally:
        low.close()
        high.close()


def test_add_mem_reg_limits(no_fd_leak, vu):
    h = vu.Harness(max_regions=2)
    h.negotiate(PLAIN_PF)
    mems = [allocate(0x10000, "memfd", gpa=i << 20) for i in range(3)]
    try:
        acks = [h.ack(F.ADD_MEM_REG, SingleMemRegion(
            MemoryRegion(m.regions[0].gpa, 0x10000, m.regions[0].uaddr, 0)), (m.regions[0].fd,))
            for m in mems]
        assert acks == [0, 0, 1]                       # no third slot
        # overlapping an existing region in guest-physical space
        h.send(F.REM_MEM_REG, SingleMemRegion(MemoryRegion(1 << 20, 0x10000, mems[1].regions[0].uaddr, 0)))
        clash = SingleMemRegion(MemoryRegion(0x8000, 0x10000, mems[2].regions[0].uaddr, 0))
        assert h.ack(F.ADD_MEM_REG, clash, (mems[2].regions[0].fd,)) == 1
    finally:
        h.close()
        for m in mems:
            m.close()
    assert not h.mapper.live


def test_removing_regions_of_one_table_unmaps_it_when_all_are_gone(harness, no_fd_leak):
    harness.negotiate(PLAIN_PF)
    ram = allocate(0x40000, "memfd")
    r = ram.regions[0]
    try:
        from emu.vhost_user.messages import MemoryTable
        table = MemoryTable((MemoryRegion(0, 0x20000, r.uaddr, 0),
                             MemoryRegion(0x100000, 0x20000, r.uaddr + 0x20000, 0x20000)))
        assert harness.send(F.SET_MEM_TABLE, table, (r.fd, r.fd), need_reply=True)[0].payload.value == 0
        harness.ack(F.REM_MEM_REG, SingleMemRegion(table.regions[0]))
        assert [x.gpa for x in harness.backend.memory.regions] == [0x100000]
        assert len(harness.mapper.live) == 1               # the table still holds region 2
        harness.ack(F.REM_MEM_REG, SingleMemRegion(table.regions[1]))
        assert harness.backend.memory is None and not harness.mapper.live
    finally:
        ram.close()


# -- rings ---------------------------------------------------------------------------------------
def test_vring_enable_before_the_ring_exists_is_kept(harness, ram):
    """QEMU sends the enables at init and never repeats them."""
    harness.negotiate(PLAIN_PF)
    harness.send(F.SET_VRING_ENABLE, VringState(0, 1))
    harness.send(F.SET_VRING_ENABLE, VringState(1, 1))
    assert ("vring_enable", 0, True) in harness.device.calls
    harness.set_mem(ram)
    harness.setup_ring(ram, 0, 0x10000)
    v = harness.backend.vrings[0]
    assert v.started and v.enabled


def test_rings_start_disabled_with_protocol_features_enabled_without(no_fd_leak, ram, vu):
    h = vu.Harness()
    h.negotiate(PLAIN_PF)
    h.set_mem(ram)
    h.setup_ring(ram, 0, 0x10000)
    assert h.backend.vrings[0].started and not h.backend.vrings[0].enabled
    h.close()
    h = vu.Harness()
    h.send(F.SET_OWNER)
    h.send(F.SET_FEATURES, U64(VF.VERSION_1))              # no PROTOCOL_FEATURES
    h.set_mem(ram, need_reply=False)
    h.setup_ring(ram, 0, 0x10000)
    assert h.backend.vrings[0].started and h.backend.vrings[0].enabled
    h.close()


def test_get_vring_base_stops_the_ring(harness, ram):
    _start_two_rings(harness, ram)
    harness.device.stop_result = {1: 3392}
    v = harness.backend.vrings[1]
    kick, call = v.kick_fd, v.call_fd
    reply = harness.reply(F.GET_VRING_BASE, VringState(1, 0))
    assert reply.payload == VringState(1, 3392)
    assert harness.device.running == {0}
    assert not v.started and not v.ready and _closed(kick) and _closed(call)
    # set up again with the returned base: it starts from there
    harness.setup_ring(ram, 1, 0x20000, base=3392)
    assert harness.device.started_with[1]["base"] == 3392


def test_get_vring_base_of_a_ring_never_started(harness):
    harness.negotiate(PLAIN_PF)
    harness.send(F.SET_VRING_BASE, VringState(0, 99))
    assert harness.reply(F.GET_VRING_BASE, VringState(0, 0)).payload == VringState(0, 99)
    assert "vring_stop" not in harness.device.names()


def test_replacing_vring_fds_closes_the_old_ones(harness, ram):
    _start_two_rings(harness, ram)
    v = harness.backend.vrings[0]
    old_call, old_kick = v.call_fd, v.kick_fd
    harness.device.calls.clear()
    harness.send(F.SET_VRING_CALL, VringFd(0), (harness.eventfd(),))
    assert _closed(old_call) and v.call_fd != old_call
    assert harness.device.calls == [("vring_call_changed", 0, v.call_fd)]
    harness.send(F.SET_VRING_KICK, VringFd(0), (harness.eventfd(),))
    assert _closed(old_kick)
    assert harness.device.names() == ["vring_call_changed", "vring_stop", "vring_start"]
    harness.send(F.SET_VRING_ERR, VringFd(0), (harness.eventfd(),))
    err = v.err_fd
    harness.send(F.SET_VRING_ERR, VringFd(0, nofd=True))
    assert v.err_fd is None and _closed(err)
    harness.send(F.SET_VRING_CALL, VringFd(0, nofd=True))
    assert v.call_fd is None


def test_set_vring_addr_on_a_running_ring_restarts_it(harness, ram):
    """QEMU re-sends SET_VRING_ADDR with VHOST_VRING_F_LOG when migration starts."""
    _start_two_rings(harness, ram)
    harness.device.calls.clear()
    addr = harness.ring_addr(ram, 0, 0x10000, 256, flags=VRING_F_LOG, log=0x10000 + 0x2000)
    harness.send(F.SET_VRING_ADDR, addr)
    assert harness.device.names() == ["vring_stop", "vring_start"]
    v = harness.backend.vrings[0]
    assert v.log_used and v.log_guest_addr == 0x12000


def test_ring_size_and_base_cannot_change_while_running(harness, ram):
    _start_two_rings(harness, ram)
    harness.send(F.SET_VRING_NUM, VringState(0, 128))
    harness.send(F.SET_VRING_BASE, VringState(0, 5))
    assert harness.refused() == ["SET_VRING_NUM", "SET_VRING_BASE"]
    assert harness.backend.vrings[0].num == 256


# -- net, config, status --------------------------------------------------------------------
def test_net_set_mtu_and_rarp(harness):
    harness.negotiate(PLAIN_PF | PF.NET_MTU)
    assert not harness.backend.vhost_pci_active
    assert harness.ack(F.NET_SET_MTU, U64(9000)) == 0
    assert harness.ack(F.NET_SET_MTU, U64(20)) == 1
    harness.send(F.SEND_RARP, Rarp(bytes.fromhex("525400123456")))
    assert ("set_mtu", 9000) in harness.device.calls
    assert ("send_rarp", bytes.fromhex("525400123456")) in harness.device.calls


def test_config_space(harness):
    harness.negotiate(PLAIN_PF)
    reply = harness.reply(F.GET_CONFIG, Config(8, 6, 0, bytes(6)))
    assert reply.payload == Config(8, 6, 0, bytes(range(8, 14)))
    harness.send(F.SET_CONFIG, Config(0, 2, 0, b"\xaa\xbb"))
    assert ("set_config", 0, b"\xaa\xbb", 0) in harness.device.calls
    # past the 256-byte config space: libvhost-user's error answer (size 0)
    bad = harness.reply(F.GET_CONFIG, Config(250, 12, 0, bytes(12)))
    assert bad.payload == Config(250, 0, 0, b"")


def test_status(harness):
    harness.negotiate(PLAIN_PF)
    assert harness.ack(F.SET_STATUS, U64(0xB)) == 0
    assert harness.u64(F.GET_STATUS) == 0xB
    assert harness.ack(F.SET_STATUS, U64(0x100)) == 1


def test_reset_device_and_reset_owner(harness, ram):
    _start_two_rings(harness, ram)
    harness.device.calls.clear()
    harness.send(F.RESET_DEVICE)
    assert harness.device.names() == ["vring_stop", "vring_stop", "memory_changed", "unmap", "reset"]
    assert harness.backend.memory is None and harness.backend.acked_features is None
    assert harness.backend.protocol_features == PLAIN_PF
    assert not any(v.started or v.enabled or v.kick_fd for v in harness.backend.vrings)
    # and it can be set up again
    harness.send(F.SET_FEATURES, U64(VF.VERSION_1 | VF.PROTOCOL_FEATURES))
    harness.set_mem(ram)
    harness.setup_ring(ram, 0, 0x10000)
    assert harness.device.running == {0}
    harness.send(F.RESET_OWNER)
    assert not harness.backend.owner and harness.device.running == set()


# -- back-end request channel --------------------------------------------------------------------
def test_backend_req_fd(harness):
    harness.negotiate(PLAIN_PF)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        assert harness.ack(F.SET_BACKEND_REQ_FD, None, (b.fileno(),)) == 0
        first = harness.backend.backend_req_fd
        assert first is not None and first != b.fileno()
        assert harness.backend.backend_request(B.CONFIG_CHANGE_MSG)
        assert [m.request for m in harness.backend.channel_outgoing()] == [B.CONFIG_CHANGE_MSG]
        harness.ack(F.SET_BACKEND_REQ_FD, None, (d.fileno(),))
        assert _closed(first)
        # not a socket: refused, the old channel stays
        assert harness.ack(F.SET_BACKEND_REQ_FD, None, (harness.eventfd(),)) == 1
        assert harness.backend.backend_req_fd is not None
    finally:
        for s in (a, b, c, d):
            s.close()


def test_backend_req_fd_needs_its_feature(harness):
    harness.negotiate(PF.MQ | PF.REPLY_ACK)
    a, b = socket.socketpair()
    try:
        assert harness.ack(F.SET_BACKEND_REQ_FD, None, (b.fileno(),)) == 1
        assert harness.backend.backend_req_fd is None
        assert not harness.backend.backend_request(B.CONFIG_CHANGE_MSG)
    finally:
        a.close()
        b.close()


# -- dirty log -------------------------------------------------------------------------------------
def test_dirty_log(harness, ram):
    harness.negotiate(PLAIN_PF)
    harness.set_mem(ram)
    fd = os.memfd_create("log", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 8192)
        reply = harness.reply(F.SET_LOG_BASE, Log(4096, 4096), (fd,))
        assert reply.payload == U64(0)
        log = harness.device.log
        assert log is harness.backend.log and log.size == 4096
        log.mark(0x5000, 0x2001)              # pages 5, 6, 7
        with mmap.mmap(fd, 8192) as m:
            assert m[4096] == 0xE0 and m[4097] == 0
        with pytest.raises(ProtocolViolation):
            log.mark(4096 * 8 * 4096, 1)      # page past the log
        harness.send(F.SET_LOG_FD, None, (harness.eventfd(),))
        assert harness.backend.log_fd is not None
    finally:
        os.close(fd)


# -- inflight ----------------------------------------------------------------------------------------
def test_inflight_fd_hand_out_and_resume(harness, ram, vu):
    harness.negotiate(PLAIN_PF)
    reply = harness.reply(F.GET_INFLIGHT_FD, Inflight(0, 0, 2, 256))
    p = reply.payload
    assert (p.num_queues, p.queue_size, p.mmap_offset) == (2, 256, 0)
    assert p.mmap_size == 2 * inflight_queue_size(256) == 2 * 4160
    (fd,) = reply.fds
    assert fd == harness.backend.inflight.fd
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
    q1 = harness.backend.inflight.queue_addr(1)
    assert harness.backend.vrings[1].inflight == q1
    assert int.from_bytes(ctypes.string_at(q1 + 10, 2), "little") == 256   # desc_num
    ctypes.memmove(q1 + 16, b"\x01", 1)                                       # desc 0 inflight
    harness.set_mem(ram)
    harness.setup_ring(ram, 1, 0x20000)
    assert harness.device.started_with[1]["inflight"] == q1
    # a restarted back-end gets the same area back from the front-end
    keep = os.dup(fd)
    h2 = vu.Harness()
    try:
        h2.negotiate(PLAIN_PF)
        assert h2.ack(F.SET_INFLIGHT_FD, p, (keep,)) == 0
        addr = h2.backend.vrings[1].inflight
        assert addr is not None and addr != q1
        assert ctypes.string_at(addr + 16, 1) == b"\x01"
    finally:
        h2.close()
        os.close(keep)


def test_inflight_limits(harness):
    harness.negotiate(PLAIN_PF)
    with pytest.raises(ProtocolViolation, match="queues"):
        harness.send(F.GET_INFLIGHT_FD, Inflight(0, 0, 3, 256))     # device has 2 rings
    fd = os.memfd_create("inflight", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4096)
    try:
        assert harness.ack(F.SET_INFLIGHT_FD, Inflight(4096, 0, 2, 256), (fd,)) == 1   # too small
        assert harness.ack(F.SET_INFLIGHT_FD, Inflight(1 << 20, 0, 1, 100), (fd,)) == 1
        assert harness.backend.inflight is None
    finally:
        os.close(fd)


# -- unsupported and refused requests -----------------------------------------------------------
def test_unsupported_request_gets_a_defined_answer(harness):
    harness.negotiate(PLAIN_PF)
    assert harness.ack(F.IOTLB_MSG, Iotlb(0, 0x1000, 0, 3, 2)) == 1
    assert harness.send(F.IOTLB_MSG, Iotlb(0, 0x1000, 0, 3, 2)) == []
    assert harness.refused() == ["IOTLB_MSG", "IOTLB_MSG"]
    assert harness.u64(F.GET_QUEUE_NUM) == 1          # the connection goes on
    # a status-reply request not negotiated: answered with a failure status
    assert harness.reply(F.CHECK_DEVICE_STATE).payload == U64(1)


def test_refusing_a_request_whose_reply_cannot_be_given_raises(harness):
    harness.negotiate(PLAIN_PF)
    with pytest.raises(ProtocolViolation, match="index"):
        harness.send(F.GET_VRING_BASE, VringState(2, 0))


def test_close_releases_everything(harness, ram):
    _start_two_rings(harness, ram)
    fds = [v.kick_fd for v in harness.backend.vrings] + [v.call_fd for v in harness.backend.vrings]
    harness.device.calls.clear()
    harness.backend.close()
    assert harness.device.names() == ["vring_stop", "vring_stop", "memory_changed", "unmap",
                                      "disconnected"]
    assert all(_closed(fd) for fd in fds)
    harness.backend.close()          # idempotent


def test_wire_log_records_both_directions(no_fd_leak, vu):
    records = []
    h = vu.Harness(wire_log=WireLog(records.append))
    h.u64(F.GET_FEATURES)
    h.send(F.SET_VRING_NUM, VringState(9, 3))
    h.close()
    assert [(r.get("dir"), r.get("request")) for r in records[:2]] == [
        ("rx", "GET_FEATURES"), ("tx", "GET_FEATURES")]
    assert records[1]["flags"] == 5 and records[1]["size"] == 8
    assert records[1]["payload"] == {"value": hex(h.backend.offered_features())}
    assert records[2]["payload"] == {"index": 9, "num": 3}
    assert "out of range" in records[3]["error"]


def test_push_features_is_silent_on_a_plain_connection(harness):
    harness.negotiate(PLAIN_PF | PF.NET_MTU)              # bit 4 without the marker: NET_MTU
    harness.backend.push_features(VF.VERSION_1)
    assert harness.backend.outgoing() == []
    assert harness.send(F.GET_FEATURES)[0].is_reply


def test_seed_requests_on_a_seed_connection(no_fd_leak, vu):
    """A seed-era master: bit 4 alone, then SET_DEVICE_ID (20) and SET_VHOST_PCI (21)."""
    from emu.vhost_user.messages import SeedRequest
    dev = vu.RecordingDevice()
    started = []
    dev.vhost_pci_started = started.append
    h = vu.Harness(dev, vhost_pci="seed")
    assert not h.backend.seed_dialect
    h.send(F.SET_PROTOCOL_FEATURES, U64(PF.VHOST_PCI | PF.REPLY_ACK))
    assert h.backend.vhost_pci_active and h.backend.seed_dialect
    assert h.ack(SeedRequest.SET_DEVICE_ID, U64(1)) == 0
    assert h.ack(SeedRequest.SET_VHOST_PCI, U64(0)) == 0
    assert h.ack(SeedRequest.SET_VHOST_PCI, U64(7)) == 1
    assert h.backend.peer_device_id == 1 and h.backend.vhost_pci_started and started == [True]
    h.close()


def test_seed_ids_mean_todays_requests_elsewhere(no_fd_leak, vu):
    h = vu.Harness(vhost_pci="auto")
    h.send(F.SET_PROTOCOL_FEATURES, U64(PF.VHOST_PCI | PF.EMU_VHOST_PCI | PF.REPLY_ACK))
    assert h.backend.vhost_pci_active and not h.backend.seed_dialect
    assert h.ack(F.NET_SET_MTU, U64(1500)) == 1           # bit 4 is VHOST_PCI, not NET_MTU
    h.close()


class WindowMapper:
    """How the vhost-pci device plugs its peer-memory window in: the window
    holds one table, so map() releases the previous one (every ring is
    stopped by then) and unmap() only releases the table still mapped."""

    def __init__(self, window):
        self.window = window
        self.current = None

    def map(self, specs, fds):
        if self.window.mapped:
            self.window.unmap()
        self.current = self.window.map_table(specs, fds)
        return self.current

    def unmap(self, mem):
        if mem is self.current:
            self.window.unmap()
            self.current = None


def test_memory_mapper_can_be_a_peer_window(no_fd_leak, ram, vu):
    from emu.window import PeerWindow
    window = PeerWindow(64 << 20)
    dev = vu.RecordingDevice()
    h = vu.Harness(dev)
    h.backend.mapper = WindowMapper(window)
    try:
        h.negotiate(PLAIN_PF)
        assert h.set_mem(ram) == 0
        h.setup_ring(ram, 0, 0x10000)
        v = h.backend.vrings[0]
        assert window.base <= v.desc < window.base + window.size
        ram.write(0x10000, b"via the window")
        assert ctypes.string_at(v.desc, 14) == b"via the window"
        assert h.set_mem(ram) == 0                      # re-map while the ring runs
        assert dev.running == {0} and window.base <= v.desc < window.base + window.size
        assert ctypes.string_at(v.desc, 14) == b"via the window"
        h.close()
        assert not window.mapped
    finally:
        window.close()
