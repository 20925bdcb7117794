"""The QMP server: asyncio monitors on unix sockets, inherited fds and stdio.

One :class:`QmpServer` per machine.  Each endpoint (``-qmp``, or a
``-chardev socket`` used by ``-mon mode=control``) is served by the same
code; each connection is a :class:`Connection` whose
:class:`~emu.qmp.session.Session` has its own capabilities negotiation.
Events go to every negotiated session.  The I/O is here; what commands
run against is :mod:`emu.qmp.session`.

Differences from QEMU 7.2, on purpose:

* a listening endpoint serves up to ``MAX_SESSIONS`` clients at once (QEMU
  serves one and leaves the others waiting in the backlog);
* out-of-band execution is not offered (the greeting's capability list is
  empty), so commands run strictly in order per session.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import stat
import threading
import time
from typing import Any

from emu import trace
from emu.errors import EmuBug
from emu.qmp import hmp  # noqa: F401  (registers human-monitor-command)
from emu.qmp import introspect  # noqa: F401  (registers query-machines, qom-list-types)
from emu.qmp import commands_devices  # noqa: F401  (registers device_add, device_del)
from emu.qmp import commands_net  # noqa: F401  (registers announce-self)
from emu.qmp.commands import dispatch
from emu.qmp.control import Introspection, MachineControl
from emu.qmp.endpoint import MonitorEndpoint, MonitorSetupError
from emu.qmp.errors import GENERIC_ERROR
from emu.qmp.greeting import encode, greeting
from emu.qmp.session import Monitor, Session
from emu.unixsock import listen_unix, remove_owned
from emu.qmp.stream import MAX_SIZE, JsonError, JsonStreamer

log = logging.getLogger("emu.qmp")

MAX_SESSIONS = 16            # concurrent clients per listening endpoint
MAX_OUTPUT = 4 << 20         # bytes queued to a client before its events are dropped
READ_CHUNK = 64 << 10

# QEMU's monitor trace events (-trace handle_qmp_command, -d qmp ...)
_req_ev = trace.event("handle_qmp_command")
_resp_ev = trace.event("monitor_qmp_respond")
_event_ev = trace.event("monitor_protocol_event_emit")


class Connection:
    """One QMP connection: its stream, and its session's protocol state."""

    def __init__(self, server: QmpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, label: str, pretty: bool = False,
                 greeted: bool = False):
        self.server = server
        self.greeted = greeted          # the launcher sent the greeting already
        self.session = Session(server.monitor, label)
        self.reader = reader
        self.writer = writer
        self.label = label
        self.pretty = pretty
        self.events_dropped = 0
        self._streamer = JsonStreamer(max_size=server.max_message)
        self.task: asyncio.Task | None = None

    @property
    def negotiated(self) -> bool:
        return self.session.negotiated

    def _write(self, msg: dict[str, Any], encoded: bytes | None = None) -> None:
        if self.writer.is_closing():
            return
        if encoded is None or self.pretty:
            encoded = encode(msg, self.pretty)
        self.writer.write(encoded)
        if _resp_ev.on:
            _resp_ev(self.label, encoded.decode(errors="replace").rstrip())

    def _answer(self, response: dict[str, Any]) -> None:
        try:
            encoded = encode(response, self.pretty)
        except (TypeError, ValueError) as e:   # the machine returned something not JSON
            self.server.monitor.log_bug("QMP answer is not JSON", e)
            error = {"class": GENERIC_ERROR, "desc": f"internal error: answer is not JSON: {e}"}
            response = {"id": response["id"], "error": error} if "id" in response else {"error": error}
            encoded = None
        self._write(response, encoded)

    def send_event(self, msg: dict[str, Any], encoded: bytes) -> None:
        if not self.session.negotiated or self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > self.server.max_output:
            # A client that does not read must not make us buffer without end.
            self.events_dropped += 1
            return
        self._write(msg, encoded)

    async def run(self) -> None:
        try:
            if not self.greeted:
                self._answer(greeting())
                await self.writer.drain()
            while True:
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    break
                for item in self._streamer.feed(chunk):
                    if _req_ev.on:
                        _req_ev(self.label, str(item) if isinstance(item, JsonError)
                                else json.dumps(item))
                    if isinstance(item, JsonError):
                        response = {"error": {"class": GENERIC_ERROR, "desc": str(item)}}
                    else:
                        response = await dispatch(self.session, item)
                    self._answer(response)
                    await self.writer.drain()
        except (ConnectionError, OSError) as e:
            log.debug("monitor %s: connection lost: %s", self.label, e)
        finally:
            self.close()

    def close(self) -> None:
        self.server.forget(self)
        if not self.writer.is_closing():
            self.writer.close()
        close_reader = getattr(self.reader, "close", None)   # stdio's reader
        if close_reader is not None:
            close_reader()


