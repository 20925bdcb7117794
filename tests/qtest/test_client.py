"""QtestConnection over a real unix socket, connecting to a listening
socket as QEMU's ``-qtest unix:PATH`` connects to libqtest's: replies in
order, IRQ lines pushed between commands, a client that closes ends the
session, nothing leaks."""
from __future__ import annotations

import asyncio
import os
import socket

from emu.qtest.client import QtestConnection
from emu.qtest.session import QtestSession
from .fake_target import PORT_IRQ, FakeTarget

DEADLINE = 30.0


class Libqtest:
    """The test side: libqtest's listening socket and its line reader."""

    def __init__(self, path: str):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.rx = b""

    async def accept(self):
        loop = asyncio.get_running_loop()
        self.conn, _ = await loop.sock_accept(self.listener)
        self.conn.setblocking(False)

    async def send(self, data: bytes):
        await asyncio.get_running_loop().sock_sendall(self.conn, data)

    async def line(self) -> bytes:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.rx:
            chunk = await loop.sock_recv(self.conn, 65536)
            assert chunk, "emu closed the qtest socket"
            self.rx += chunk
        line, self.rx = self.rx.split(b"\n", 1)
        return line

    def close(self):
        for s in (getattr(self, "conn", None), self.listener):
            if s is not None:
                s.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


def test_commands_and_replies_over_a_socket(tmp_path, no_fd_leak):
    path = str(tmp_path / "qtest.sock")
    target = FakeTarget()

    async def main():
        peer = Libqtest(path)
        try:
            session = QtestSession(target)
            accepting = asyncio.ensure_future(peer.accept())
            conn = await QtestConnection.connect_unix(path, session)
            await accepting
            serving = asyncio.ensure_future(conn.run())
            await peer.send(b"endianness\n")
            assert await peer.line() == b"OK little"
            # many commands in one write, one split across writes
            await peer.send(b"writel 0x100 0x12345678\nreadl 0x100\nfrob\nread")
            await peer.send(b"b 0x100\n")
            assert [await peer.line() for _ in range(4)] == [
                b"OK", b"OK 0x0000000012345678", b"FAIL Unknown command 'frob'",
                b"OK 0x0000000000000078"]
            # an IRQ raised between commands is pushed without a command
            await peer.send(b"irq_intercept_in ioapic\n")
            assert await peer.line() == b"OK"
            target.notify(7, 1)
            assert await peer.line() == b"IRQ raise 7"
            await peer.send(f"outw 0x{PORT_IRQ:x} 0x107\n".encode())
            assert [await peer.line() for _ in range(2)] == [b"IRQ lower 7", b"OK"]
            # a large transfer, both ways
            data = os.urandom(256 * 1024)
            await peer.send(b"write 0x0 0x%x 0x%s\n" % (len(data), data.hex().encode()))
            assert await peer.line() == b"OK"
            await peer.send(b"read 0x0 0x%x\n" % len(data))
            assert await peer.line() == b"OK 0x" + data.hex().encode()
            # the client closes: run() returns and closes its end
            peer.conn.close()
            peer.conn = None
            await serving
            assert session.counters.commands == 9
            assert session.counters.refused == {"frob": 1}
        finally:
            peer.close()

    run(main())


def test_client_that_sends_garbage_and_vanishes(tmp_path, no_fd_leak):
    path = str(tmp_path / "qtest.sock")

    async def main():
        peer = Libqtest(path)
        try:
            session = QtestSession(FakeTarget(), max_line=1024)
            accepting = asyncio.ensure_future(peer.accept())
            conn = await QtestConnection.connect_unix(path, session)
            await accepting
            serving = asyncio.ensure_future(conn.run())
            await peer.send(b"\x00\xff" * 5000 + b"\nendianness\n")
            assert (await peer.line()).startswith(b"FAIL line longer than 1024 bytes")
            assert await peer.line() == b"OK little"
            await peer.send(b"readq 0x0\nreadq 0x0\n" * 100 + b"partial comm")
            peer.conn.close()                  # gone without reading its replies
            peer.conn = None
            await serving
        finally:
            peer.close()

    run(main())


def test_pipelined_large_reads_are_all_answered_in_order(tmp_path, no_fd_leak):
    path = str(tmp_path / "qtest.sock")
    target = FakeTarget()
    target.ram[:16] = bytes(range(16))

    async def main():
        peer = Libqtest(path)
        try:
            session = QtestSession(target, max_output=1 << 16)
            accepting = asyncio.ensure_future(peer.accept())
            conn = await QtestConnection.connect_unix(path, session)
            await accepting
            serving = asyncio.ensure_future(conn.run())
            n = 200                                   # 200 x 128 KiB of replies, unread
            await peer.send(b"read 0x0 0x10000\n" * n + b"endianness\n")
            want = b"OK 0x" + bytes(range(16)).hex().encode() + b"00" * (0x10000 - 16)
            for _ in range(n):
                assert await peer.line() == want
            assert await peer.line() == b"OK little"
            assert session.pending_lines == 0
            peer.conn.close()
            peer.conn = None
            await serving
        finally:
            peer.close()

    run(main())
