"""The engine's virtio-net data path (``emu/_ring_net.c``) against the other
end of a stream socket: QEMU's framing both ways and every edge of it, the
refusals QEMU makes, back-pressure without loss, the link going down, the
rings pause handshake, frames injected between whole frames, and the hub.

The peer here is the test itself on the other end of a socketpair; the
machine-level tests (tests/machine/test_socket_netdev.py) put a separate
peer process there."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from emu import ring
from emu.spec import qemu_net, virtio_net as N

from .model import DESC_F_NEXT
from .net_rig import MiB, NetRig, StreamReader, frame, framed, wait_until
from .rig import feats, signals

NET_BUFSIZE = qemu_net.NET_BUFSIZE


@pytest.fixture
def rig():
    r = NetRig()
    yield r
    r.close()


def test_frames_both_ways_with_qemus_framing(rig):
    frames = [frame(i, 60 + i) for i in range(40)]
    assert rig.send(frames) == 40
    assert rig.reader.collect(40) == frames           # header stripped, length first
    rig.rx_refill()
    back = [frame(100 + i, 1514) for i in range(30)]
    rig.peer_send(framed(back))
    assert rig.rx(30) == back
    st = rig.port.stats()
    assert (st["tx_frames"], st["rx_frames"], st["link"]) == (40, 30, "up")
    assert st["tx_bytes"] == sum(map(len, frames)) and st["rx_bytes"] == sum(map(len, back))
    assert signals(rig.call_tx) and signals(rig.call_rx)     # interrupts for both rings


def test_the_raw_bytes_on_the_stream(rig):
    rig.send([b"TEST"])
    rig.reader.read_available(5)
    wait_until(lambda: rig.reader.buf or rig.reader.read_available(0.05), what="bytes")
    assert rig.reader.buf == b"\x00\x00\x00\x04TEST"      # big-endian length, then the frame


def test_a_frame_split_byte_by_byte(rig):
    rig.rx_refill()
    data = framed([frame(1, 200), frame(2, 7), frame(3, 1400)])
    for i in range(len(data)):
        rig.peer_send(data[i:i + 1])
        if i % 97 == 0:
            time.sleep(0.001)          # let the job read mid-frame, and mid-length
    assert rig.rx(3) == [frame(1, 200), frame(2, 7), frame(3, 1400)]
    assert rig.port.stats()["partial_reads"] > 0


def test_zero_length_frames_are_delivered_empty(rig):
    """QEMU's net_fill_rstate hands a 0-byte frame on; the guest gets a
    buffer with only the virtio-net header."""
    rig.rx_refill()
    rig.peer_send(framed([b"", frame(5), b""]))
    assert rig.rx(3) == [b"", frame(5), b""]


def test_a_net_bufsize_frame_from_the_peer_fills_merged_buffers(rig):
    big = bytes(i & 0xFF for i in range(NET_BUFSIZE))
    rig.rx_refill()
    rig.peer_send(framed([big, frame(9)]))
    assert rig.rx(2) == [big, frame(9)]              # 35 merged 2 KiB buffers, then the next


def test_without_mrg_rxbuf_a_frame_too_big_for_a_buffer_is_dropped_and_the_next_goes():
    r = NetRig(features=feats(mrg=False))
    try:
        r.rx_refill()
        r.peer_send(framed([bytes(3000), frame(1), frame(2)]))
        assert r.rx(2) == [frame(1), frame(2)]
        st = r.port.stats()
        assert st["rx_dropped"] == 1 and st["link"] == "up"
    finally:
        r.close()


@pytest.mark.parametrize("length", [NET_BUFSIZE + 1, 0xFFFFFFFF, 0x80000000])
def test_a_length_over_net_bufsize_ends_the_stream(rig, length):
    """QEMU: "serious error: oversized packet received, connection
    terminated" -- whatever garbage follows is never delivered."""
    rig.rx_refill()
    rig.peer_send(framed([frame(1)]) + struct.pack(">I", length) + b"garbage" * 100)
    assert rig.rx(1) == [frame(1)]
    wait_until(lambda: rig.port.link == "oversize", what="the link to go down")
    assert rig.port.consume_event()
    st = rig.port.stats()
    assert st["rx_oversize"] == 1 and st["rx_frames"] == 1
    rig.peer_send(framed([frame(2)]))                  # not read any more
    time.sleep(0.1)
    assert rig.drv_rx.rx_recv() == []


