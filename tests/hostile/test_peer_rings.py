"""Descriptor-chain attacks from the peer: VM1's rings, read and written
by VM2's copy loop through the vhost-pci window (emu VM2 process, echo app).

The hostile VM1 is scripted (evil_frontend.EchoPeer): it sets up its RX
ring 0 and TX ring 1 correctly, proves a frame makes the round trip, then
writes one bad chain (or index) and kicks.  VM2 must complete the bad
chain empty, count it on the peer queue (query-emu-stats: vp0 queues
peer1/peer0 ``errors`` and ``last_error``), echo the next good frame, and
keep serving VM1 on its other device -- nothing outside the peer's regions
is touched (the peer's memory is checked around the bad chain; the
engine's own guard-page tests are tests/ring/test_ring_hostile.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from .conftest import Expect
from emu.vhost_user.messages import VirtioFeature as VF

from .evil_frontend import FEATURES, HDR, INDIRECT, NEXT, WRITE, EchoPeer

MiB = 1 << 20
NUM = 64


@dataclass
class RingCase:
    id: str
    row: int
    error: str                       # engine error name expected in last_error
    post: Callable[[EchoPeer], int]  # writes the bad chain(s), returns the head
    queue: str = "peer1"             # peer1 = VM1's TX ring, peer0 = its RX ring
    peer_kw: dict | None = None


def _frame_buf(p: EchoPeer, size: int = 64) -> int:
    buf = p.ram.alloc(HDR + size)
    p.ram.write(buf, bytes(HDR) + p.frame(0xBAD, size))
    return buf


def tx(descs_fn):
    """A bad TX chain: ``descs_fn(peer, slots, buf)`` -> descriptors; head = slots[0]."""
    def post(p: EchoPeer) -> int:
        slots = p.descs(4)
        buf = _frame_buf(p)
        p.post_chain(descs_fn(p, slots, buf), slots[0])
        return slots[0]
    return post


def table(p: EchoPeer, entries) -> int:
    at = p.ram.alloc(16 * max(len(entries), 1), 16)
    for i, (addr, length, flags, nxt) in enumerate(entries):
        p.ram.write(at + 16 * i, (addr).to_bytes(8, "little") + length.to_bytes(4, "little")
                    + flags.to_bytes(2, "little") + nxt.to_bytes(2, "little"))
    return at


def head_out_of_range(p: EchoPeer) -> int:
    p.tx.post(NUM + 3)
    p.tx.kick()
    return NUM + 3


def rx(descs_fn):
    """A bad RX chain in front of good buffers (the session starts with an empty RX ring)."""
    def post(p: EchoPeer) -> int:
        bad = NUM - 1
        for i, addr, length, flags, nxt in descs_fn(p, bad):
            p.rx.set_desc(i, addr, length, flags, nxt)
        p.rx.post(bad)
        for i in range(8):
            p.rx.post(i)
        p.send(0xBAD)
        return bad
    return post


CASES = [
    RingCase("head-out-of-range", 9, "HEAD", head_out_of_range),
    RingCase("next-out-of-range", 10, "NEXT",
             tx(lambda p, s, b: [(s[0], b, HDR, NEXT, NUM + 7)])),
    RingCase("descriptor-loop", 10, "CHAIN_LONG",
             tx(lambda p, s, b: [(s[0], b, HDR, NEXT, s[1]), (s[1], b + HDR, 64, NEXT, s[0])])),
    RingCase("chain-through-every-descriptor", 10, "CHAIN_LONG",
             tx(lambda p, s, b: [(i, b, 8, NEXT, (i + 1) % NUM) for i in range(NUM)])),
    RingCase("indirect-len-zero", 11, "INDIRECT_LEN",
             tx(lambda p, s, b: [(s[0], table(p, [(b, HDR + 64, 0, 0)]), 0, INDIRECT, 0)])),
    RingCase("indirect-len-not-a-multiple-of-16", 11, "INDIRECT_LEN",
             tx(lambda p, s, b: [(s[0], table(p, [(b, HDR + 64, 0, 0)]), 24, INDIRECT, 0)])),
    RingCase("indirect-table-larger-than-the-ring", 11, "INDIRECT_LEN",
             tx(lambda p, s, b: [(s[0], table(p, [(b, HDR + 64, 0, 0)] * (NUM + 1)),
                                  16 * (NUM + 1), INDIRECT, 0)])),
    RingCase("nested-indirect", 11, "NESTED_INDIRECT",
             tx(lambda p, s, b: [(s[0], table(p, [(table(p, [(b, HDR + 64, 0, 0)]), 16,
                                                   INDIRECT, 0)]), 16, INDIRECT, 0)])),
    RingCase("indirect-with-next", 11, "INDIRECT_NEXT",
             tx(lambda p, s, b: [(s[0], table(p, [(b, HDR + 64, 0, 0)]), 16, INDIRECT | NEXT,
                                  s[1]), (s[1], b, 8, 0, 0)])),
    RingCase("indirect-table-outside-memory", 11, "ADDR",
             tx(lambda p, s, b: [(s[0], 64 * MiB, 32, INDIRECT, 0)])),
    RingCase("loop-inside-an-indirect-table", 10, "CHAIN_LONG",
             tx(lambda p, s, b: [(s[0], table(p, [(b, HDR, NEXT, 1), (b + HDR, 64, NEXT, 0)]),
                                  32, INDIRECT, 0)])),
    RingCase("buffer-wraps-2^64", 12, "ADDR",
             tx(lambda p, s, b: [(s[0], (1 << 64) - 0x10, 0x40, 0, 0)])),
    RingCase("buffer-outside-memory", 12, "ADDR",
             tx(lambda p, s, b: [(s[0], 3 * MiB, HDR + 64, 0, 0)])),
    RingCase("buffer-runs-off-the-end-of-memory", 12, "ADDR",
             tx(lambda p, s, b: [(s[0], 2 * MiB - 0x20, 0x40, 0, 0)])),
    RingCase("zero-length-descriptor", 12, "ZERO_LEN",
             tx(lambda p, s, b: [(s[0], b, HDR, NEXT, s[1]), (s[1], b + HDR, 0, 0, 0)])),
    RingCase("total-length-overflows-u32", 12, "LEN_OVERFLOW",
             tx(lambda p, s, b: [(s[0], 1 << 32, 0x8000_0000, NEXT, s[1]),
                                 (s[1], 1 << 32, 0x8000_0000, 0, 0)]),
             peer_kw={"layout": ((0, 2 * MiB), (1 << 32, 2 << 30))}),
    RingCase("writable-descriptor-in-a-tx-chain", 13, "DIRECTION",
             tx(lambda p, s, b: [(s[0], b, HDR, NEXT, s[1]), (s[1], b + HDR, 64, WRITE, 0)])),
    RingCase("tx-chain-shorter-than-the-header", 14, "SHORT_HDR",
             tx(lambda p, s, b: [(s[0], b, 5, NEXT, s[1]), (s[1], b + 5, 4, 0, 0)])),
    RingCase("more-segments-than-the-engine-takes", 12, "TOO_MANY_SEGS",
             lambda p: _many_segments(p, 1025), peer_kw={"num": 2048}),
    RingCase("rx-readable-after-writable", 13, "DIRECTION",
             rx(lambda p, bad: [(bad, p.ram.alloc(64), HDR, WRITE | NEXT, bad - 1),
                                (bad - 1, p.ram.alloc(2048), 2048, 0, 0)]),
             queue="peer0", peer_kw={"rx_prefill": 0}),
    RingCase("rx-buffer-outside-memory", 12, "ADDR",
             rx(lambda p, bad: [(bad, 5 * MiB, 2048, WRITE, 0)]),
             queue="peer0", peer_kw={"rx_prefill": 0}),
    RingCase("rx-chain-read-only", 13, "DIRECTION",
             rx(lambda p, bad: [(bad, p.ram.alloc(64), HDR, 0, 0)]),
             queue="peer0", peer_kw={"rx_prefill": 0}),
]


def _many_segments(p: EchoPeer, n: int) -> int:
    """A TX chain of ``n`` one-byte descriptors (the engine caps at 1024)."""
    buf = _frame_buf(p, n)
    for i in range(n):
        p.tx.set_desc(i, buf + i, 1, NEXT if i + 1 < n else 0, i + 1)
    p.tx_next = n
    p.tx.post(0)
    p.tx.kick()
    return 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_chain_from_the_peer_is_counted_and_service_goes_on(victim, case):
    before = victim.before()
    p = EchoPeer(victim.sock, **(case.peer_kw or {}))
    try:
        if case.queue == "peer1":
            p.roundtrip(1)
        ring_ = p.tx if case.queue == "peer1" else p.rx
        used = ring_.used_idx()
        head = case.post(p)
        ring_.wait_used(used + 1)
        # the bad chain comes back empty (it may be behind nothing else)
        assert ring_.used_elem(used) == (head, 0), ring_.used_elem(used)
        q = victim.vm2.queue("vp0", case.queue)
        assert q["last_error"] == case.error, q
        for seq in range(2, 5):                 # and VM2 goes on serving this very peer
            p.roundtrip(seq)
    finally:
        p.close()
    victim.after(before, Expect(queue_errors={case.queue: 1}))


def test_avail_index_jump_breaks_the_ring_until_it_is_set_up_again(victim):
    """Row 9: avail->idx more than the ring size ahead.  VM2 stops using
    that ring (counted once, nothing written), keeps serving everything
    else, and serves it again once the peer restarts it."""
    before = victim.before()
    p = EchoPeer(victim.sock)
    try:
        p.roundtrip(1)
        used = p.tx.used_idx()
        p.tx.set_avail_idx(p.tx.avail_idx + NUM + 1)
        p.tx.kick()
        victim.vm2.wait(lambda: victim.vm2.queue("vp0", "peer1").get("last_error") == "AVAIL_IDX",
                        10, "AVAIL_IDX counted")
        assert p.tx.used_idx() == used                  # a broken ring is not written
        p.restart_tx()
        for seq in range(2, 6):
            p.roundtrip(seq)
    finally:
        p.close()
    victim.after(before, Expect(queue_errors={"peer1": 1}))


def test_rx_avail_index_jump(victim):
    before = victim.before()
    p = EchoPeer(victim.sock, rx_prefill=0)
    try:
        p.rx.set_avail_idx(0x8000)
        p.send(1)
        victim.vm2.wait(lambda: victim.vm2.queue("vp0", "peer0").get("last_error") == "AVAIL_IDX",
                        10, "AVAIL_IDX counted on the RX ring")
        assert p.rx.used_idx() == 0
    finally:
        p.close()
    victim.after(before, Expect(queue_errors={"peer0": 1}))


def test_buffer_straddling_two_regions_is_legal(victim):
    """Two gpa-adjacent regions (two memfds, apart in VM2's window): a
    frame whose buffer crosses the seam is copied whole."""
    before = victim.before()
    p = EchoPeer(victim.sock, layout=((0, MiB), (MiB, MiB)))
    try:
        p.roundtrip(1)
        buf = MiB - 40                                       # header + 28 bytes, then region 2
        p.ram.write(buf, bytes(HDR))
        p.ram.write(buf + HDR, p.frame(77, 28))
        p.ram.write(MiB, p.frame(77, 128)[28:])
        (i,) = p.descs(1)
        echoed = p.echoed()
        p.tx.set_desc(i, buf, HDR + 128)
        p.tx.post(i)
        p.tx.kick()
        p.rx.wait_used(echoed + 1)
        want = p.frame(77, 128)
        assert p.echo_of(echoed) == want[6:12] + want[:6] + want[12:]
    finally:
        p.close()
    victim.after(before, Expect())


def test_header_split_over_descriptors_is_legal(victim):
    """Row 14's other half: the net header in two pieces, then the frame."""
    before = victim.before()
    p = EchoPeer(victim.sock)
    try:
        buf = _frame_buf(p, 64)
        a, b, c = p.descs(3)
        echoed = p.echoed()
        p.post_chain([(a, buf, 5, NEXT, b), (b, buf + 5, HDR - 5, NEXT, c),
                      (c, buf + HDR, 64, 0, 0)], a)
        p.rx.wait_used(echoed + 1)
        want = p.frame(0xBAD, 64)
        assert p.echo_of(echoed) == want[6:12] + want[:6] + want[12:]
        assert victim.vm2.queue("vp0", "peer1")["errors"] == before["queues"]["peer1"]
    finally:
        p.close()
    victim.after(before, Expect())


def test_rings_hold_no_fd_and_no_mapping_after_many_bad_sessions(victim):
    """Twenty sessions that each end on a bad chain: VM2's fds and
    mappings are back where they started (Victim.after), the counters add up."""
    before = victim.before()
    for k in range(20):
        p = EchoPeer(victim.sock)
        try:
            head_out_of_range(p)
            p.tx.wait_used(1)
        finally:
            p.close()
        victim.wait_disconnected()
    victim.after(before, Expect(queue_errors={"peer1": 20}))
    assert os.path.exists(victim.sock)


def test_merged_rx_buffers_running_dry_mid_packet(victim):
    """Row 15: with MRG_RXBUF a 300-byte frame needs five 64-byte RX
    buffers; the peer posts two.  VM2 must not deliver part of it (it
    leaves the frame in the TX ring: nothing is lost either); once the
    peer posts more, the frame arrives whole, num_buffers right."""
    before = victim.before()
    p = EchoPeer(victim.sock, features=FEATURES | VF.NET_MRG_RXBUF, rx_prefill=2, rx_buf_size=64)
    try:
        p.send(5, 300)
        time.sleep(0.5)
        assert p.rx.used_idx() == 0                     # nothing partial delivered ...
        assert p.tx.used_idx() == 0                     # ... and the frame is still the peer's
        for i in range(2, 8):
            p.rx.post(i)
        p.rx.kick()
        p.rx.wait_used(5)
        assert p.rx.used_idx() == 5 and p.tx.wait_used(1) == 1
        parts = [p.rx.used_elem(k) for k in range(5)]
        data = b"".join(p.ram.read(p.rx_bufs[head], length) for head, length in parts)
        assert int.from_bytes(data[10:12], "little") == 5          # num_buffers
        want = p.frame(5, 300)
        assert data[HDR:] == want[6:12] + want[:6] + want[12:]
    finally:
        p.close()
    victim.after(before, Expect())
