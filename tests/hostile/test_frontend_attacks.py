"""A malicious vhost-user front-end against emu's vhost-pci-net back-end
(VM2, a real emu process): one test per bad input of the checklist
(docs/security.md).  Every case then checks, through VM2's monitor and
/proc, that the error was counted (query-emu-stats: vp0.vhost_user) and
logged, that the connection cost nothing (fds, mappings of the peer's
memory), and that VM2 kept serving its monitor and the well-behaved VM1
on its other device (``Victim.after``).
"""
from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from emu.vhost_user.messages import (Config, FrontendRequest as F, Iotlb, Log, MemoryRegion,
                                     MemoryTable, ProtocolFeature as PF, Rarp, U64,
                                     VringAddr, VringFd, VringState)

from .conftest import Expect
from .evil_frontend import FEATURES, PROTOCOL, EchoPeer, EvilFrontend, PeerRAM, eventfd

MiB = 1 << 20
MAX_QUEUES = 8            # vhost-pci-net's peer vrings (peer_vq_max default)


@dataclass
class Conn:
    fe: EvilFrontend
    ram: PeerRAM | None = None
    peer: EchoPeer | None = None
    fds: list[int] = field(default_factory=list)      # ours to close when the case ends

    def fd(self, kind: str = "eventfd") -> int:
        """An fd to send (closed when the case ends)."""
        if kind == "eventfd":
            fd = eventfd()
        elif kind == "memfd":
            fd = os.memfd_create("evilpeer-extra", os.MFD_CLOEXEC)
            os.ftruncate(fd, MiB)
        else:
            a, b = socket.socketpair()
            a.close()
            fd = b.detach()
        self.fds.append(fd)
        return fd


@dataclass
class Case:
    id: str
    row: int                     # checklist row (reference notes §7)
    level: str                   # raw | hello | mem | echo: how far the set-up goes first
    run: Callable[[Conn], None]
    expect: Expect


def closed(c: Conn) -> None:
    assert c.fe.wait_closed(), "the back-end kept a connection it should have dropped"


def header(req: int, flags: int, size: int, body: bytes = b"", fds=()):
    def run(c: Conn):
        c.fe.send_header(req, flags, size, body, fds)
        closed(c)
    return run


def refused_ack(req, payload=None, nfds=0, kind="eventfd"):
    """A request with NEED_REPLY that must be answered with status 1."""
    def run(c: Conn):
        assert c.fe.status(req, payload, tuple(c.fd(kind) for _ in range(nfds))) == 1
        assert c.fe.u64(F.GET_FEATURES)           # the connection goes on
    return run


def table(*regions) -> MemoryTable:
    return MemoryTable(tuple(MemoryRegion(*r) for r in regions))


def mem_table_refused(regions, kind="memfd"):
    def run(c: Conn):
        fds = tuple(c.fd(kind) for _ in regions)
        assert c.fe.status(F.SET_MEM_TABLE, table(*regions), fds) == 1
    return run


# -- individual cases ---------------------------------------------------------------------------
def ctrunc(c: Conn):
    fds = [c.fd() for _ in range(9)]
    c.fe.send(F.SET_VRING_CALL, VringFd(0), fds[:1])          # a valid one first
    c.fe.send_header(F.SET_VRING_CALL, 1, 8, struct.pack("<Q", 1), fds)
    closed(c)


def short_payload_then_close(c: Conn):
    c.fe.send_header(F.SET_VRING_NUM, 1, 8, b"\0\0\0")
    c.fe.sock.shutdown(socket.SHUT_WR)
    closed(c)


def partial_header_then_close(c: Conn):
    c.fe.send_raw(struct.pack("<II", F.GET_FEATURES, 1))
    c.fe.sock.shutdown(socket.SHUT_WR)
    closed(c)


def reply_from_frontend(c: Conn):
    c.fe.send_header(F.GET_FEATURES, 0x5, 8, bytes(8))
    assert c.fe.u64(F.GET_FEATURES)                       # ignored, connection goes on


def fd_count_mismatch(c: Conn):
    u = 0x7F0000000000
    body = table((0, MiB, u, 0), (MiB, MiB, u + MiB, 0)).pack()
    c.fe.send_header(F.SET_MEM_TABLE, 1, len(body), body, (c.fd("memfd"),))
    closed(c)


def wrong_regions(n: int):
    def run(c: Conn):
        c.fe.send_header(F.SET_MEM_TABLE, 1, 8 + 32 * n, struct.pack("<II", n, 0) + bytes(32 * n),
                         tuple(c.fd("memfd") for _ in range(min(n, 8))))
        closed(c)
    return run


