"""Chardev backends for serial ports: where a UART's bytes go and come from.

One backend per ``-chardev`` (or legacy ``-serial SPEC``) that a serial
port uses:

* ``socket``: a unix socket, listening (``server=on``: one client at a
  time, as QEMU; the next one is accepted when it leaves) or connecting
  (``reconnect=N`` retries), or an inherited fd (listening or connected);
* ``file``: output only, truncated or ``append=on``; ``/dev/fdset/N`` works;
* ``stdio``: stdout and stdin; ``pty``: a new pseudo-terminal, its path
  printed as QEMU prints it and shown by ``query-chardev``; ``null``.

Output from the frontend (the UART, on the guest thread) goes into a
bounded buffer (:data:`LIMIT`); :meth:`Backend.room` is what the UART
reports as THRE, so a peer that does not read slows the guest's console
down instead of growing emu's memory.  A listening socket with no client
keeps the last :data:`LIMIT` bytes and gives them to the next client:
emu's guest boots in milliseconds, before a harness has connected its
console (QEMU drops output while no client is connected; emu's console
would otherwise always lose its boot lines).  Input goes to the
frontend only as far as it has room (its receive FIFO), as QEMU's
``can_receive``.

Sockets are served on the event loop (never blocking on a peer's fd);
stdio, files and ptys by a writer thread with blocking writes (stdout
shares its open file description with the terminal and stderr: making it
non-blocking would break them) and, for input, a reader thread.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import sys
import threading
from typing import Any, Callable, Protocol

from emu.config import Chardev
from emu.fdset import FdSets, open_path
from emu.unixsock import listen_unix, remove_owned

log = logging.getLogger("emu.char")

LIMIT = 64 << 10            # bytes of output buffered per chardev
READ_CHUNK = 4096
HANGUP_CHECK = 0.2          # seconds between hang-up checks while input is held back


class Frontend(Protocol):
    """What a backend feeds: the UART (emu.char.uart.Uart16550)."""

    def rx_room(self) -> int: ...
    def receive(self, data: bytes) -> None: ...
    def tx_room_changed(self) -> None: ...


class ChardevError(Exception):
    """A chardev that cannot be opened (start-up fails, naming the option)."""


class LogCopy:
    """``logfile=``: a copy of everything the frontend writes, by a writer
    thread with its own bounded buffer (the file may be a pipe to a log
    daemon, libvirt's virtlogd: it must never stall the guest)."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"chardev-{name}-log", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        with self._cond:
            room = LIMIT - len(self._buf)
            self._buf += data[:room]
            self.dropped += max(0, len(data) - room)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._buf and not self._closed:
                    self._cond.wait()
                if not self._buf:
                    return
                chunk = bytes(self._buf)
                self._buf.clear()
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as e:
                log.warning("chardev log: write failed: %s; the copy stops", e)
                return

    def close(self, timeout: float = 1.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        try:
            os.close(self.fd)
        except OSError:
            pass


class Backend:
    """The common part: the output buffer and the frontend."""

    kind = ""

    def __init__(self, cfg: Chardev):
        self.cfg = cfg
        self.id = cfg.id
        self.frontend: Frontend | None = None
        self._lock = threading.Lock()
        self._out = bytearray()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.written = 0            # bytes that reached the peer / file
        self.dropped = 0            # bytes lost (backlog trimmed, peer gone, write error)
        self.closed = False
        self.log_copy: LogCopy | None = None

    # -- frontend side (any thread) -----------------------------------------------------
    def attach(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def room(self) -> int:
        with self._lock:
            return LIMIT - len(self._out)

    def write(self, data: bytes) -> int:
        with self._lock:
            if self.closed:
                return len(data)
            n = min(len(data), LIMIT - len(self._out))
            was_empty = not self._out
            self._out += data[:n]
        if n and was_empty:
            self._wake_writer()
        if n and self.log_copy is not None:
            self.log_copy.write(data[:n])
        return n

    def open_log(self, opener: Callable[[str, int], int]) -> None:
        """``logfile=``/``logappend=``: start the copy (before :meth:`open`)."""
        c = self.cfg
        if c.logfile is None:
            return
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if c.logappend else os.O_TRUNC)
        try:
            fd = opener(c.logfile, flags)
        except OSError as e:
            raise ChardevError(f"Unable to open logfile {c.logfile}: {e.strerror}") from None
        self.log_copy = LogCopy(fd, self.id)

    def close_log(self) -> None:
        if self.log_copy is not None:
            self.log_copy.close()
            self.log_copy = None

    def rx_room_changed(self) -> None:
        """The frontend read from its FIFO (guest thread): it may take more."""

    # -- to implement -------------------------------------------------------------------------
    def _wake_writer(self) -> None:
        raise NotImplementedError

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def close(self) -> None:
        self.closed = True

    def filename(self) -> str:
        return self.kind

    @property
    def connected(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        """``query-chardev``'s entry (QEMU's ChardevInfo)."""
        return {"label": self.id, "filename": self.filename(), "frontend-open": True}

    def stats(self) -> dict[str, Any]:
        return {"written": self.written, "dropped": self.dropped, "buffered": len(self._out)}

    # helpers
    def _take(self, n: int) -> bytes:
        with self._lock:
            chunk = bytes(self._out[:n])
            return chunk

    def _consumed(self, n: int) -> None:
        with self._lock:
            full = len(self._out) >= LIMIT
            del self._out[:n]
        self.written += n
        if full and n and self.frontend is not None:
            self.frontend.tx_room_changed()

    def _drop_all(self) -> None:
        with self._lock:
            self.dropped += len(self._out)
            self._out.clear()


class NullBackend(Backend):
    kind = "null"

    def room(self) -> int:
        return LIMIT

    def write(self, data: bytes) -> int:
        if self.log_copy is not None:
            self.log_copy.write(data)
        return len(data)

    def _wake_writer(self) -> None:
        pass


# -- sockets (event loop) ---------------------------------------------------------------------

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


# -- files, stdio, ptys (threads) -------------------------------------------------------------

class FdBackend(Backend):
    """Output by a writer thread (blocking writes), input by a reader thread."""

    def __init__(self, cfg: Chardev, fdsets: FdSets | None = None,
                 opener: Callable[[str, int], int] | None = None):
        super().__init__(cfg)
        self.fdsets = fdsets
        #: (path, flags) -> fd for files this backend creates (the launcher's,
        #: which removes them again if start-up fails)
        self.opener = opener or (lambda path, flags: open_path(path, flags, 0o666, fdsets))
        self.out_fd = -1
        self.in_fd = -1
        self._extra_fds: list[int] = []
        self._wake = threading.Condition(self._lock)
        self._room = threading.Event()
        self._room.set()
        self._threads: list[threading.Thread] = []
        self.broken = False

    def _open_fds(self) -> None:
        raise NotImplementedError

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        await super().open(loop)
        self._open_fds()
        if self.out_fd >= 0:
            self._spawn(self._writer, "out")
        if self.in_fd >= 0:
            self._spawn(self._reader, "in")

    def _spawn(self, target: Callable[[], None], what: str) -> None:
        t = threading.Thread(target=target, name=f"chardev-{self.id}-{what}", daemon=True)
        t.start()
        self._threads.append(t)

    def _wake_writer(self) -> None:
        with self._wake:
            self._wake.notify()

    def _writer(self) -> None:
        while True:
            with self._wake:
                while not self._out and not self.closed:
                    self._wake.wait()
                if not self._out and self.closed:
                    return
                chunk = bytes(self._out[:READ_CHUNK * 4])
            try:
                n = os.write(self.out_fd, chunk)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                # a closed pipe, a full disk, a hung-up pty: the console goes quiet
                log.warning("chardev %s: write failed: %s; its output is dropped", self.id, e)
                self.broken = True
                with self._lock:
                    self.dropped += len(self._out)
                    self._out.clear()
                    self.closed = True
                return
            self._consumed(n)

    def write(self, data: bytes) -> int:
        if self.broken:
            self.dropped += len(data)
            return len(data)
        return super().write(data)

    def rx_room_changed(self) -> None:
        self._room.set()

    def _reader(self) -> None:
        fd = self.in_fd
        while not self.closed:
            room = self.frontend.rx_room() if self.frontend is not None else READ_CHUNK
            if room <= 0:
                self._room.clear()
                if self.frontend is not None and self.frontend.rx_room() <= 0:
                    self._room.wait(0.2)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(fd, min(room, READ_CHUNK))
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                return                      # EIO: a pty nobody holds open
            if not data:
                return                      # end of input (stdin closed)
            if self.frontend is not None:
                self.frontend.receive(data)

    async def close(self) -> None:
        with self._wake:
            self.closed = True
            self._wake.notify_all()
        self._room.set()
        for t in self._threads:
            # a writer blocked on a peer that never reads is left behind (daemon)
            await asyncio.get_running_loop().run_in_executor(None, t.join, 1.0)
        for fd in {self.out_fd, self.in_fd, *self._extra_fds} - {-1}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.out_fd = self.in_fd = -1
        self._extra_fds = []


class FileBackend(FdBackend):
    kind = "file"

    def _open_fds(self) -> None:
        c = self.cfg
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if c.append else os.O_TRUNC)
        try:
            self.out_fd = self.opener(c.path, flags)
        except OSError as e:
            raise ChardevError(f"Could not open '{c.path}': {e.strerror}") from None


class StdioBackend(FdBackend):
    kind = "stdio"

    def _open_fds(self) -> None:
        # duplicates: closing the chardev leaves the process's stdio alone
        self.out_fd = os.dup(1)
        self.in_fd = os.dup(0)
        for fd in (self.out_fd, self.in_fd):
            os.set_inheritable(fd, False)


class PtyBackend(FdBackend):
    kind = "pty"

    def __init__(self, cfg: Chardev, fdsets: FdSets | None = None, opener=None):
        super().__init__(cfg, fdsets, opener)
        self.pty_path = ""

    def _open_fds(self) -> None:
        import tty
        master, slave = os.openpty()
        for fd in (master, slave):
            os.set_inheritable(fd, False)
        tty.setraw(slave)           # bytes pass unchanged, as QEMU's raw pty
        self.pty_path = os.ttyname(slave)
        self.out_fd = master
        self.in_fd = os.dup(master)
        os.set_inheritable(self.in_fd, False)
        # our own hold on the slave: the master neither fails (EIO) nor
        # blocks for good before a terminal program opens it
        self._extra_fds = [slave]
        print(f"char device redirected to {self.pty_path} (label {self.id})", file=sys.stderr)

    def filename(self) -> str:
        return f"pty:{self.pty_path}"


def create(cfg: Chardev, fdsets: FdSets | None = None,
           opener: Callable[[str, int], int] | None = None) -> Backend:
    """The backend of a chardev a serial port uses."""
    if cfg.backend == "socket":
        return SocketBackend(cfg)
    if cfg.backend == "file":
        return FileBackend(cfg, fdsets, opener)
    if cfg.backend == "stdio":
        return StdioBackend(cfg, fdsets)
    if cfg.backend == "pty":
        return PtyBackend(cfg, fdsets)
    return NullBackend(cfg)
