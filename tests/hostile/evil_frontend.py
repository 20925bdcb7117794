"""A scripted vhost-user front-end that can send anything, with guest RAM
and split rings it writes itself: the hostile VM1 that attacks emu's
vhost-pci-net back-end (VM2).

* :class:`PeerRAM` -- memfd regions shared with the victim (a name marker
  lets a test find them in the victim's /proc/PID/maps);
* :class:`DriverRing` -- a split ring in that RAM, written descriptor by
  descriptor (any value: loops, bad addresses, index jumps...);
* :class:`EvilFrontend` -- raw socket + emu's codec: well-formed requests,
  hand-made bytes, any fds, replies read back;
* :class:`EchoPeer` -- the whole well-behaved set-up against VM2's echo app
  (RX ring 0, TX ring 1), from which the descriptor-chain attacks start.
"""
from __future__ import annotations

import array
import os
import socket
import struct
import time

import numpy as np

from emu import memory
from emu.spec import virtio_ring as R
from emu.vhost_user.codec import HEADER, Decoder, Message, close_fds, encode, request
from emu.vhost_user.messages import (FrontendRequest as F, MemoryRegion, MemoryTable,
                                     ProtocolFeature as PF, U64, VirtioFeature as VF, VringAddr,
                                     VringFd, VringState)

MARKER = "evilpeer"                 # memfd name: /memfd:emu-evilpeer (deleted)
HDR = 12                            # virtio-net header with VERSION_1
NEXT, WRITE, INDIRECT = 1, 2, 4
FEATURES = VF.VERSION_1 | VF.INDIRECT_DESC | VF.PROTOCOL_FEATURES
PROTOCOL = PF.MQ | PF.REPLY_ACK | PF.CONFIGURE_MEM_SLOTS | PF.STATUS | PF.INFLIGHT_SHMFD


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class PeerRAM:
    """Guest RAM of the fake VM1: one memfd per ``(gpa, size)`` region."""

    def __init__(self, layout=((0, 2 << 20),), name: str = MARKER):
        self._parts = [memory.allocate(size, "memfd", name=name, gpa=gpa) for gpa, size in layout]
        self.mem = memory.GuestMemory([r for p in self._parts for r in p.regions], backend="memfd")
        self._next = 0x100000

    @property
    def regions(self):
        return self.mem.regions

    def table(self) -> tuple[MemoryTable, tuple[int, ...]]:
        return (MemoryTable(tuple(MemoryRegion(r.gpa, r.size, r.uaddr, r.mmap_offset)
                                  for r in self.regions)), tuple(r.fd for r in self.regions))

    def uaddr(self, gpa: int) -> int:
        return self.mem.translate_gpa(gpa)[0].uaddr + gpa - self.mem.translate_gpa(gpa)[0].gpa

    def alloc(self, size: int, align: int = 64) -> int:
        at = (self._next + align - 1) // align * align
        self._next = at + size
        return at

    def write(self, gpa: int, data: bytes) -> None:
        self.mem.write(gpa, data)

    def read(self, gpa: int, n: int) -> bytes:
        return self.mem.read(gpa, n)

    def close(self) -> None:
        for p in self._parts:
            p.close()


