"""Run a :class:`~emu.qtest.session.QtestSession` over a stream socket.

QEMU's ``-qtest unix:PATH`` is a chardev in client mode: QEMU connects to
the socket libqtest listens on (and then libqtest accepts the QMP one).
:meth:`QtestConnection.connect_unix` does the same.  One task reads and
feeds the session; replies and asynchronous ``IRQ`` lines are written as
they are queued, with ``drain``; no more input is read while the session
has lines waiting on its output bound, so a client that stops reading its
replies stalls only itself.
"""
from __future__ import annotations

import asyncio

from emu.qtest.session import QtestSession

READ_CHUNK = 64 * 1024


class QtestConnection:
    def __init__(self, session: QtestSession, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.session = session
        self._reader = reader
        self._writer = writer
        self._wake = asyncio.Event()
        session.on_output = self._wake.set

    @classmethod
    async def connect_unix(cls, path: str, session: QtestSession) -> QtestConnection:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(session, reader, writer)

    async def run(self) -> None:
        """Serve until the client closes the connection (or the task is
        cancelled); the socket is closed on the way out."""
        self.session.connection_made()
        pusher = asyncio.ensure_future(self._push_async())
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                self.session.receive(data)
                await self._flush()
                while self.session.pending_lines:   # output was over its bound
                    self.session.process_pending()
                    await self._flush()
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            pusher.cancel()
            try:
                await pusher
            except (asyncio.CancelledError, ConnectionError):
                pass
            self.session.connection_lost()
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, BrokenPipeError):
                pass

    async def _flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self._writer.write(out)
            await self._writer.drain()

    async def _push_async(self) -> None:
        # IRQ lines raised between commands (a device's timer, a back-end)
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
