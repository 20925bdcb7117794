"""What every chardev backend shares: the bounded output buffer the UART's
THRE reads, the hand-over to the frontend, the ``logfile=`` copy, and the
``null`` backend."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Callable, Protocol

from emu.config import Chardev

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
