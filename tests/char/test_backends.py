"""Chardev backends in-process: what a peer sees of a UART's output, and
that no peer can make emu buffer without bound or stall the guest."""
from __future__ import annotations

import asyncio
import os
import socket
import threading

from emu.char import backends as B
from emu.char.uart import LSR, LSR_THRE, THR, Uart16550
from emu.config import Chardev


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(predicate, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def uart_on(backend: B.Backend) -> Uart16550:
    uart = Uart16550("serial0", backend, rx_room_changed=backend.rx_room_changed)
    backend.attach(uart)
    return uart


def send(uart: Uart16550, data: bytes) -> None:
    for b in data:
        uart.write(THR, 1, b)


def test_a_server_keeps_the_boot_lines_for_its_first_client(tmp_path, no_fd_leak):
    path = str(tmp_path / "con.sock")

    async def main():
        be = B.create(Chardev("con", "socket", path=path, server=True, wait=False))
        uart = uart_on(be)
        await be.open(asyncio.get_running_loop())
        assert be.info() == {"label": "con", "filename": f"disconnected:unix:{path},server=on",
                             "frontend-open": True}
        send(uart, b"booting\r\n")                  # before anyone connected
        r, w = await asyncio.open_unix_connection(path)
        assert await r.readuntil(b"\r\n") == b"booting\r\n"
        await until(lambda: be.connected, "the client")
        assert be.info()["filename"] == f"unix:{path},server=on"
        send(uart, b"later\r\n")
        assert await r.readuntil(b"\r\n") == b"later\r\n"
        # input reaches the UART's receive FIFO
        w.write(b"status\r\n")
        await w.drain()
        await until(lambda: uart.rx_bytes == 1, "input")    # no FIFO enabled: one byte room
        w.close()
        await until(lambda: not be.connected, "the disconnect")
        # the next client is served after the first left
        send(uart, b"third\r\n")
        r2, w2 = await asyncio.open_unix_connection(path)
        assert await r2.readuntil(b"third\r\n") == b"third\r\n"
        w2.close()
        await be.close()
        assert not os.path.exists(path)             # the socket it made is gone
    run(main())


def test_a_peer_that_never_reads_holds_the_transmitter_not_emus_memory(tmp_path, no_fd_leak):
    path = str(tmp_path / "con.sock")

    async def main():
        be = B.create(Chardev("con", "socket", path=path, server=True, wait=False))
        uart = uart_on(be)
        await be.open(asyncio.get_running_loop())
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(path)
        await until(lambda: be.connected, "the client")
        # the guest side writes on its own thread, as the guest program does
        done = threading.Event()

        def guest():
            for _ in range(2000):
                send(uart, b"x" * 255 + b"\n")
            done.set()
        threading.Thread(target=guest, daemon=True).start()
        await until(done.is_set, "the writer (it must not block)")
        assert be.stats()["buffered"] <= B.LIMIT
        assert uart.tx_dropped > 0                   # THRE was clear: the bytes were refused
        assert not uart.read(LSR, 1) & LSR_THRE
        # a reader appears: THRE comes back
        client.setblocking(False)
        while True:
            await asyncio.sleep(0.01)
            try:
                if not client.recv(1 << 20):
                    break
            except BlockingIOError:
                if be.stats()["buffered"] == 0:
                    break
        await until(lambda: uart.read(LSR, 1) & LSR_THRE, "THRE")
        client.close()
        await be.close()
    run(main())


def test_a_client_chardev_connects_and_reconnects(tmp_path, no_fd_leak):
    path = str(tmp_path / "harness.sock")

    async def main():
        be = B.create(Chardev("con", "socket", path=path))
        try:
            await be.open(asyncio.get_running_loop())
        except B.ChardevError as e:
            assert str(e) == f"Failed to connect to '{path}': No such file or directory"
        else:
            raise AssertionError("connected to nothing")
        await be.close()
        got = asyncio.Queue()

        async def on_client(r, w):
            await got.put(await r.readuntil(b"\n"))
            w.close()
        server = await asyncio.start_unix_server(on_client, path=path)
        be = B.create(Chardev("con", "socket", path=path, reconnect=1))
        uart = uart_on(be)
        await be.open(asyncio.get_running_loop())
        send(uart, b"one\n")
        assert await got.get() == b"one\n"
        await until(lambda: not be.connected, "the server's hang-up")
        await until(lambda: be.connected, "the reconnect", timeout=30)
        send(uart, b"two\n")
        assert await got.get() == b"two\n"
        await be.close()
        server.close()
        await server.wait_closed()
    run(main())


def test_file_pty_and_null(tmp_path, no_fd_leak):
    out = tmp_path / "console.log"
    out.write_bytes(b"old\n")

    async def main():
        f = B.create(Chardev("f", "file", path=str(out), append=True))
        uf = uart_on(f)
        await f.open(asyncio.get_running_loop())
        send(uf, b"new\n")
        await until(lambda: out.read_bytes() == b"old\nnew\n", "the file")
        await f.close()
        f = B.create(Chardev("f", "file", path=str(out)))       # truncates
        uf = uart_on(f)
        await f.open(asyncio.get_running_loop())
        send(uf, b"only\n")
        await until(lambda: out.read_bytes() == b"only\n", "the truncated file")
        await f.close()

        p = B.create(Chardev("p", "pty"))
        up = uart_on(p)
        await p.open(asyncio.get_running_loop())
        name = p.info()["filename"]
        assert name.startswith("pty:/dev/pts/")
        fd = os.open(name[4:], os.O_RDWR | os.O_NOCTTY)
        send(up, b"to the terminal\r\n")
        data = b""
        while b"\r\n" not in data:
            data += await asyncio.get_running_loop().run_in_executor(None, os.read, fd, 100)
        assert data == b"to the terminal\r\n"                  # raw: bytes unchanged
        os.write(fd, b"k")
        await until(lambda: up.rx_bytes == 1, "pty input")
        os.close(fd)
        await p.close()

        n = B.create(Chardev("n", "null"))
        un = uart_on(n)
        await n.open(asyncio.get_running_loop())
        send(un, b"x" * 100000)
        assert un.tx_dropped == 0 and n.info()["filename"] == "null"
        await n.close()
    run(main())


def test_fdset_paths_open_a_duplicate_of_the_right_access_mode(tmp_path, no_fd_leak):
    from emu import fdset
    path = tmp_path / "f"
    wr = os.open(path, os.O_WRONLY | os.O_CREAT)
    rd = os.open(path, os.O_RDONLY)
    try:
        sets = {3: [(rd, None), (wr, "w")]}
        dup = fdset.open_path("/dev/fdset/3", os.O_WRONLY | os.O_TRUNC, fdsets=sets)
        assert dup not in (rd, wr) and os.get_inheritable(dup) is False
        os.write(dup, b"via the set")
        os.close(dup)
        assert path.read_bytes() == b"via the set"
        for bad, errno_name in (("/dev/fdset/4", "ENOENT"), ("/dev/fdset/3", None)):
            try:
                fdset.open_path(bad, os.O_RDWR, fdsets=sets)
            except OSError as e:
                assert e.errno == (2 if errno_name else 13)   # no set / no fd of that mode
            else:
                raise AssertionError(bad)
    finally:
        os.close(wr)
        os.close(rd)
