"""QEMU 7.2 qos-test's virtio-net paths (tests/qtest/virtio-net-test.c:
basic, rx_stop_cont, announce-self, large_tx/uint_max, large_tx/net_bufsize)
replayed against emu's machine the way libqos drives the device
(tests/virtio/libqos.py), over the modern interface and -- the same tests
on a disable-modern=on device -- the legacy one, with the test on the
other end of the ``-netdev socket,fd=N`` stream as qos-test is.

No clock moves anywhere: each kick is completed by the data-path thread
while the driver only polls the ISR (REQUIREMENTS §4.3).  (The qos-test
binary itself drives emu once the qtest accelerator is wired in:
tests/qtest/test_qos.py.)"""
from __future__ import annotations

import asyncio
import select
import socket
import struct
import threading
import time

import pytest

from emu.machine import Machine
from emu.netdev_announce import AnnounceParameters
from emu.spec import qemu_net

from tests.peers.qemu_qtest import EmuPlatform
from .libqos import LibqosNet, Ram

MAC = bytes.fromhex("525400123456")
NET_BUFSIZE = qemu_net.NET_BUFSIZE
UINT_MAX = 0xFFFFFFFF


class QosMachine(EmuPlatform):
    """``-M pc -device virtio-net-pci,netdev=hs0,addr=04.0 -netdev socket,fd=N,id=hs0``
    (or ``hubport,hubid=0``), started as emu's process starts it."""

    def __init__(self, netdev: str, **device):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.m = Machine(name="qos", ram_size=128 << 20, backend="memfd", machine_type="pc")
        self.sock = None
        if netdev == "socket":
            ours, self.sock = socket.socketpair()
            self.m.add_netdev_socket("hs0", fd=ours.detach())
        else:
            self.m.add_netdev_hubport("hs0", 0)
        self.m.add_virtio_net("net0", "hs0", mac=MAC, addr=4, **device)
        self.run(self.m.start())
        super().__init__(self.m.system)
        self.ram = Ram(self.m.ram.write, self.m.ram.read)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, fn, *args):
        async def go():
            return fn(*args)
        return self.run(go())

    def recv_frame(self, timeout: float = 30.0) -> bytes:
        self.sock.settimeout(timeout)
        (n,) = struct.unpack(">I", self._exact(4))
        return self._exact(n)

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the stream ended"
            out += chunk
        return out

    def close(self) -> None:
        self.run(self.m.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        if self.sock is not None:
            self.sock.close()


@pytest.fixture(params=["modern", "legacy"])
def interface(request):
    return {} if request.param == "modern" else {"disable_modern": True}


@pytest.fixture
def qos(interface):
    m = QosMachine("socket", **interface)
    yield m
    m.close()


@pytest.fixture
def qos_hub(interface):
    m = QosMachine("hubport", **interface)
    yield m
    m.close()


def bring_up(m: QosMachine) -> LibqosNet:
    d = LibqosNet(m, m.ram)
    d.setup()
    return d


def rx_buffer(d: LibqosNet) -> tuple[int, int]:
    rx = d.queues[0]
    buf = d.alloc(64)
    head = d.add(rx, buf, 64, True, False)
    d.kick(rx, head)
    return buf, head


def test_basic_rx_and_tx(qos):
    """send_recv_test: rx -- "TEST\\0" framed by the peer lands at buf+12;
    tx -- "TEST" at buf+12 of a 64-byte buffer reaches the peer as 52 bytes."""
    d = bring_up(qos)
    assert d.modern == (qos.m.devices["net0"].function.interfaces.modern)
    buf, head = rx_buffer(d)
    qos.sock.sendall(b"\x00\x00\x00\x05TEST\0")
    assert d.wait_used(d.queues[0], head) == 12 + 5
    assert qos.ram.read(buf + 12, 5) == b"TEST\0"
    assert struct.unpack("<H", qos.ram.read(buf + 10, 2))[0] == 1      # num_buffers
    tx = d.queues[1]
    tbuf = d.alloc(64)
    qos.ram.write(tbuf, bytes(64))
    qos.ram.write(tbuf + 12, b"TEST")
    head = d.add(tx, tbuf, 64, False, False)
    d.kick(tx, head)
    d.wait_used(tx, head)
    got = qos.recv_frame()
    assert len(got) == 52 and got.startswith(b"TEST\0")


def test_rx_stop_cont(qos):
    """stop_cont_test: a frame sent while the VM is stopped is delivered after cont."""
    d = bring_up(qos)
    buf, head = rx_buffer(d)
    qos.call(qos.m.stop)
    qos.sock.sendall(b"\x00\x00\x00\x05TEST\0")
    time.sleep(0.2)
    assert struct.unpack("<H", qos.ram.read(d.queues[0]["used"] + 2, 2))[0] == 0  # not yet
    qos.call(qos.m.cont)
    d.wait_used(d.queues[0], head)
    assert qos.ram.read(buf + 12, 5) == b"TEST\0"


def test_announce_self(qos):
    """announce_self: a RARP at once; the same id with rounds 0 stops the timer."""
    bring_up(qos)
    qos.call(qos.m.announce_self, AnnounceParameters(20, 100, 300, 10, None, "bob"))
    frame = qos.recv_frame()
    assert frame[12:14] == b"\x80\x35" and frame == qemu_net.announce_frame(MAC)
    qos.call(qos.m.announce_self, AnnounceParameters(20, 100, 0, 10, None, "bob"))
    total, quiet_since, start = 0, time.monotonic(), time.monotonic()
    qos.sock.setblocking(False)
    while time.monotonic() - quiet_since < 0.4:          # libqos: 400 ms with nothing
        assert time.monotonic() - start < 12
        r, _, _ = select.select([qos.sock], [], [], 0.1)
        if r:
            total += len(qos.sock.recv(4096))
            quiet_since = time.monotonic()
    assert total <= 3600


@pytest.mark.parametrize("size", [UINT_MAX, NET_BUFSIZE], ids=["uint_max", "net_bufsize"])
def test_large_tx(qos_hub, size):
    """large_tx: 65 descriptors over one buffer of size/64 bytes: completed,
    dropped (a length over 2^32, or a frame over NET_BUFSIZE), counted."""
    d = bring_up(qos_hub)
    tx = d.queues[1]
    part = size // 64
    buf = d.alloc(part)
    head = d.add(tx, buf, part, False, True)
    for i in range(64):
        d.add(tx, buf, part, False, i != 63)
    d.kick(tx, head)
    assert d.wait_used(tx, head) == 0
    st = qos_hub.m.emu_stats()["net0"]["netdev"]
    assert st["tx_oversize"] == 1 and st["tx_frames"] == 0
