"""Where the qtest stream comes from: the chardev of ``-qtest``.

* ``-qtest unix:PATH`` (what libqtest passes): connect to PATH, as QEMU's
  client-mode chardev does; with ``reconnect=N``, connect again N seconds
  after the client went away.
* ``-qtest chardev:ID`` with ``-chardev socket,id=ID,path=P,server=on``:
  listen; one client is served at a time (the next one is accepted but
  not read until the current one closes, as if it waited in QEMU's
  backlog), and a
  new client after one that went away starts a new conversation (IRQ
  levels back to 0; the intercepted device stays the process's).
  ``wait=on`` (the default) holds start-up until the first client.
* ``fd=N``: an inherited socket, connected (one client) or listening.

:meth:`QtestEndpoint.open` makes the connection or the listener (a failure
raises :class:`QtestSetupError` with QEMU's text); :meth:`serve` starts
serving once the machine runs, one :class:`~emu.qtest.session.QtestSession`
for every connection in turn.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat

from emu.errors import EmuError
from emu.qtest.client import QtestConnection
from emu.qtest.session import QtestSession

log = logging.getLogger(__name__)


class QtestSetupError(EmuError):
    """The qtest chardev cannot be opened (connect, bind, a bad fd)."""


class QtestEndpoint:
    def __init__(self, *, path: str | None = None, fd: int | None = None,
                 server: bool = False, wait: bool = True, reconnect: float = 0.0):
        if (path is None) == (fd is None):
            raise QtestSetupError("exactly one of path or fd is required")
        self.session: QtestSession | None = None
        self.path, self.fd = path, fd
        self.server, self.wait, self.reconnect = server, wait, reconnect
        self.connections = 0              # served so far (a counter for query-emu-stats)
        self._queue: asyncio.Queue | None = None
        self._listener: asyncio.base_events.Server | None = None
        self._owned_path: tuple[str, int, int] | None = None
        self._first = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    # -- opening --------------------------------------------------------------------------------
    async def open(self) -> None:
        self._queue = asyncio.Queue()
        if self.fd is not None:
            await self._open_fd()
        elif self.server:
            await self._listen()
        else:
            await self._connect(first=True)

    async def _connect(self, first: bool) -> bool:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path)
        except OSError as e:
            if first:
                raise QtestSetupError(f"Failed to connect to '{self.path}': {e.strerror}") from None
            return False
        self._client(reader, writer)
        return True

    async def _listen(self) -> None:
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            # a stale socket is replaced, as QEMU does; anything else is not ours to remove
            if not stat.S_ISSOCK(st.st_mode):
                raise QtestSetupError(f"Failed to bind socket to {path}: Address already in use")
            os.unlink(path)
        try:
            self._listener = await asyncio.start_unix_server(self._client, path=path, backlog=1)
        except OSError as e:
            raise QtestSetupError(f"Failed to bind socket to {path}: {e.strerror}") from None
        st = os.stat(path)
        self._owned_path = (path, st.st_dev, st.st_ino)

    async def _open_fd(self) -> None:
        fd = self.fd
        try:
            st = os.fstat(fd)
        except OSError as e:
            raise QtestSetupError(f"Unable to use fd {fd}: {e.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise QtestSetupError(f"File descriptor '{fd}' is not a socket")
        sock = socket.socket(fileno=fd)      # ours from here on
        try:
            os.set_inheritable(fd, False)
            if sock.type != socket.SOCK_STREAM:
                raise QtestSetupError(f"File descriptor '{fd}' is not a stream socket")
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                self._listener = await asyncio.start_unix_server(self._client, sock=sock)
            else:
                self._client(*await asyncio.open_unix_connection(sock=sock))
        except BaseException:
            sock.close()
            raise

    def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        self._queue.put_nowait((reader, writer))
        self._first.set()

    async def wait_for_client(self) -> None:
        """Hold until the first client (a listening ``wait=on`` endpoint)."""
        if self._listener is not None and self.wait:
            await self._first.wait()

    # -- serving --------------------------------------------------------------------------------
    def serve(self, session: QtestSession) -> None:
        """Serve the connections with ``session``, one at a time, from now on
        (a client that connected before waits, its commands unread)."""
        self.session = session
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while not self._closed:
            reader, writer = await self._queue.get()
            self.connections += 1
            await QtestConnection(self.session, reader, writer).run()
            if self._listener is None and self.reconnect and self.fd is None:
                while not self._closed and not await self._reconnect():
                    pass
            elif self._listener is None and self._queue.empty():
                return                # a client connection that ended: nothing more to serve

    async def _reconnect(self) -> bool:
        await asyncio.sleep(self.reconnect)
        return self._closed or await self._connect(first=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        while self._queue is not None and not self._queue.empty():
            _, writer = self._queue.get_nowait()
            writer.close()
        if self._listener is not None:
            await self._listener.wait_closed()
        if self._owned_path is not None:
            path, dev, ino = self._owned_path
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    os.unlink(path)
            except OSError:
                pass