def test_eof_mid_frame_takes_the_link_down_and_delivers_nothing_of_it(rig):
    rig.rx_refill()
    rig.peer_send(framed([frame(1)]) + framed([frame(2, 500)])[:300])
    rig.peer.shutdown(socket.SHUT_WR)
    assert rig.rx(1) == [frame(1)]
    wait_until(lambda: rig.port.link == "eof", what="EOF")
    assert rig.port.stats()["eof"] == 1
    assert rig.drv_rx.rx_recv() == []


def test_link_down_drops_tx_completed_then_a_new_socket_serves(rig):
    rig.peer.close()
    rig.send([frame(1)])                               # the write sees the peer gone
    wait_until(lambda: rig.port.link in ("error", "eof"), what="the link to go down")
    rig.reclaim()
    rig.send([frame(i) for i in range(5)])              # dropped, chains given back
    wait_until(lambda: rig.port.stats()["tx_dropped"] >= 5, what="drops")
    wait_until(lambda: rig.drv_tx.reclaim().packets or rig.drv_tx.num_free == rig.drv_tx.slots,
               what="the chains back")
    fd = rig.port.take_socket()
    os.close(fd)
    ours, rig.peer = socket.socketpair()
    rig.reader = StreamReader(rig.peer)
    rig.port.set_socket(ours.detach())
    assert rig.port.link == "up"
    rig.send([frame(42)])
    assert rig.reader.collect(1) == [frame(42)]


def test_a_peer_that_stops_reading_stops_tx_without_a_half_written_frame():
    r = NetRig()
    try:
        r.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent, n = [], 0
        deadline = time.monotonic() + 20
        last, still = -1, 0
        # keep the ring full until the socket and the staging buffer are full
        # and the job takes no more chains
        while still < 20:
            assert time.monotonic() < deadline, r.port.stats()
            r.reclaim()
            batch = [frame(n + i, 1500) for i in range(min(64, r.drv_tx.num_free))]
            n += r.send(batch)
            sent += batch
            taken = r.port.stats()["tx_frames"]
            still = still + 1 if taken == last and not r.drv_tx.num_free else 0
            last = taken
            time.sleep(0.01)
        st = r.port.stats()
        assert st["write_blocked"] > 0 and st["staged_tx_bytes"] > 0   # waiting for POLLOUT
        assert st["tx_frames"] < len(sent)            # the rest waits in the guest's ring
        got = r.reader.collect(len(sent), timeout=30)         # the peer reads again
        assert got == sent[:len(got)] and len(got) == len(sent)   # whole, in order
        assert r.port.stats()["partial_writes"] + r.port.stats()["write_blocked"] > 0
    finally:
        r.close()


def test_with_no_rx_buffers_frames_wait_in_the_socket_and_none_is_lost(rig):
    frames = [frame(i, 1000) for i in range(600)]          # more than the ring holds
    sender = threading.Thread(target=rig.peer_send, args=(framed(frames),))
    sender.start()
    wait_until(lambda: rig.port.stats()["rx_waits"] >= 1, what="the job to wait for buffers")
    rig.rx_refill()                                        # the driver adds buffers: kick
    assert rig.rx(600) == frames
    sender.join(10)
    assert rig.port.stats()["rx_dropped"] == 0


def test_rings_paused_nothing_is_lost_and_staged_bytes_still_go():
    r = NetRig()
    try:
        r.rx_refill()
        r.port.pause_rings()
        assert not r.port.p.in_rings
        r.peer_send(framed([frame(1), frame(2)]))           # arrives while stopped
        r.send([frame(3)])
        assert r.port.inject(qemu_net.announce_frame(bytes(6)))   # the socket side runs on
        assert r.reader.collect(1) == [qemu_net.announce_frame(bytes(6))]
        time.sleep(0.1)
        assert r.drv_rx.rx_recv() == [] and r.port.stats()["tx_frames"] == 0
        r.port.resume_rings()
        assert r.rx(2) == [frame(1), frame(2)]
        assert r.reader.collect(1) == [frame(3)]
    finally:
        r.close()


