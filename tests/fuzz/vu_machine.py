"""A stateful hostile vhost-user front-end: hypothesis rules that send any
message, good or bad, in any order, with real fds of every kind
(:mod:`peer_fds`), against a back-end reached through a *transport*:

* :class:`~test_stateful_backend` -- an in-process Backend with the
  default mapper;
* :class:`~test_stateful_vm2` -- a real VM2 process (``-device
  vhost-pci-net``) over its socket.

The machine owns guest RAM (a memfd) and two split rings in it (RX 0, TX 1),
so a good table and good rings can be set up, and frames can flow, at any
point between the bad steps.  An eventfd it sends is kept (``shared``): the
peer's powers over a shared eventfd -- clear O_NONBLOCK, read it dry, fill
it -- are rules too.  A transport answers ``exchange()`` with the reply, or
None once the back-end closed the connection; after every step the
transport's ``check_alive`` holds, and whenever a connection ends its
``after_close`` checks that the back-end is clean and still serves a
well-behaved front-end.
"""
from __future__ import annotations

import fcntl
import os
import struct

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from emu import eventfd as emu_eventfd
from emu.spec.virtio_ring import ring_layout
from emu.vhost_user.codec import HEADER, Message
from emu.vhost_user.messages import (Config, Flags, FrontendRequest as F, Inflight, Log,
                                     MemoryRegion, MemoryTable, ProtocolFeature as PF, Rarp,
                                     SingleMemRegion, U64, VirtioFeature as VF, VringAddr,
                                     VringFd, VringState, spec_of)

from . import peer_fds

MiB = 1 << 20
FEATURES = VF.VERSION_1 | VF.INDIRECT_DESC | VF.PROTOCOL_FEATURES
PROTOCOL = (PF.MQ | PF.REPLY_ACK | PF.CONFIGURE_MEM_SLOTS | PF.STATUS | PF.LOG_SHMFD
            | PF.INFLIGHT_SHMFD | PF.BACKEND_REQ | PF.CONFIG | PF.RARP | PF.NET_MTU)
NUM = 64
RINGS = (0, 1)
u64s = st.one_of(st.integers(0, 0xFF), st.sampled_from([0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF,
                                                         1 << 32, (1 << 64) - 1]),
                 st.integers(0, (1 << 64) - 1))
indexes = st.one_of(st.sampled_from(RINGS), st.integers(0, 255))     # the fd word holds 8 bits
ring_nums = st.sampled_from([0, 1, 3, 64, 256, 1024, 32768, 65536, NUM])
fd_kinds = st.sampled_from(peer_fds.KINDS)


def wire(req, payload=None, need_reply: bool = False, flags: int | None = None) -> bytes:
    """A message's bytes, without the codec's checks (the fds go separately)."""
    body = payload.pack() if payload is not None else b""
    if flags is None:
        flags = Flags.VERSION | (Flags.NEED_REPLY if need_reply else 0)
    return HEADER.pack(int(req), int(flags), len(body)) + body


class Tally:
    """What a run did (printed by the tests, for docs/security.md)."""

    def __init__(self):
        self.examples = self.steps = self.connections = self.echoed = 0

    def __str__(self):
        return (f"{self.examples} examples, {self.steps} steps, "
                f"{self.connections} connections, {self.echoed} frames echoed")


