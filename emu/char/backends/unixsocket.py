"""``-chardev socket``: a unix socket listening (one client at a time, the
last :data:`~emu.char.backends.base.LIMIT` bytes kept for the next one) or
connecting (``reconnect=N``), or an inherited fd; served on the event loop,
never blocking on the peer's fd."""
from __future__ import annotations

import asyncio
import os
import select
import socket
import sys

from emu.char.backends.base import HANGUP_CHECK, LIMIT, READ_CHUNK, Backend, ChardevError, log
from emu.config import Chardev
from emu.unixsock import listen_unix, remove_owned


class SocketBackend(Backend):
    kind = "socket"

    def __init__(self, cfg: Chardev):
        super().__init__(cfg)
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self._owned_path: tuple[str, int, int] | None = None
        self._writing = False
        self._reading = False
        self._reconnect: asyncio.TimerHandle | None = None
        self._hup_timer: asyncio.TimerHandle | None = None
        self._first_client: asyncio.Event | None = None
        self.connections = 0

    # output while nobody is connected: the backlog keeps the newest bytes
    def room(self) -> int:
        return LIMIT if self.conn is None else super().room()

    def write(self, data: bytes) -> int:
        if self.conn is None and not self.closed:
            with self._lock:
                self._out += data
                excess = len(self._out) - LIMIT
                if excess > 0:
                    del self._out[:excess]
                    self.dropped += excess
            if self.log_copy is not None:
                self.log_copy.write(data)
            return len(data)
        return super().write(data)

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        await super().open(loop)
        c = self.cfg
        if c.fd is not None:
            self._adopt_fd(c.fd)
        elif c.server:
            self._listen(c.path)
        else:
            try:
                self._connect()
            except OSError as e:
                if not c.reconnect:
                    raise ChardevError(f"Failed to connect to '{c.path}': {e.strerror}") from None
                self._schedule_reconnect()
        if self.listener is not None:
            loop.add_reader(self.listener.fileno(), self._accept)
            if c.server and c.wait:
                # QEMU holds start-up until the first client of a server=on chardev
                print(f"emu: waiting for connection on: {self.filename()}", file=sys.stderr)
                self._first_client = asyncio.Event()
                await self._first_client.wait()

    def _listen(self, path: str | None) -> None:
        assert path is not None
        try:
            self.listener, self._owned_path = listen_unix(path, 1)
        except OSError as e:
            raise ChardevError(f"Failed to bind socket to {path}: {e.strerror}") from None

    def _adopt_fd(self, fd: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise ChardevError(f"Unable to use fd {fd}: {e.strerror}") from None
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            self.listener = sock
        else:
            self._connected(sock)

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.cfg.path)     # a unix connect completes or fails at once
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._connected(sock)

    def _schedule_reconnect(self) -> None:
        if self.closed or not self.cfg.reconnect or self.loop is None:
            return
        self._reconnect = self.loop.call_later(self.cfg.reconnect, self._try_reconnect)

    def _try_reconnect(self) -> None:
        self._reconnect = None
        try:
            self._connect()
        except OSError:
            self._schedule_reconnect()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("chardev %s: accept failed: %s", self.id, e)
            return
        sock.setblocking(False)
        # one client at a time: the next waits in the backlog until this one leaves
        self.loop.remove_reader(self.listener.fileno())
        self._connected(sock)
        if self._first_client is not None:
            self._first_client.set()

    def _connected(self, sock: socket.socket) -> None:
        self.conn = sock
        self.connections += 1
        self._flush()
        self._want_read()

    def _disconnected(self) -> None:
        if self.conn is None:
            return
        self._stop_io()
        self.conn.close()
        self.conn = None
        if self.frontend is not None:
            self.frontend.tx_room_changed()         # THRE again: output is kept or dropped
        if self.closed:
            return
        if self.listener is not None:
            self.loop.add_reader(self.listener.fileno(), self._accept)
        else:
            self._drop_all()
            self._schedule_reconnect()

    def _stop_io(self) -> None:
        if self._hup_timer is not None:
            self._hup_timer.cancel()
            self._hup_timer = None
        if self.conn is not None and self.loop is not None:
            if self._writing:
                self.loop.remove_writer(self.conn.fileno())
            if self._reading:
                self.loop.remove_reader(self.conn.fileno())
        self._writing = self._reading = False

    # output
    def _wake_writer(self) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._flush)
            except RuntimeError:        # the loop is closing
                pass

    def _flush(self) -> None:
        if self.conn is None:
            return
        while True:
            chunk = self._take(READ_CHUNK * 4)
            if not chunk:
                break
            try:
                n = self.conn.send(chunk)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._disconnected()
                return
            if n:
                self._consumed(n)
            if n < len(chunk):
                break
        pending = bool(self._take(1))
        if pending and not self._writing:
            self.loop.add_writer(self.conn.fileno(), self._flush)
            self._writing = True
        elif not pending and self._writing:
            self.loop.remove_writer(self.conn.fileno())
            self._writing = False

    # input
    def rx_room_changed(self) -> None:
        if self.loop is not None and not self._reading:
            try:
                self.loop.call_soon_threadsafe(self._want_read)
            except RuntimeError:
                pass

    def _want_read(self) -> None:
        if self.conn is None or self._reading:
            return
        if self.frontend is None or self.frontend.rx_room() > 0:
            if self._hup_timer is not None:
                self._hup_timer.cancel()
                self._hup_timer = None
            self.loop.add_reader(self.conn.fileno(), self._on_readable)
            self._reading = True
        elif self._hup_timer is None:
            self._watch_hangup()

    def _watch_hangup(self) -> None:
        """Input is held back (the FIFO is full): a peer that leaves must
        still be noticed, without reading what it sent (QEMU's HUP watch)."""
        self._hup_timer = None
        if self.conn is None or self._reading:
            return
        p = select.poll()
        p.register(self.conn.fileno(), select.POLLRDHUP)
        if any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in p.poll(0)):
            self._disconnected()
            return
        self._hup_timer = self.loop.call_later(HANGUP_CHECK, self._watch_hangup)

    def _on_readable(self) -> None:
        room = self.frontend.rx_room() if self.frontend is not None else READ_CHUNK
        if room <= 0:
            self.loop.remove_reader(self.conn.fileno())
            self._reading = False
            self._watch_hangup()
            return
        try:
            data = self.conn.recv(min(room, READ_CHUNK))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._disconnected()
            return
        if self.frontend is not None:
            self.frontend.receive(data)

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def filename(self) -> str:
        c = self.cfg
        name = f"unix:{c.path}" + (",server=on" if c.server else "") if c.path else f"fd:{c.fd}"
        return name if self.conn is not None else f"disconnected:{name}"

    async def close(self) -> None:
        await super().close()
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self.conn is not None:
            # what the guest wrote last reaches a reading client (bounded: non-blocking)
            self._flush()
            self._stop_io()
            self.conn.close()
            self.conn = None
        if self.listener is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        remove_owned(self._owned_path)
        self._owned_path = None
        if self._first_client is not None:
            self._first_client.set()