def index_out_of_range(req):
    def run(c: Conn):
        if req in (F.SET_VRING_KICK, F.SET_VRING_CALL, F.SET_VRING_ERR):
            payload, fds = VringFd(200), (c.fd(),)
        elif req == F.SET_VRING_ADDR:
            payload, fds = VringAddr(MAX_QUEUES, 0, 0, 0, 0, 0), ()
        else:
            payload, fds = VringState(MAX_QUEUES, 1), ()
        if req == F.GET_VRING_BASE:
            c.fe.send(req, payload)
            closed(c)                       # its own reply cannot be given: connection dropped
        else:
            assert c.fe.status(req, payload, fds) == 1
    return run


def index_truncation(c: Conn):
    # 0x10000 must not become ring 0: refused, and ring 0 keeps no size
    assert c.fe.status(F.SET_VRING_NUM, VringState(0x10000, 64)) == 1
    assert c.fe.status(F.SET_VRING_NUM, VringState(0, 64)) == 0


def ring_addr(c: Conn, index: int, desc: int, used: int, avail: int) -> int:
    c.fe.send(F.SET_VRING_NUM, VringState(index, 256))
    return c.fe.status(F.SET_VRING_ADDR, VringAddr(index, 0, desc, used, avail, 0))


def ring_outside_memory(c: Conn):
    u = c.ram.uaddr(0)
    assert ring_addr(c, 1, u + 4 * MiB, u + 0x2000, u + 0x1000) == 1


def ring_straddles_end(c: Conn):
    u = c.ram.uaddr(0)
    assert ring_addr(c, 1, u, u + 2 * MiB - 0x100, u + 0x1000) == 1   # used ring runs off the end


def ring_misaligned(c: Conn):
    u = c.ram.uaddr(0)
    assert ring_addr(c, 1, u + 8, u + 0x2000, u + 0x1000) == 1


def repeated_call_fds(c: Conn):
    """300 call fds for one ring: the back-end keeps one (Victim.after
    counts the victim's fds once the connection is gone)."""
    for _ in range(300):
        fd = eventfd()
        c.fe.send(F.SET_VRING_CALL, VringFd(0), (fd,))
        os.close(fd)
    assert c.fe.u64(F.GET_FEATURES)


def slowloris(victim):
    def run(c: Conn):
        raw = struct.pack("<III", F.GET_FEATURES, 1, 0)
        for b in raw:                                 # one byte at a time, slowly
            c.fe.send_raw(bytes([b]))
            assert victim.vm2.execute("query-status")["status"] == "running"
            time.sleep(0.05)
        reply = c.fe.recv(5)
        assert reply is not None and reply.request == F.GET_FEATURES  # slow but honest: served
    return run


def flood_with_reads(c: Conn):
    n = 5000
    c.fe.send_raw(struct.pack("<III", F.GET_FEATURES, 1, 0) * n)
    for _ in range(n):
        r = c.fe.recv(10)
        assert r is not None and r.request == F.GET_FEATURES


def flood_never_reads(c: Conn):
    """More requests than the back-end may queue replies for, never
    reading one: after reply_timeout (10 s) the connection is dropped."""
    c.fe.sock.setblocking(False)
    chunk = struct.pack("<III", F.GET_FEATURES, 1, 0) * 4096
    pending = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pending = pending or chunk
        try:
            pending = pending[c.fe.sock.send(pending):]      # whole messages only, in order
        except BlockingIOError:
            time.sleep(0.05)                  # the back-end stopped reading: pressure holds
        except (BrokenPipeError, ConnectionResetError):
            break
    c.fe.sock.setblocking(True)
    c.fe.sock.settimeout(5)
    closed(c)


def garbage_behind_a_flood(c: Conn):
    """A malformed header behind 2000 queued requests: the drop is
    reported as the malformed message, not as the replies it cut off."""
    c.fe.send_raw(struct.pack("<III", F.GET_FEATURES, 1, 0) * 2000
                  + struct.pack("<III", F.GET_FEATURES, 1, 1))
    closed(c)


def half_closed(c: Conn):
    c.fe.send(F.GET_FEATURES)
    c.fe.sock.shutdown(socket.SHUT_WR)
    reply = c.fe.recv(5)
    assert reply is not None and reply.request == F.GET_FEATURES     # answered, then EOF
    closed(c)


def second_connection(victim):
    def run(c: Conn):
        with EvilFrontend(victim.sock) as other:
            assert other.wait_closed(5), "a second front-end was served"
        c.peer.roundtrip(7)                      # the first one is untouched
    return run