class _StdinReader:
    """stdin for a stdio monitor.

    A pipe or socket is read through an asyncio pipe transport; anything
    else (a file, /dev/null, a terminal: epoll refuses the first two) by a
    daemon thread.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._queue: asyncio.Queue[bytes] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        if _is_stream(self.fd):
            reader = asyncio.StreamReader(limit=READ_CHUNK)
            self._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self.fd, "rb", buffering=0))
            self._reader = reader
        else:
            self._queue = asyncio.Queue()
            threading.Thread(target=self._pump, args=(loop, self._queue), daemon=True,
                             name="qmp-stdin").start()

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
        data = b"x"
        while data:
            try:
                data = os.read(self.fd, READ_CHUNK)
            except OSError:
                data = b""
            try:
                loop.call_soon_threadsafe(queue.put_nowait, data)
            except RuntimeError:  # loop closed
                return

    async def read(self, n: int) -> bytes:
        if self._reader is not None:
            return await self._reader.read(n)
        assert self._queue is not None
        return await self._queue.get()

    def close(self) -> None:
        if self._transport is not None:   # closes the fd
            self._transport.close()
            self._transport = None
        # Otherwise the thread owns the fd (a file: it reads to the end).


class _FileWriter:
    """The StreamWriter subset a Connection uses, writing synchronously: for
    stdout on a file or terminal, which asyncio's pipe transport refuses."""

    def __init__(self, fd: int):
        self.fd = fd
        self.transport = self

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.fd >= 0:
            view = view[os.write(self.fd, view):]

    async def drain(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    abort = close

    async def wait_closed(self) -> None:
        pass


def _is_stream(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _stdout_writer(fd: int) -> Any:
    if not _is_stream(fd):
        return _FileWriter(fd)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(fd, "wb", buffering=0))
    return asyncio.StreamWriter(transport, protocol, None, loop)


class _Listener:
    """A listening endpoint: its asyncio server and the socket path we own."""

    def __init__(self, ep: MonitorEndpoint):
        self.ep = ep
        self.server: asyncio.base_events.Server | None = None
        self.sessions: set[Connection] = set()
        self.first_client = asyncio.Event()
        self.owned_path: tuple[str, int, int] | None = None   # (path, st_dev, st_ino)


class QmpServer:
    """The monitors of one machine.

    The server may start before the machine exists (``machine=None``): the
    process listens first, so a client gets its greeting within
    milliseconds, then builds the machine and calls :meth:`attach`.
    Commands that need the machine wait for it meanwhile.
    """

    def __init__(self, machine: MachineControl | None = None, *, max_message: int = MAX_SIZE,
                 max_output: int = MAX_OUTPUT, introspection: Introspection | None = None):
        self.monitor = Monitor(machine, chardevs=self._chardev_info, introspection=introspection)
        self.max_message = max_message
        self.max_output = max_output
        self._sessions: set[Connection] = set()
        self._listeners: list[_Listener] = []
        self._endpoints: list[MonitorEndpoint] = []
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False

    @property
    def machine(self) -> MachineControl:
        return self.monitor.machine

    def attach(self, machine: MachineControl) -> None:
        """Give the server its machine; commands waiting for it proceed."""
        self.monitor.attach(machine)

    def _chardev_info(self) -> list[dict[str, Any]]:
        """``query-chardev`` entries of the monitors' own chardevs."""
        out = []
        for ep in self._endpoints:
            name = ep.filename()
            listener = next((lis for lis in self._listeners if lis.ep is ep), None)
            if listener is not None and not listener.sessions:
                name = f"disconnected:{name}"
            out.append({"label": ep.label, "filename": name, "frontend-open": True})
        return out

    # -- events ------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to every negotiated session; callable from any thread.

        The timestamp is taken here, when the event happens, not when it is
        written.  Before any monitor exists, or after close, it is dropped.
        """
        now = time.time()
        msg: dict[str, Any] = {"timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1e6)},
                               "event": event}
        if data is not None:
            msg["data"] = data
        try:
            encoded = encode(msg)     # here, so a bad event fails at its source
        except (TypeError, ValueError) as e:
            raise EmuBug(f"event {event} is not JSON: {e}") from e
        if _event_ev.on:
            _event_ev(event, json.dumps(data) if data is not None else "null")
        loop = self._loop
        if loop is None or self._closed:
            return
        if threading.get_ident() == self._loop_thread:
            self._broadcast(msg, encoded)
        else:
            try:
                loop.call_soon_threadsafe(self._broadcast, msg, encoded)
            except RuntimeError:  # loop closed meanwhile
                pass

    def _broadcast(self, msg: dict[str, Any], encoded: bytes) -> None:
        for s in list(self._sessions):
            s.send_event(msg, encoded)

    # -- endpoints ---------------------------------------------------------------

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
              label: str, pretty: bool = False, greeted: bool = False) -> Connection:
        """Serve QMP on an established stream (also used by every endpoint);
        *greeted*: the greeting was sent already."""
        self._bind_loop()
        s = Connection(self, reader, writer, label, pretty, greeted)
        self._sessions.add(s)
        s.task = self._spawn(s.run())
        return s

    async def add_monitor(self, ep: MonitorEndpoint) -> None:
        """Bind or connect *ep* now; serve it in the background.

        Raises :class:`MonitorSetupError` with a QEMU-like message.
        """
        self._bind_loop()
        if self._closed:
            raise MonitorSetupError("monitor server is closed")
        if sum(x is not None and x is not False for x in (ep.path, ep.fd, ep.stdio or None)) != 1:
            raise MonitorSetupError(f"monitor {ep.label}: exactly one of path, fd or stdio is required")
        if ep.stdio:
            await self._add_stdio(ep)
        elif ep.fd is not None:
            await self._add_fd(ep)
        elif ep.server:
            await self._listen_unix(ep)
        else:
            await self._connect_unix(ep, first=True)
        self._endpoints.append(ep)

    async def adopt(self, early: Any) -> None:
        """Take over a monitor the launcher set up before asyncio was
        imported (:class:`emu.launcher.early.EarlyMonitor`): its listening
        socket and the clients it accepted, or its connected socket, or
        stdio -- each greeted already (or not: ``greeted`` says)."""
        self._bind_loop()
        ep = early.ep
        if self._closed:
            early.close()
            raise MonitorSetupError("monitor server is closed")
        if ep.stdio:
            await self._add_stdio(ep, greeted=early.stdio_greeted)
        elif early.listener is not None:
            lis = await self._start_listener(ep, sock=early.listener)
            lis.owned_path = early.owned_path
            for conn, greeted in early.clients:
                reader, writer = await asyncio.open_connection(sock=conn)
                s = self.serve(reader, writer, ep.label, ep.pretty, greeted=greeted)
                lis.sessions.add(s)
                s.task.add_done_callback(lambda _t, s=s: lis.sessions.discard(s))
                lis.first_client.set()
        else:
            for conn, greeted in early.clients:         # one connected socket
                reader, writer = await asyncio.open_connection(sock=conn)
                s = self.serve(reader, writer, ep.label, ep.pretty, greeted=greeted)
                if ep.reconnect and ep.path is not None:
                    s.task.add_done_callback(
                        lambda _t: self._closed or self._spawn(self._reconnect(ep)))
            if not early.clients and ep.reconnect and ep.path is not None:
                self._spawn(self._reconnect(ep))
        early.clients = []
        early.listener = None
        self._endpoints.append(ep)

    async def _start_listener(self, ep: MonitorEndpoint, *, path: str | None = None,
                              sock: socket.socket | None = None) -> _Listener:
        lis = _Listener(ep)

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self._closed or len(lis.sessions) >= MAX_SESSIONS:
                writer.close()
                return
            s = self.serve(reader, writer, ep.label, ep.pretty)
            lis.sessions.add(s)
            s.task.add_done_callback(lambda _t: lis.sessions.discard(s))
            lis.first_client.set()

        if path is not None:
            lis.server = await asyncio.start_unix_server(on_client, path=path)
        else:
            lis.server = await asyncio.start_server(on_client, sock=sock)
        self._listeners.append(lis)
        return lis

    async def _listen_unix(self, ep: MonitorEndpoint) -> None:
        path = ep.path
        assert path is not None
        try:
            # the path appears only once the socket listens (emu.unixsock)
            sock, owned = listen_unix(path)
        except OSError as e:
            raise MonitorSetupError(f"Failed to bind socket to {path}: {e.strerror}") from None
        try:
            lis = await self._start_listener(ep, sock=sock)
        except BaseException:
            sock.close()
            remove_owned(owned)
            raise
        lis.owned_path = owned

    async def _connect_unix(self, ep: MonitorEndpoint, first: bool) -> None:
        assert ep.path is not None
        try:
            reader, writer = await asyncio.open_unix_connection(ep.path)
        except OSError as e:
            if first and not ep.reconnect:
                raise MonitorSetupError(f"Failed to connect to '{ep.path}': {e.strerror}") from None
            self._spawn(self._reconnect(ep))
            return
        s = self.serve(reader, writer, ep.label, ep.pretty)
        if ep.reconnect:
            s.task.add_done_callback(lambda _t: self._closed or self._spawn(self._reconnect(ep)))

    async def _reconnect(self, ep: MonitorEndpoint) -> None:
        await asyncio.sleep(ep.reconnect)
        if not self._closed:
            await self._connect_unix(ep, first=False)

    async def _add_fd(self, ep: MonitorEndpoint) -> None:
        # The fd is ours from here on, also when it turns out to be unusable.
        fd = ep.fd
        assert fd is not None
        try:
            st = os.fstat(fd)
        except OSError as e:
            raise MonitorSetupError(f"Unable to use fd {fd}: {e.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            os.close(fd)
            raise MonitorSetupError(f"File descriptor '{fd}' is not a socket")
        sock = socket.socket(fileno=fd)      # takes ownership of the fd
        try:
            os.set_inheritable(fd, False)
            if sock.type != socket.SOCK_STREAM:
                raise MonitorSetupError(f"File descriptor '{fd}' is not a stream socket")
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if listening:
                await self._start_listener(ep, sock=sock)
            else:
                reader, writer = await asyncio.open_connection(sock=sock)
                self.serve(reader, writer, ep.label, ep.pretty)
        except BaseException:
            sock.close()
            raise

    async def _add_stdio(self, ep: MonitorEndpoint, greeted: bool = False) -> None:
        # Duplicates, so that closing the session leaves the process's stdio open.
        reader = _StdinReader(os.dup(0))
        await reader.open()
        writer = await _stdout_writer(os.dup(1))
        self.serve(reader, writer, ep.label, ep.pretty, greeted)  # type: ignore[arg-type]

    async def wait_for_clients(self) -> None:
        """Return once every ``wait=on`` listener has had a client (QEMU's
        start-up hold for ``server=on`` without ``wait=off``)."""
        await asyncio.gather(*(lis.first_client.wait() for lis in self._listeners if lis.ep.wait))

    @property
    def sessions(self) -> frozenset[Connection]:
        return frozenset(self._sessions)

    def forget(self, conn: Connection) -> None:
        """*conn* has closed."""
        self._sessions.discard(conn)

    # -- shutdown ----------------------------------------------------------------

    async def close(self) -> None:
        """Flush what was written (the answer to ``quit``, SHUTDOWN), close
        every session and listener, and remove the socket files we created."""
        if self._closed:
            return
        self._closed = True
        for lis in self._listeners:
            if lis.server is not None:
                lis.server.close()
        sessions = list(self._sessions)
        for s in sessions:
            s.close()
        for s in sessions:
            try:
                await asyncio.wait_for(s.writer.wait_closed(), timeout=1.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                s.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lis in self._listeners:
            if lis.server is not None:
                await lis.server.wait_closed()
            if lis.owned_path is not None:
                path, dev, ino = lis.owned_path
                try:
                    st = os.lstat(path)
                    if (st.st_dev, st.st_ino) == (dev, ino):
                        os.unlink(path)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        log.warning("cannot remove %s: %s", path, e)