def test_detach_drops_a_held_frame_and_the_stream_stays_in_step():
    r = NetRig()
    try:
        r.peer_send(framed([frame(1), frame(2)]))           # no RX buffers yet: held
        wait_until(lambda: r.port.p.rx_held, what="a held frame")
        r.port.pause_rings()
        r.port.detach()                                     # a driver reset
        assert r.port.stats()["rx_dropped"] == 1
        r.port.attach(r.dev_tx, r.dev_rx)
        r.port.resume_rings()
        r.rx_refill()
        assert r.rx(1) == [frame(2)]
    finally:
        r.close()


def test_injected_frames_never_land_inside_another_frame():
    r = NetRig()
    try:
        announce = qemu_net.announce_frame(bytes.fromhex("525400123456"))
        stop = threading.Event()

        def injector():
            while not stop.is_set():
                r.port.inject(announce)
                time.sleep(0.0005)
        t = threading.Thread(target=injector)
        t.start()
        sent, got = [], []
        for k in range(40):
            r.reclaim()
            batch = [frame(k * 100 + i, 300 + k) for i in range(min(100, r.drv_tx.num_free))]
            r.send(batch)
            sent += batch
            r.reader.read_available(0.01)
            got += r.reader.frames()
        stop.set()
        t.join()
        deadline = time.monotonic() + 20
        while len([f for f in got if f != announce]) < len(sent):
            assert time.monotonic() < deadline
            r.reader.read_available(0.05)
            got += r.reader.frames()
        assert [f for f in got if f != announce] == sent          # every frame whole, in order
        assert got.count(announce) == r.port.stats()["injected"] > 0
    finally:
        r.close()


# -- what the guest may send: QEMU's refusals, the engine's checks -----------------------------
def _model_rig(**kw) -> NetRig:
    return NetRig(model=True, **kw)


def _kick(r: NetRig) -> None:
    r.txm.publish()
    os.eventfd_write(r.kick_tx, 1)


def _wait_used(r: NetRig, n: int) -> list[tuple[int, int]]:
    got: list = []
    wait_until(lambda: got.extend(r.txm.used()) or len(got) >= n, what=f"{n} used elements")
    return got