class DriverRing:
    """The driver side of a split ring in ``ram``, written by hand."""

    def __init__(self, ram: PeerRAM, index: int, num: int, base_gpa: int):
        self.ram, self.index, self.num = ram, index, num
        self.desc, self.avail, self.used, _ = R.ring_layout(base_gpa, num)
        ram.write(base_gpa, bytes(self.used + 6 + 8 * num - base_gpa))
        self.avail_idx = 0
        self.kick_fd = eventfd()
        self.call_fd = eventfd()

    def set_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        self.ram.write(self.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def _store_idx(self, gpa: int, value: int) -> None:
        # one aligned 16-bit store: the peer reads it concurrently
        self.ram.mem.view(gpa, 2, dtype=np.uint16)[0] = value & 0xFFFF

    def post(self, head: int) -> None:
        self.ram.write(self.avail + 4 + 2 * (self.avail_idx % self.num), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self._store_idx(self.avail + 2, self.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        self._store_idx(self.avail + 2, self.avail_idx)

    def kick(self) -> None:
        os.eventfd_write(self.kick_fd, 1)

    def used_idx(self) -> int:
        return struct.unpack("<H", self.ram.read(self.used + 2, 2))[0]

    def used_elem(self, k: int) -> tuple[int, int]:
        return struct.unpack("<II", self.ram.read(self.used + 4 + 8 * (k % self.num), 8))

    def wait_used(self, count: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while (n := self.used_idx()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ring {self.index}: used idx {n}, waited for {count}")
            time.sleep(0.002)
        return n

    def addrs(self) -> tuple[int, int, int]:
        return self.desc, self.avail, self.used

    def close(self) -> None:
        close_fds([self.kick_fd, self.call_fd])


class EvilFrontend:
    """A vhost-user front-end over a raw socket; it sends what it is told."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise
                time.sleep(0.01)
        self.dec = Decoder(F)
        self.closed = False

    # -- sending -------------------------------------------------------------------------------
    def send_raw(self, data: bytes, fds=()) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def send(self, req, payload=None, fds=(), need_reply: bool = False) -> None:
        data, fds = encode(request(req, payload, fds, need_reply))
        self.send_raw(data, fds)

    def send_header(self, req_id: int, flags: int, size: int, body: bytes = b"", fds=()) -> None:
        """Any header: the codec would refuse to build a bad one."""
        self.send_raw(HEADER.pack(req_id, flags, size) + body, fds)

    # -- receiving ----------------------------------------------------------------------------
    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None once the back-end closed the connection."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            msg = self.dec.next_message()
            if msg is not None:
                return msg
            data, anc, _, _ = self.sock.recvmsg(self.dec.wanted(), socket.CMSG_SPACE(8 * 4))
            fds = [fd for lvl, kind, d in anc if kind == socket.SCM_RIGHTS
                   for fd in array.array("i", d[:len(d) - len(d) % 4])]
            if not data:
                close_fds(fds)
                self.closed = True
                return None
            self.dec.feed(data, fds)

    def call(self, req, payload=None, fds=(), need_reply: bool = False) -> Message:
        self.send(req, payload, fds, need_reply)
        reply = self.recv()
        assert reply is not None, f"back-end closed the connection on {req.name}"
        assert reply.is_reply and reply.request == req, reply
        return reply

    def status(self, req, payload=None, fds=()) -> int:
        """A request with NEED_REPLY: its REPLY_ACK status (0 ok)."""
        return self.call(req, payload, fds, need_reply=True).payload.value

    def u64(self, req) -> int:
        return self.call(req).payload.value

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True once the back-end closed the connection (replies are drained)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                msg = self.recv(max(0.05, deadline - time.monotonic()))
            except (socket.timeout, TimeoutError):
                return False
            except ConnectionResetError:
                self.closed = True
                break
            if msg is not None:
                close_fds(msg.fds)
            if time.monotonic() > deadline:
                return False
        return True

    # -- QEMU's sequences ------------------------------------------------------------------------
    def handshake(self, protocol: int = PROTOCOL) -> tuple[int, int]:
        features = self.u64(F.GET_FEATURES)
        offered = self.u64(F.GET_PROTOCOL_FEATURES)
        self.send(F.SET_PROTOCOL_FEATURES, U64(offered & protocol))
        self.send(F.SET_OWNER)
        return features, offered

    def set_mem_table(self, ram: PeerRAM) -> int:
        table, fds = ram.table()
        return self.status(F.SET_MEM_TABLE, table, fds)

    def setup_ring(self, ram: PeerRAM, r: DriverRing, base: int = 0) -> None:
        self.send(F.SET_VRING_NUM, VringState(r.index, r.num))
        self.send(F.SET_VRING_BASE, VringState(r.index, base))
        d_size, a_size, u_size = R.ring_sizes(r.num)
        self.send(F.SET_VRING_ADDR, VringAddr(r.index, 0, ram.uaddr(r.desc), ram.uaddr(r.used),
                                              ram.uaddr(r.avail), 0))
        self.send(F.SET_VRING_KICK, VringFd(r.index), (r.kick_fd,))
        self.send(F.SET_VRING_CALL, VringFd(r.index), (r.call_fd,))
        assert self.status(F.SET_VRING_ENABLE, VringState(r.index, 1)) == 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        self.dec.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EchoPeer:
    """The fake VM1 set up against VM2's echo app: RX ring 0 full of
    writable buffers, TX ring 1 for frames (good or not)."""

    def __init__(self, path: str, *, num: int = 64, layout=((0, 2 << 20),), features=FEATURES,
                 rx_prefill: int | None = None, rx_buf_size: int = 2048):
        self.ram = PeerRAM(layout)
        self.fe = EvilFrontend(path)
        ring_bytes = R.ring_layout(0, num)[3]
        self.rx = DriverRing(self.ram, 0, num, 0x0)
        self.tx = DriverRing(self.ram, 1, num, ring_bytes)
        self.rx_bufs = [self.ram.alloc(rx_buf_size) for _ in range(min(num, 64))]
        self.num = num
        self.tx_next = 0                    # next free TX descriptor
        try:
            self.fe.handshake()
            self.fe.send(F.SET_FEATURES, U64(features))
            assert self.fe.set_mem_table(self.ram) == 0
            for i, b in enumerate(self.rx_bufs):
                self.rx.set_desc(i, b, rx_buf_size, WRITE)
                if rx_prefill is None or i < rx_prefill:
                    self.rx.post(i)
            self.fe.setup_ring(self.ram, self.rx)
            self.fe.setup_ring(self.ram, self.tx)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def frame(seq: int, size: int = 64) -> bytes:
        dst, src = bytes.fromhex("525400000002"), bytes.fromhex("525400000001")
        body = seq.to_bytes(4, "little") * (size // 4)
        return (dst + src + b"\x08\x00" + body)[:size]

    def descs(self, n: int) -> list[int]:
        """``n`` free TX descriptor slots (wrapping: earlier chains are done)."""
        out = [(self.tx_next + k) % self.num for k in range(n)]
        self.tx_next = (self.tx_next + n) % self.num
        return out

    def send(self, seq: int, size: int = 64) -> int:
        """A well-formed one-descriptor TX chain; -> its head."""
        buf = self.ram.alloc(HDR + size)
        self.ram.write(buf, bytes(HDR) + self.frame(seq, size))
        (i,) = self.descs(1)
        self.tx.set_desc(i, buf, HDR + size)
        self.tx.post(i)
        self.tx.kick()
        return i

    def post_chain(self, descs: list[tuple[int, int, int, int, int]], head: int) -> None:
        """Raw descriptors ``(index, addr, len, flags, next)``, then post ``head``."""
        for i, addr, length, flags, nxt in descs:
            self.tx.set_desc(i, addr, length, flags, nxt)
        self.tx.post(head)
        self.tx.kick()

    def restart_tx(self) -> None:
        """What a driver does about a ring the device gave up on: stop it
        (GET_VRING_BASE), put the indexes back in step, set it up again."""
        self.fe.call(F.GET_VRING_BASE, VringState(self.tx.index, 0))
        done = self.tx.used_idx()
        self.tx.set_avail_idx(done)
        self.tx.close()
        self.tx.kick_fd, self.tx.call_fd = eventfd(), eventfd()
        self.fe.setup_ring(self.ram, self.tx, base=done)

    def echoed(self) -> int:
        return self.rx.used_idx()

    def echo_of(self, k: int) -> bytes:
        """Frame bytes of the k-th echo (header stripped)."""
        head, length = self.rx.used_elem(k)
        return self.ram.read(self.rx_bufs[head] + HDR, length - HDR)

    def roundtrip(self, seq: int, size: int = 64, timeout: float = 10.0) -> bytes:
        """Send a good frame and wait for its echo: VM2 still serves us."""
        before = self.echoed()
        self.send(seq, size)
        self.rx.wait_used(before + 1, timeout)
        got = self.echo_of(before)
        self.rx.post(self.rx.used_elem(before)[0])       # the buffer goes back to the device
        want = self.frame(seq, size)
        assert got == want[6:12] + want[:6] + want[12:], "echo corrupted"
        return got

    def close(self) -> None:
        self.fe.close()
        self.rx.close()
        self.tx.close()
        self.ram.close()
