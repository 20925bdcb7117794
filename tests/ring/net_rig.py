"""A rig for the engine's virtio-net data path (``emu.ring.NetPort``): guest
RAM with a TX and an RX ring, the guest side driven either by the C driver
(:class:`emu.ring.DriverQueue`, bulk traffic) or by the model driver (any
chain a guest may write), the device side attached to a port whose job
runs on a pump in interrupt mode, and the peer's end of a socketpair."""
from __future__ import annotations

import os
import select
import socket
import struct
import time

from emu import ring
from emu.spec import qemu_net

from .model import DriverModel, Memory
from .rig import eventfd, feats, place, ram

MiB = 1 << 20
TX_RING, RX_RING = 0x0, 0x40000
TX_BUFS, RX_BUFS = 0x100000, 0x400000
FRAME_LEN = qemu_net.FRAME_LEN


def wait_until(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def frame(n: int, size: int = 64) -> bytes:
    """Frame number ``n``: its number, then a pattern (checkable end to end)."""
    body = struct.pack("<I", n) + bytes((n + i) & 0xFF for i in range(max(0, size - 4)))
    return body[:size]


def framed(frames) -> bytes:
    return b"".join(FRAME_LEN.pack(len(f)) + f for f in frames)


class StreamReader:
    """The peer's side: parse what the job wrote, whole frames only."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def read_available(self, wait: float = 0.0) -> None:
        r, _, _ = select.select([self.sock], [], [], wait)
        while r:
            data = self.sock.recv(1 << 20)
            if not data:
                return
            self.buf += data
            r, _, _ = select.select([self.sock], [], [], 0)

    def frames(self) -> list[bytes]:
        out, off = [], 0
        while len(self.buf) - off >= 4:
            (n,) = FRAME_LEN.unpack_from(self.buf, off)
            if len(self.buf) - off - 4 < n:
                break
            out.append(self.buf[off + 4:off + 4 + n])
            off += 4 + n
        self.buf = self.buf[off:]
        return out

    def collect(self, count: int, timeout: float = 20.0) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the peer got {len(got)} of {count} frames")
            self.read_available(0.05)
            got += self.frames()
        return got


class NetRig:
    """``model=True``: the TX ring is driven by the model driver (hostile
    chains); else by the C driver.  RX always by the C driver."""

    def __init__(self, *, features: int = feats(mrg=True), num: int = 256, rx_buf: int = 2048,
                 tx_buf: int = 2048, ram_size: int = 16 * MiB, model: bool = False,
                 start: bool = True):
        self.mem = ram(ram_size)
        self.table = ring.RegionTable(self.mem)
        self.features = features
        self.txr, self.rxr = place(TX_RING, num), place(RX_RING, num)
        self.kick_tx, self.kick_rx = eventfd(), eventfd()
        self.call_tx, self.call_rx = eventfd(), eventfd()
        self.mm = Memory(self.mem)
        if model:
            self.txm = DriverModel(self.mm, self.txr)
            self.drv_tx = None
        else:
            self.txm = None
            self.drv_tx = ring.DriverQueue(self.mem, num, self.txr.desc, self.txr.avail,
                                           self.txr.used, TX_BUFS, tx_buf, features=features,
                                           kick_fd=self.kick_tx)
        self.drv_rx = ring.DriverQueue(self.mem, num, self.rxr.desc, self.rxr.avail,
                                       self.rxr.used, RX_BUFS, rx_buf, features=features,
                                       kick_fd=self.kick_rx)
        self.dev_tx = ring.DeviceQueue.from_gpa(self.table, num, self.txr.desc, self.txr.avail,
                                                self.txr.used, features=features,
                                                kick_fd=self.kick_tx, call_fd=self.call_tx)
        self.dev_rx = ring.DeviceQueue.from_gpa(self.table, num, self.rxr.desc, self.rxr.avail,
                                                self.rxr.used, features=features,
                                                kick_fd=self.kick_rx, call_fd=self.call_rx)
        ours, self.peer = socket.socketpair()
        self.port = ring.NetPort(name="rig")
        self.port.attach(self.dev_tx, self.dev_rx)
        self.port.set_socket(ours.detach())
        self.pump = ring.Pump("interrupt", name="net-rig")
        self.pump.add_net(self.port)
        self.reader = StreamReader(self.peer)
        self.received: list[bytes] = []
        if start:
            self.pump.start()

    # -- guest side ---------------------------------------------------------------------
    def send(self, frames) -> int:
        """Post TX frames (the C driver; it kicks)."""
        b = self.drv_tx.tx_post(list(frames))
        return b.packets

    def reclaim(self) -> None:
        self.drv_tx.reclaim()

    def rx_refill(self) -> None:
        self.drv_rx.rx_refill()

    def rx(self, count: int, timeout: float = 20.0) -> list[bytes]:
        """Wait for ``count`` more received frames (refilling as a driver does)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the guest got {len(self.received)} of {count} frames "
                                     f"({self.port.stats()})")
            got = self.drv_rx.rx_recv(256)
            self.received += got
            if got:
                self.drv_rx.rx_refill()
            else:
                time.sleep(0.002)
        out, self.received = self.received[:count], self.received[count:]
        return out

    # -- peer side ----------------------------------------------------------------------
    def peer_send(self, data: bytes) -> None:
        self.peer.sendall(data)

    def close(self) -> None:
        self.pump.stop()
        fd = self.port.release()
        if fd is not None:
            os.close(fd)
        self.port.close()
        self.peer.close()
        for fd in (self.kick_tx, self.kick_rx, self.call_tx, self.call_rx):
            os.close(fd)
        self.mem.close()