def test_large_tx_chains_are_refused_as_qemu_refuses_them_and_good_ones_follow():
    """qos-test's large_tx: 65 descriptors over one buffer of UINT_MAX/64
    (a chain whose length overflows 32 bits) or NET_BUFSIZE/64 bytes (a
    frame over NET_BUFSIZE): each chain comes back with length 0, counted."""
    r = _model_rig(ram_size=80 * MiB)
    try:
        hdr = N.hdr_len(r.features)
        heads = []
        for size in (0xFFFFFFFF // 64, NET_BUFSIZE // 64):
            buf = 0x800000
            heads.append(r.txm.add_chain([(buf, size, 0)] * 65))
        good_buf = 0x600000
        r.mm.write(good_buf, bytes(hdr) + frame(7))
        heads.append(r.txm.add_chain([(good_buf, hdr + 64, 0)]))
        _kick(r)
        assert _wait_used(r, 3) == [(h, 0) for h in heads]
        assert r.reader.collect(1) == [frame(7)]
        st = r.port.stats()
        assert (st["tx_oversize"], st["tx_frames"], st["link"]) == (2, 1, "up")
        assert r.dev_tx.stats()["errors"] == 1           # the 2^32 one broke the spec rule
    finally:
        r.close()


def test_a_frame_of_exactly_net_bufsize_goes_out():
    r = _model_rig(ram_size=32 * MiB)
    try:
        hdr = N.hdr_len(r.features)
        big = bytes(i % 251 for i in range(NET_BUFSIZE))
        r.mm.write(0x800000, bytes(hdr) + big)
        h = r.txm.add_chain([(0x800000, hdr + NET_BUFSIZE, 0)])
        _kick(r)
        assert _wait_used(r, 1) == [(h, 0)]
        assert r.reader.collect(1) == [big]
    finally:
        r.close()


def test_bad_tx_chains_are_counted_returned_and_the_next_goes():
    r = _model_rig()
    try:
        hdr = N.hdr_len(r.features)
        bad = [r.txm.add_chain([(1 << 40, 100, 0)]),            # outside guest RAM
               r.txm.add_chain([(0x600000, hdr - 2, 0)]),       # shorter than the header
               r.txm.add_chain([(0x600000, 64, 2)])]            # device-writable in TX
        r.mm.write(0x610000, bytes(hdr) + frame(3))
        good = r.txm.add_chain([(0x610000, hdr + 64, 0)])
        _kick(r)
        assert _wait_used(r, 4) == [(h, 0) for h in bad + [good]]
        assert r.reader.collect(1) == [frame(3)]
        assert r.port.stats()["tx_errors"] == 3
    finally:
        r.close()


def test_a_chain_split_over_descriptors_is_one_frame():
    r = _model_rig()
    try:
        hdr = N.hdr_len(r.features)
        data = frame(11, 500)
        r.mm.write(0x600000, bytes(hdr))
        r.mm.write(0x610000, data[:100])
        r.mm.write(0x620000, data[100:])
        h = r.txm.add_chain([(0x600000, hdr, 0), (0x610000, 100, 0), (0x620000, 400, 0)])
        _kick(r)
        assert _wait_used(r, 1) == [(h, 0)]
        assert r.reader.collect(1) == [data]
    finally:
        r.close()


def test_an_idle_job_sleeps():
    r = NetRig()
    try:
        r.send([frame(1)])
        r.reader.collect(1)
        wait_until(lambda: r.pump.sleeps > 0, what="the job to sleep")
        sleeps, wakeups = r.pump.sleeps, r.port.stats()["wakeups"]
        time.sleep(0.5)
        # asleep in poll(), woken only by its 50 ms timeout: no fd was ready
        assert r.pump.sleeps - sleeps <= 0.5 / 0.05 + 2
        assert r.port.stats()["wakeups"] == wakeups
        r.send([frame(2)])                            # and a kick wakes it at once
        assert r.reader.collect(1, timeout=5) == [frame(2)]
    finally:
        r.close()


# -- hubs ---------------------------------------------------------------------------------------
class HubRig:
    def __init__(self, ports: int):
        self.rigs = [NetRig(start=False) for _ in range(ports)]
        self.hub = ring.Hub("h")
        for r in self.rigs:
            fd = r.port.release()
            os.close(fd)
            r.pump = ring.Pump("interrupt", name="unused")
            self.hub.add_port(r.port)
        self.pump = ring.Pump("interrupt", name="hub")
        self.pump.add_hub(self.hub)
        self.pump.start()

    def close(self) -> None:
        self.pump.stop()
        for r in self.rigs:
            r.port.close = lambda: None
            r.close()
        self.hub.close()


def test_a_hub_moves_frames_between_its_ports():
    h = HubRig(3)
    a, b, c = h.rigs
    try:
        for r in h.rigs:
            r.rx_refill()
        a.send([frame(1), frame(2)])
        assert b.rx(2) == [frame(1), frame(2)] and c.rx(2) == [frame(1), frame(2)]
        c.send([frame(3)])
        assert a.rx(1) == [frame(3)] and b.rx(1) == [frame(3)]
        assert a.drv_rx.rx_recv() == [] and c.drv_rx.rx_recv() == []    # not to the sender
        assert a.port.stats()["tx_frames"] == 2 and b.port.stats()["rx_frames"] == 3
    finally:
        h.close()


def test_a_lone_hub_port_drops_and_gives_every_chain_back():
    h = HubRig(1)
    (a,) = h.rigs
    try:
        a.send([frame(i) for i in range(10)])
        wait_until(lambda: a.port.stats()["tx_dropped"] == 10, what="drops")
        wait_until(lambda: a.drv_tx.reclaim().packets or a.drv_tx.num_free == a.drv_tx.slots,
                   what="the chains back")
    finally:
        h.close()