def connect_close_storm(victim):
    def run(c: Conn):
        c.fe.close()
        victim.wait_disconnected()
        for _ in range(50):
            EvilFrontend(victim.sock).close()
            victim.wait_disconnected()
    return run


def remap_while_running(c: Conn):
    p = c.peer
    p.roundtrip(1)
    echoed = p.echoed()
    for seq in range(20):
        p.send(100 + seq)
    assert c.fe.set_mem_table(p.ram) == 0      # same memory again, rings running
    p.fe.setup_ring(p.ram, p.rx, base=p.rx.avail_idx)   # QEMU re-sends the rings after a new table
    p.fe.setup_ring(p.ram, p.tx, base=p.tx.used_idx())
    # every frame sent before the re-map comes back (none lost across it), and
    # only then is the next echo the round trip's own: on a busy machine some
    # of the 20 are still on their way when the re-map returns
    p.rx.wait_used(echoed + 20)
    for k in range(20):
        want = p.frame(100 + k)
        assert p.echo_of(echoed + k) == want[6:12] + want[:6] + want[12:], f"echo {k} corrupted"
    p.roundtrip(2)


def mtu_out_of_range(c: Conn):
    c.fe.handshake(PROTOCOL | PF.NET_MTU)
    assert c.fe.status(F.NET_SET_MTU, U64(10)) == 1


def log_base_without_feature(c: Conn):
    c.fe.send(F.SET_LOG_BASE, Log(MiB, 0), (c.fd("memfd"),))
    reply = c.fe.recv(5)
    assert reply is not None and reply.payload.value == 1       # its own status reply


def postcopy(c: Conn):
    c.fe.send(F.POSTCOPY_ADVISE)
    closed(c)


def inflight_without_feature(c: Conn):
    from emu.vhost_user.messages import Inflight
    c.fe.send(F.GET_INFLIGHT_FD, Inflight(0, 0, 64, 256))
    closed(c)


def idle_ring_base(c: Conn):
    reply = c.fe.call(F.GET_VRING_BASE, VringState(3, 0))
    assert reply.payload == VringState(3, 0)


def with_fds(req, body: bytes, nfds: int):
    """A request the fd rule allows no fd for, sent with some."""
    def run(c: Conn):
        c.fe.send_header(req, 1, len(body), body, tuple(c.fd() for _ in range(nfds)))
        closed(c)
    return run


def add_mem_reg_without_feature(c: Conn):
    from emu.vhost_user.messages import SingleMemRegion
    region = SingleMemRegion(MemoryRegion(0, MiB, 0x7F0000000000, 0))
    assert c.fe.status(F.ADD_MEM_REG, region, (c.fd("memfd"),)) == 1


def get_config_without_feature(c: Conn):
    c.fe.send(F.GET_CONFIG, Config(0, 12, 0, bytes(12)))
    reply = c.fe.recv(5)
    # refused with libvhost-user's convention: an empty config, connection kept
    assert reply is not None and reply.request == F.GET_CONFIG and reply.payload.size == 0
    assert c.fe.u64(F.GET_FEATURES)