class VhostUserMachine(RuleBasedStateMachine):
    """Subclasses set ``transport_factory`` (a callable -> transport) and
    ``tally``."""

    transport_factory = None
    tally = Tally()

    def __init__(self):
        super().__init__()
        from tests.hostile.evil_frontend import DriverRing, PeerRAM
        self.ram = PeerRAM(((0, 2 * MiB),))
        ring_bytes = ring_layout(0, NUM)[3]
        self.rings = {0: DriverRing(self.ram, 0, NUM, 0), 1: DriverRing(self.ram, 1, NUM, ring_bytes)}
        self.bufs = [self.ram.alloc(2048) for _ in range(NUM)]
        self.shared: dict[tuple[str, int], int] = {}   # eventfds we sent and kept
        self.offered = 0
        self.t = type(self).transport_factory()
        self.t.rebase()              # what the process holds now (our RAM, rings) is its own
        self.tx_next = 0
        self.tally.examples += 1
        self.tally.connections += 1

    # -- plumbing ---------------------------------------------------------------------------
    def send(self, req, payload=None, fds=(), need_reply=None, flags=None):
        """Send one request; -> its reply (or None: no reply / closed)."""
        if self.t.closed:
            self._reconnect(in_flight=fds)
        spec = spec_of(req)
        if need_reply is None:
            need_reply = not spec.has_reply
        expect = spec.has_reply or need_reply
        return self.t.exchange(wire(req, payload, need_reply, flags), list(fds), expect)

    def send_kind(self, req, payload, kind: str, keep: tuple[str, int] | None = None, **kw):
        fd = peer_fds.make(kind)
        try:
            return self.send(req, payload, (fd,), **kw)
        finally:
            if keep is not None and kind.startswith("eventfd"):
                old = self.shared.pop(keep, None)
                if old is not None:
                    os.close(old)
                self.shared[keep] = fd
            else:
                os.close(fd)

    def owned_fds(self) -> set[int]:
        """The fds this machine opened since :meth:`rebase` (the eventfds it
        sent and kept): not the back-end's business."""
        return set(self.shared.values())

    def _reconnect(self, in_flight=()):
        """A new connection, once the back-end proved clean after the old
        one (``in_flight``: fds of the step under way, ours)."""
        self.t.close()
        self.t.after_close(self.owned_fds() | set(in_flight))
        self.t.open()
        self.tally.connections += 1

    def teardown(self):
        try:
            self.tally.echoed += self.rings[0].used_idx()
            self.t.close()
            self.t.after_close(self.owned_fds())
        finally:
            for fd in self.shared.values():
                os.close(fd)
            for r in self.rings.values():
                r.close()
            self.ram.close()

    @invariant()
    def alive(self):
        self.tally.steps += 1
        self.t.check_alive()

    @initialize(level=st.sampled_from(["nothing", "hello", "memory", "rings", "rings",
                                       "traffic", "traffic"]))
    def start(self, level):
        """Most examples start from a session already part or all the way up,
        so the bad steps meet running rings as often as an empty device."""
        if level == "nothing":
            return
        self.hello(0)
        if level == "hello":
            return
        self.mem_table("good", [], False)
        if level == "memory":
            return
        self.setup_ring(0)
        self.setup_ring(1)
        if level == "traffic":
            self.traffic(4)

    # -- negotiation ---------------------------------------------------------------------------
    @rule(extra=st.sampled_from([0, VF.LOG_ALL, VF.RING_PACKED, 1 << 63]))
    def hello(self, extra):
        r = self.send(F.GET_FEATURES)
        offered = r.payload.value if r is not None and isinstance(r.payload, U64) else FEATURES
        r = self.send(F.GET_PROTOCOL_FEATURES)
        self.offered = r.payload.value if r is not None and isinstance(r.payload, U64) else 0
        self.send(F.SET_PROTOCOL_FEATURES, U64(self.offered & PROTOCOL))
        self.send(F.SET_OWNER)
        self.send(F.SET_FEATURES, U64((offered & FEATURES) | extra))

    @rule(value=u64s)
    def protocol_features(self, value):
        self.send(F.SET_PROTOCOL_FEATURES, U64(value))

    @rule(value=u64s)
    def features(self, value):
        self.send(F.SET_FEATURES, U64(value))

    @rule(req=st.sampled_from([F.GET_QUEUE_NUM, F.GET_MAX_MEM_SLOTS, F.GET_STATUS,
                               F.RESET_OWNER, F.RESET_DEVICE, F.SET_OWNER]))
    def simple(self, req):
        self.send(req)

    # -- memory -----------------------------------------------------------------------------
    def _table(self, variant):
        r = self.ram.regions[0]
        base = MemoryRegion(r.gpa, r.size, r.uaddr, 0)
        if variant == "good":
            return (base,)
        if variant == "zero-size":
            return (MemoryRegion(r.gpa, 0, r.uaddr, 0),)
        if variant == "wraps":
            return (MemoryRegion((1 << 64) - 4096, r.size, r.uaddr, 0),)
        if variant == "past-eof":
            return (MemoryRegion(r.gpa, r.size, r.uaddr, 4096),)
        if variant == "overlap":
            return (base, MemoryRegion(r.gpa + 4096, 4096, r.uaddr + r.size, 0))
        return (base, MemoryRegion(r.gpa + r.size, r.size, r.uaddr + r.size, 0))   # two

    @rule(variant=st.sampled_from(["good", "zero-size", "wraps", "past-eof", "overlap", "two"]),
          kinds=st.lists(st.sampled_from(["ram"] + peer_fds.BAD_MEMORY_KINDS), max_size=2),
          extra_fd=st.booleans())
    def mem_table(self, variant, kinds, extra_fd):
        regions = self._table(variant)
        kinds = (kinds + ["ram"] * len(regions))[:len(regions)] + (["ram"] if extra_fd else [])
        fds = [os.dup(self.ram.regions[0].fd) if k == "ram" else peer_fds.make(k) for k in kinds]
        try:
            self.send(F.SET_MEM_TABLE, MemoryTable(regions), fds)
        finally:
            for fd in fds:
                os.close(fd)

    @rule(kind=st.sampled_from(["ram"] + peer_fds.BAD_MEMORY_KINDS), at=st.sampled_from([0, 4 * MiB]))
    def add_mem_reg(self, kind, at):
        r = self.ram.regions[0]
        region = MemoryRegion(r.gpa + at, r.size, r.uaddr + at, 0)
        fd = os.dup(r.fd) if kind == "ram" else peer_fds.make(kind)
        try:
            self.send(F.ADD_MEM_REG, SingleMemRegion(region), (fd,))
        finally:
            os.close(fd)

    @rule(at=st.sampled_from([0, 4 * MiB, 123]))
    def rem_mem_reg(self, at):
        r = self.ram.regions[0]
        self.send(F.REM_MEM_REG, SingleMemRegion(MemoryRegion(r.gpa + at, r.size, r.uaddr + at, 0)))

    @rule(kind=fd_kinds, size=st.sampled_from([0, 8, 4096, 2 * MiB, 1 << 40]),
          offset=st.sampled_from([0, 4096, (1 << 64) - 8]))
    def log_base(self, kind, size, offset):
        self.send_kind(F.SET_LOG_BASE, Log(size, offset), kind, need_reply=False)

    @rule(kind=fd_kinds)
    def log_fd(self, kind):
        self.send_kind(F.SET_LOG_FD, None, kind)

    @rule(queues=st.sampled_from([0, 1, 2, 300]), size=st.sampled_from([0, 3, 256, 32768, 65535]))
    def get_inflight(self, queues, size):
        reply = self.send(F.GET_INFLIGHT_FD, Inflight(0, 0, queues, size))
        for fd in (reply.fds if isinstance(reply, Message) else ()):
            os.close(fd)

    @rule(kind=fd_kinds, queues=st.sampled_from([1, 2]), size=st.sampled_from([2 * MiB, 4096]))
    def set_inflight(self, kind, queues, size):
        self.send_kind(F.SET_INFLIGHT_FD, Inflight(size, 0, queues, 256), kind)

    @rule(kind=fd_kinds)
    def backend_req_fd(self, kind):
        self.send_kind(F.SET_BACKEND_REQ_FD, None, kind)

    # -- rings ---------------------------------------------------------------------------------
    @rule(index=indexes, num=ring_nums)
    def vring_num(self, index, num):
        self.send(F.SET_VRING_NUM, VringState(index, num))

    @rule(index=indexes, base=st.sampled_from([0, 5, 0xFFFF, 0x10000]))
    def vring_base(self, index, base):
        self.send(F.SET_VRING_BASE, VringState(index, base))

    @rule(index=indexes, variant=st.sampled_from(["good", "outside", "straddle", "misaligned"]))
    def vring_addr(self, index, variant):
        r = self.rings.get(index, self.rings[0])
        desc, avail, used = (self.ram.uaddr(a) for a in r.addrs())
        end = self.ram.regions[0].uaddr + self.ram.regions[0].size
        if variant == "outside":
            desc = end + 8 * MiB
        elif variant == "straddle":
            used = end - 16
        elif variant == "misaligned":
            used += 1
        self.send(F.SET_VRING_ADDR, VringAddr(index, 0, desc, used, avail, 0))

    @rule(which=st.sampled_from([F.SET_VRING_KICK, F.SET_VRING_CALL, F.SET_VRING_ERR]),
          index=indexes, kind=st.one_of(st.just("nofd"), fd_kinds))
    def vring_fd(self, which, index, kind):
        if kind == "nofd":
            self.send(which, VringFd(index, True))
        else:
            self.send_kind(which, VringFd(index), kind, keep=(which.name, index))

    @rule(which=st.sampled_from([F.SET_VRING_KICK, F.SET_VRING_CALL]),
          index=st.sampled_from(RINGS), source=st.sampled_from(
              [(w.name, i) for w in (F.SET_VRING_KICK, F.SET_VRING_CALL) for i in RINGS]))
    def vring_fd_again(self, which, index, source):
        """One eventfd for two rings (or as kick and call): a shared counter
        that the first of two readers empties."""
        fd = self.shared.get(source)
        if fd is not None:
            self.send(which, VringFd(index), (fd,))

    @rule(kind=st.sampled_from(peer_fds.EVENTFD_KINDS + ["eventfd-blocking",
                                                         "eventfd-full-blocking"]),
          uses=st.lists(st.tuples(st.sampled_from([F.SET_VRING_KICK, F.SET_VRING_CALL]),
                                  st.sampled_from(RINGS)), min_size=2, max_size=4),
          actions=st.lists(st.sampled_from(["signal", "drain", "fill", "blocking"]),
                           min_size=1, max_size=6))
    def eventfd_games(self, kind, uses, actions):
        """The peer's whole play with one eventfd: hand it over for one or
        more rings (kick and/or call), then signal it, read it dry, fill it,
        make it blocking, in any order."""
        fd = peer_fds.make(kind)
        for which, index in uses:
            self.send(which, VringFd(index), (fd,))
        old = self.shared.pop(("games", 0), None)
        if old is not None:
            os.close(old)
        self.shared[("games", 0)] = fd
        self.t.settle()               # the back-end has taken the new fds into use
        for action in actions:
            self._poke(fd, action)
            self.t.settle()

    @rule(index=indexes, value=st.sampled_from([0, 1, 2]))
    def vring_enable(self, index, value):
        self.send(F.SET_VRING_ENABLE, VringState(index, value))

    @rule(index=indexes)
    def get_vring_base(self, index):
        self.send(F.GET_VRING_BASE, VringState(index, 0))

    @rule(index=st.sampled_from(RINGS))
    def setup_ring(self, index):
        """The whole good sequence for one of our rings."""
        r = self.rings[index]
        if index == 0:
            for i, b in enumerate(self.bufs):
                r.set_desc(i, b, 2048, 2)
            r.set_avail_idx(0)
            for i in range(NUM):
                r.post(i)
        self.send(F.SET_VRING_NUM, VringState(index, NUM))
        self.send(F.SET_VRING_BASE, VringState(index, 0))
        self.vring_addr(index, "good")
        self.send(F.SET_VRING_KICK, VringFd(index), (r.kick_fd,))
        self.send(F.SET_VRING_CALL, VringFd(index), (r.call_fd,))
        self.send(F.SET_VRING_ENABLE, VringState(index, 1))

    @rule(n=st.integers(1, 8))
    def traffic(self, n):
        tx = self.rings[1]
        for _ in range(n):
            buf = self.ram.alloc(12 + 64) if self.ram._next < 2 * MiB - 4096 else self.bufs[0]
            self.ram.write(buf, bytes(12) + bytes.fromhex("525400000002525400000001") + bytes(52))
            tx.set_desc(self.tx_next, buf, 12 + 64)
            tx.post(self.tx_next)
            self.tx_next = (self.tx_next + 1) % NUM
        os.eventfd_write(tx.kick_fd, 1)

    @rule(key=st.sampled_from([(w.name, i) for w in (F.SET_VRING_KICK, F.SET_VRING_CALL)
                               for i in RINGS] + [("games", 0)] * 4),
          action=st.sampled_from(["signal", "drain", "fill", "blocking"]))
    def poke_shared_eventfd(self, key, action):
        """What the peer can do to an eventfd it shared with us."""
        fd = self.shared.get(key)
        if fd is not None:
            self._poke(fd, action)

    @staticmethod
    def _poke(fd: int, action: str) -> None:
        if action == "signal":
            emu_eventfd.signal(fd)                 # bounded even if VM2 filled it meanwhile
        elif action == "drain":
            emu_eventfd.drain(fd)
        elif action == "fill":
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)   # (our own write must not block either)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            try:
                emu_eventfd.drain(fd)
                os.write(fd, struct.pack("<Q", peer_fds.FULL))
            except BlockingIOError:
                pass
            finally:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        else:
            peer_fds._blocking(fd)

    # -- the rest ------------------------------------------------------------------------------
    @rule(value=u64s)
    def status(self, value):
        self.send(F.SET_STATUS, U64(value))

    @rule(offset=st.sampled_from([0, 6, 255, 256, 0xFFFFFFFF]), size=st.sampled_from([0, 6, 256, 4096]))
    def get_config(self, offset, size):
        self.send(F.GET_CONFIG, Config(offset, min(size, 256), 0, bytes(min(size, 256))))

    @rule(value=u64s)
    def mtu(self, value):
        self.send(F.NET_SET_MTU, U64(value))

    @rule()
    def rarp(self):
        self.send(F.SEND_RARP, Rarp(bytes.fromhex("525400000001")))

    @rule(req=st.integers(0, 60), flags=st.sampled_from([0, 1, 5, 9, 0xFFFFFFFF]),
          body=st.binary(max_size=64), nfds=st.integers(0, 3))
    def raw(self, req, flags, body, nfds):
        """Any header, any body, any fds: the stream may end here."""
        if self.t.closed:
            self._reconnect()
        fds = [peer_fds.make("eventfd") for _ in range(nfds)]
        try:
            self.t.exchange(HEADER.pack(req, flags, len(body)) + body, fds, False)
        finally:
            for fd in fds:
                os.close(fd)

    @rule()
    def reconnect(self):
        self._reconnect()