def cases(victim) -> list[Case]:
    u = 0x7F0000000000
    R, M = F.SET_VRING_NUM, "MalformedMessage"
    return [
        # 1: framing and sizes
        Case("size-over-the-cap", 1, "raw", header(F.GET_FEATURES, 1, 1 << 20),
             Expect(dropped=M, log=("exceeds",))),
        Case("size-wrong-for-the-request", 1, "raw", header(R, 1, 4, bytes(4)),
             Expect(dropped=M, log=("wrong size",))),
        Case("short-payload-then-close", 1, "raw", short_payload_then_close,
             Expect(dropped="TruncatedMessage", log=("mid-message",))),
        Case("partial-header-then-close", 18, "raw", partial_header_then_close,
             Expect(dropped="TruncatedMessage")),
        Case("msg-ctrunc-nine-fds", 1, "raw", ctrunc, Expect(dropped=M, log=("fds",))),
        Case("bad-version", 1, "raw", header(F.GET_FEATURES, 2, 0), Expect(dropped=M)),
        Case("unknown-flag-bits", 1, "raw", header(F.GET_FEATURES, 0x101, 0), Expect(dropped=M)),
        Case("reply-with-need-reply", 1, "raw", header(F.GET_FEATURES, 0xD, 8, bytes(8)),
             Expect(dropped=M)),
        Case("reply-from-the-front-end", 2, "raw", reply_from_frontend,
             Expect(refused=("GET_FEATURES",), log=("refused GET_FEATURES",), closed=True)),
        # 2: ids, order, features
        Case("unknown-request-id", 2, "raw", header(99, 1, 0), Expect(dropped=M, log=("unknown",))),
        Case("vring-addr-before-memory", 2, "hello",
             refused_ack(F.SET_VRING_ADDR, VringAddr(0, 0, u, u + 0x2000, u + 0x1000, 0)),
             Expect(refused=("SET_VRING_ADDR",), log=("before a memory table",))),
        Case("features-not-offered", 2, "raw", refused_ack(F.SET_FEATURES, U64(1 << 63 | 1 << 32)),
             Expect(refused=("SET_FEATURES",), log=("not offered",))),
        Case("protocol-features-not-offered", 2, "raw",
             refused_ack(F.SET_PROTOCOL_FEATURES, U64(1 << 62)),
             Expect(refused=("SET_PROTOCOL_FEATURES",))),
        Case("log-base-without-log-shmfd", 2, "hello", log_base_without_feature,
             Expect(refused=("SET_LOG_BASE",), log=("without LOG_SHMFD",))),
        Case("add-mem-reg-without-mem-slots", 2, "hello", add_mem_reg_without_feature,
             Expect(refused=("ADD_MEM_REG",), log=("without CONFIGURE_MEM_SLOTS",))),
        Case("inflight-without-the-feature", 17, "hello", inflight_without_feature,
             Expect(refused=("GET_INFLIGHT_FD",), dropped="ProtocolViolation")),
        Case("postcopy-advise", 2, "hello", postcopy,
             Expect(refused=("POSTCOPY_ADVISE",), dropped="ProtocolViolation")),
        Case("iotlb-message", 2, "hello", refused_ack(F.IOTLB_MSG, Iotlb(0, 4096, u, 3, 2)),
             Expect(refused=("IOTLB_MSG",))),
        # 3: region count and fds
        Case("mem-table-zero-regions", 3, "hello", wrong_regions(0), Expect(dropped=M)),
        Case("mem-table-nine-regions", 3, "hello", wrong_regions(9), Expect(dropped=M)),
        Case("mem-table-fd-count-mismatch", 3, "hello", fd_count_mismatch,
             Expect(dropped=M, log=("came with 1 fds",))),
        # 4: region contents
        Case("zero-size-region", 4, "hello", mem_table_refused([(0, 0, u, 0)]),
             Expect(refused=("SET_MEM_TABLE",))),
        Case("region-wraps", 4, "hello",
             mem_table_refused([((1 << 64) - 0x1000, 0x2000, u, 0)]),
             Expect(refused=("SET_MEM_TABLE",))),
        Case("regions-overlap", 4, "hello",
             mem_table_refused([(0, MiB, u, 0), (MiB // 2, MiB, u + 2 * MiB, 0)]),
             Expect(refused=("SET_MEM_TABLE",), log=("overlap",))),
        Case("mmap-past-the-end-of-the-fd", 4, "hello", mem_table_refused([(0, MiB, u, MiB)]),
             Expect(refused=("SET_MEM_TABLE",))),
        Case("memory-fd-is-an-eventfd", 4, "hello",
             mem_table_refused([(0, MiB, u, 0)], kind="eventfd"),
             Expect(refused=("SET_MEM_TABLE",))),
        # 5: ring index on every ring message, and the u32 -> u16 truncation
        *[Case(f"ring-index-out-of-range-{req.name}", 5, "hello", index_out_of_range(req),
               Expect(refused=(req.name,),
                      dropped="ProtocolViolation" if req == F.GET_VRING_BASE else None,
                      log=("out of range",)))
          for req in (F.SET_VRING_NUM, F.SET_VRING_BASE, F.SET_VRING_ADDR, F.SET_VRING_ENABLE,
                      F.SET_VRING_KICK, F.SET_VRING_CALL, F.SET_VRING_ERR, F.GET_VRING_BASE)],
        Case("ring-index-u32-truncation", 5, "hello", index_truncation,
             Expect(refused=("SET_VRING_NUM",))),
        # 6: ring size
        *[Case(f"ring-size-{num}", 6, "hello", refused_ack(R, VringState(0, num)),
               Expect(refused=("SET_VRING_NUM",), log=("power of two",)))
          for num in (0, 3, 65536)],
        # 7: rings inside memory
        Case("ring-outside-memory", 7, "mem", ring_outside_memory,
             Expect(refused=("SET_VRING_ADDR",))),
        Case("ring-straddles-the-region-end", 7, "mem", ring_straddles_end,
             Expect(refused=("SET_VRING_ADDR",))),
        Case("ring-misaligned", 7, "mem", ring_misaligned,
             Expect(refused=("SET_VRING_ADDR",), log=("aligned",))),
        # 16: fd abuse
        Case("fd-on-set-owner", 16, "raw", with_fds(F.SET_OWNER, b"", 1), Expect(dropped=M)),
        Case("fds-on-set-vring-num", 16, "hello", with_fds(R, struct.pack("<II", 0, 64), 2),
             Expect(dropped=M)),
        Case("repeated-set-vring-call", 16, "hello", repeated_call_fds, Expect()),
        Case("kick-fd-is-a-socket", 16, "hello",
             refused_ack(F.SET_VRING_KICK, VringFd(0), 1, "socket"),
             Expect(refused=("SET_VRING_KICK",), log=("not an eventfd",))),
        Case("call-fd-is-a-memfd", 16, "hello",
             refused_ack(F.SET_VRING_CALL, VringFd(0), 1, "memfd"),
             Expect(refused=("SET_VRING_CALL",))),
        Case("backend-req-fd-not-negotiated", 16, "hello",
             refused_ack(F.SET_BACKEND_REQ_FD, None, 1, "socket"),
             Expect(refused=("SET_BACKEND_REQ_FD",))),
        # payload values
        Case("vring-enable-2", 2, "hello", refused_ack(F.SET_VRING_ENABLE, VringState(0, 2)),
             Expect(refused=("SET_VRING_ENABLE",))),
        Case("mtu-out-of-range", 2, "raw", mtu_out_of_range, Expect(refused=("NET_SET_MTU",))),
        Case("status-not-a-u8", 2, "hello", refused_ack(F.SET_STATUS, U64(0x1FF)),
             Expect(refused=("SET_STATUS",))),
        Case("config-larger-than-256", 1, "hello",
             header(F.GET_CONFIG, 1, 12 + 300, struct.pack("<III", 0, 300, 0) + bytes(300)),
             Expect(dropped=M)),
        Case("rarp-without-the-feature", 2, "hello", refused_ack(F.SEND_RARP, Rarp(bytes(6))),
             Expect(refused=("SEND_RARP",))),
        # 18: peers that misbehave in time
        Case("slowloris-header", 18, "raw", slowloris(victim), Expect()),
        Case("flood-with-reads", 18, "hello", flood_with_reads, Expect()),
        Case("flood-never-reads", 18, "hello", flood_never_reads,
             Expect(dropped="PeerTimeout", log=("does not read",))),
        Case("garbage-behind-a-flood", 1, "hello", garbage_behind_a_flood,
             Expect(dropped=M, log=("wrong size",))),
        Case("half-closed-socket", 18, "raw", half_closed, Expect()),
        Case("second-front-end-while-served", 18, "echo", second_connection(victim),
             Expect(rejected=1, log=("already connected",))),
        Case("connect-close-storm", 18, "raw", connect_close_storm(victim), Expect()),
        Case("mem-table-while-rings-run", 18, "echo", remap_while_running, Expect()),
        Case("get-vring-base-of-an-idle-ring", 5, "hello", idle_ring_base, Expect()),
        Case("get-config-without-the-feature", 2, "hello", get_config_without_feature,
             Expect(refused=("GET_CONFIG",))),
    ]


CASE_IDS = [c.id for c in cases(None)]


def _open(victim, level: str) -> Conn:
    if level == "echo":
        peer = EchoPeer(victim.sock)
        peer.roundtrip(0)
        return Conn(peer.fe, peer.ram, peer)
    fe = EvilFrontend(victim.sock)
    c = Conn(fe)
    if level in ("hello", "mem"):
        fe.handshake()
        fe.send(F.SET_FEATURES, U64(FEATURES))
    if level == "mem":
        c.ram = PeerRAM()
        assert fe.set_mem_table(c.ram) == 0
    return c


def _close(c: Conn) -> None:
    if c.peer is not None:
        c.peer.close()
    else:
        c.fe.close()
        if c.ram is not None:
            c.ram.close()
    for fd in c.fds:
        os.close(fd)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_frontend_attack(victim, case_id):
    case = next(c for c in cases(victim) if c.id == case_id)
    before = victim.before()
    conn = _open(victim, case.level)
    try:
        case.run(conn)
    finally:
        _close(conn)
    victim.after(before, case.expect)


def test_the_checklist_is_covered():
    """At least 40 distinct front-end attacks, spanning the protocol rows."""
    all_cases = cases(None)
    assert len(all_cases) >= 40
    assert {1, 2, 3, 4, 5, 6, 7, 16, 17, 18} <= {c.row for c in all_cases}
