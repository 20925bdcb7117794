"""asyncio transport: unix stream sockets carrying vhost-user messages.

Built on non-blocking sockets, ``loop.add_reader`` and
``recvmsg``/``sendmsg`` with SCM_RIGHTS, because asyncio's stream API
cannot pass fds.  Each read asks for at most what the message at hand still
needs (the header, then the payload), so the fds the kernel hands over with
a read belong to exactly that message.  ``MSG_CTRUNC`` (more fds than
``max_fds``) is a malformed message: whatever arrived is closed.

* :class:`MessageStream` -- one socket, decoded messages in, messages out;
* :class:`BackendConnection` -- a stream driving a :class:`Backend`, plus the
  back-end request channel it opens on SET_BACKEND_REQ_FD;
* :class:`BackendServer` -- listens on a path (or an inherited listening
  fd) and serves one front-end at a time, as QEMU's chardev does: a second
  client is accepted and closed at once while one is connected;
* :class:`BackendClient` -- the connecting side, with QEMU's
  ``reconnect=SECONDS`` behaviour (retry with back-off after every failure
  and every short-lived connection; every new connection starts from
  scratch, so the peer redoes the handshake).  Listening and connecting
  sockets themselves are :mod:`emu.vhost_user.sockets`'.

The front-end's asyncio client lives in :mod:`emu.vhost_user.client`.
"""
from __future__ import annotations

import array
import asyncio
import collections
import errno
import logging
import os
import socket
from typing import Callable

from emu import ratelimit
from emu.errors import EmuBug, PeerError
from emu.ratelimit import LogLimiter
from emu.vhost_user.backend import Backend
from emu.vhost_user.codec import DEFAULT_MAX_PAYLOAD, Decoder, Message, close_fds, encode
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.errors import (MalformedMessage, PeerClosed, PeerTimeout,
                                   TruncatedMessage, UsageError)
from emu.vhost_user.messages import MAX_FDS, BackendRequest, FrontendRequest
from emu.vhost_user.sockets import Backoff, backlog_for, connect_unix, listen_unix

log = logging.getLogger(__name__)

RECV_BATCH = 64          # messages decoded per wake-up before yielding to the loop
QUEUE_HIGH_WATER = 256   # decoded, unprocessed messages before reading pauses
OUT_HIGH_WATER = 1 << 20  # queued output bytes before drain() waits
DEFAULT_MESSAGE_TIMEOUT = 10.0  # s from a message's first byte to its last


def _fds_from(ancdata) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return list(fds)


class MessageStream:
    """Messages over one unix stream socket.  Takes ownership of ``sock``."""

    def __init__(self, sock: socket.socket, requests=FrontendRequest, *,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, max_fds: int = MAX_FDS, name: str = "",
                 message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT):
        self.sock = sock
        self.name = name or f"fd{sock.fileno()}"
        self.max_fds = max_fds
        # a peer may be idle between messages for as long as it likes, but
        # once a message has begun the whole of it must arrive in this time
        # (slowloris: a trickled header would hold the one served slot)
        self.message_timeout = message_timeout
        self._partial_timer: asyncio.TimerHandle | None = None
        # O_NONBLOCK belongs to the open file description, which a peer may
        # share (SET_BACKEND_REQ_FD hands over a socket the front-end can keep
        # a copy of, and clear the flag on): every call says MSG_DONTWAIT too
        sock.setblocking(False)
        self.decoder = Decoder(requests, max_payload=max_payload, max_fds=max_fds)
        self._loop = asyncio.get_running_loop()
        self._inbox: collections.deque[Message] = collections.deque()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._out: collections.deque[list] = collections.deque()   # [bytes, fds]
        self._out_bytes = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._reading = False
        self._writing = False
        self._eof = False             # the peer shut its write side down (half-closed)
        self._write_error: OSError | None = None
        self.closed = False
        self._cmsg_space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize)
        self._start_reading()

    # -- receiving -------------------------------------------------------------------
    def _start_reading(self) -> None:
        if not self._reading and not self.closed and self._error is None:
            self._loop.add_reader(self.sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _on_readable(self) -> None:
        for _ in range(RECV_BATCH):
            try:
                data, anc, flags, _ = self.sock.recvmsg(
                    self.decoder.wanted(), self._cmsg_space,
                    socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._fail(PeerClosed(f"{self.name}: {e}"))
                return
            fds = _fds_from(anc)
            if flags & socket.MSG_CTRUNC:
                close_fds(fds)
                self._fail(MalformedMessage(f"{self.name}: more than {self.max_fds} fds "
                                            "(control data truncated)"))
                return
            if not data:
                close_fds(fds)
                if self.decoder.has_partial:
                    self._fail(TruncatedMessage(f"{self.name}: peer closed mid-message"))
                else:
                    self._eof = True          # its write side only: replies may still go out
                    self._fail(PeerClosed(f"{self.name}: peer closed the connection"))
                return
            self.decoder.feed(data, fds)
            completed = False
            try:
                while (msg := self.decoder.next_message()) is not None:
                    self._inbox.append(msg)
                    completed = True
            except MalformedMessage as e:
                self._fail(e)
                return
            self._watch_partial(completed)
            if len(self._inbox) >= QUEUE_HIGH_WATER:
                self._stop_reading()          # back-pressure: a flood waits in the kernel
                break
        self._wake()

    def _watch_partial(self, completed: bool) -> None:
        """Time the message in progress from its first byte."""
        if self._partial_timer is not None and (completed or not self.decoder.has_partial):
            self._partial_timer.cancel()
            self._partial_timer = None
        if self._partial_timer is None and self.decoder.has_partial and self.message_timeout:
            self._partial_timer = self._loop.call_later(self.message_timeout, self._partial_expired)

    def _partial_expired(self) -> None:
        self._partial_timer = None
        if self.closed or self._error is not None or not self.decoder.has_partial:
            return
        if not self._reading:           # we paused reading (back-pressure): not its fault
            self._watch_partial(False)
            return
        self._fail(PeerTimeout(f"{self.name}: the peer began a message and did not finish it "
                               f"within {self.message_timeout:g} s"))

    def _fail(self, err: BaseException) -> None:
        if self._error is None:
            self._error = err
        self._stop_reading()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self) -> Message:
        """The next message.  Raises PeerClosed / TruncatedMessage /
        MalformedMessage once the stream ends (after queued messages)."""
        while not self._inbox:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise PeerClosed(f"{self.name}: closed")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        msg = self._inbox.popleft()
        if len(self._inbox) < QUEUE_HIGH_WATER // 2:
            self._start_reading()
        return msg

    # -- sending ------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Queue ``msg`` and write what the socket takes now.  The fds stay
        the caller's (the kernel duplicates them at send time)."""
        if self._error is not None and not isinstance(self._error, PeerClosed):
            raise self._error     # why the stream ended (say a malformed message), not a symptom
        if self.closed or self._write_error is not None or (self._error is not None
                                                              and not self._eof):
            raise PeerClosed(f"{self.name}: cannot send {msg.request.name}, connection is gone")
        data, fds = encode(msg)
        self._out.append([data, list(fds)])
        self._out_bytes += len(data)
        self._flush()
        if self._eof and self._write_error is not None:     # not half-closed: gone altogether
            raise PeerClosed(f"{self.name}: cannot send {msg.request.name}: {self._write_error}")

    def _flush(self) -> None:
        while self._out:
            data, fds = self._out[0]
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            try:
                n = self.sock.sendmsg([data], anc, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.EBADF:             # an fd we were asked to send is closed
                    self._out.popleft()
                    self._out_bytes -= len(data)
                    raise EmuBug(f"{self.name}: sending a closed fd: {e}") from None
                self._out.clear()
                self._out_bytes = 0
                self._write_error = e
                self._fail(PeerClosed(f"{self.name}: {e}"))
                break
            self._out_bytes -= n
            if n < len(data):
                self._out[0] = [data[n:], []]                    # fds went with the first byte
            else:
                self._out.popleft()
        if self._out and not self._writing and not self.closed:
            self._loop.add_writer(self.sock.fileno(), self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self.sock.fileno())
            self._writing = False
        if self._out_bytes <= OUT_HIGH_WATER:
            self._drained.set()
        else:
            self._drained.clear()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait while more than OUT_HIGH_WATER bytes are queued (a peer that
        does not read).  PeerTimeout after ``timeout``."""
        if self._drained.is_set():
            return
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except asyncio.TimeoutError:
            raise PeerTimeout(f"{self.name}: peer does not read its replies") from None

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        if self._partial_timer is not None:
            self._partial_timer.cancel()
            self._partial_timer = None
        self._stop_reading()
        if self._writing:
            self._loop.remove_writer(self.sock.fileno())
            self._writing = False
        self.closed = True
        self.decoder.close()
        while self._inbox:
            close_fds(self._inbox.popleft().fds)
        self._out.clear()
        self.sock.close()
        self._wake()


# -- back-end side ----------------------------------------------------------------------
class BackendConnection:
    """Drives one :class:`Backend` from one connected socket."""

    def __init__(self, sock: socket.socket, backend: Backend, *,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, max_fds: int = MAX_FDS,
                 reply_timeout: float = 10.0, name: str = "",
                 message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT):
        self.backend = backend
        self.stream = MessageStream(sock, FrontendRequest, max_payload=max_payload,
                                    max_fds=max_fds, name=name or "vhost-user",
                                    message_timeout=message_timeout)
        self.reply_timeout = reply_timeout
        self.channel: MessageStream | None = None
        self._channel_fd: int | None = None
        self._channel_task: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()
        self.error: BaseException | None = None
        self.done = asyncio.Event()
        backend.on_output = self._on_output
        self.task = self._loop.create_task(self._run(), name=f"vhost-user {self.stream.name}")

    def _on_output(self) -> None:
        # May be called from a device thread.
        self._loop.call_soon_threadsafe(self._flush_backend)

    def _flush_backend(self) -> None:
        if self.stream.closed or self.backend.closed:
            return
        try:
            for m in self.backend.outgoing():
                self.stream.send(m)
            self._sync_channel()
        except PeerError as e:
            self.backend.limiter.log(log, logging.INFO, "flush", "%s: %s", self.stream.name, e)

    async def _run(self) -> None:
        try:
            while True:
                msg = await self.stream.receive()
                for m in self.backend.handle(msg):
                    self.stream.send(m)
                self.stream.decoder.seed_dialect = self.backend.seed_dialect
                self._sync_channel()
                await self.stream.drain(self.reply_timeout)
        except PeerClosed as e:
            self.backend.limiter.log(log, logging.INFO, "closed", "%s", e)
        except PeerError as e:
            self.error = e
            self.backend.limiter.log(log, logging.WARNING, ("dropped", type(e).__name__),
                                     "vhost-user connection %s dropped: %s", self.stream.name, e)
            if self.backend.counters is not None:
                self.backend.counters.note_dropped(e)
            if self.backend.wire_log is not None:
                self.backend.wire_log.error("rx", e)
        except Exception as e:             # EmuBug or a device bug: drop this connection only
            self.error = e
            self.backend.limiter.log(log, logging.ERROR, "internal", "vhost-user connection %s: "
                                     "internal error", self.stream.name, exc_info=True)
            if self.backend.counters is not None:
                self.backend.counters.note_dropped(e)
        finally:
            self._close()

    def _sync_channel(self) -> None:
        """Open / replace the back-end request channel after SET_BACKEND_REQ_FD,
        and send what the Backend queued for it."""
        fd = self.backend.backend_req_fd
        if fd != self._channel_fd:
            self._close_channel()
            self._channel_fd = fd
            if fd is not None:
                sock = socket.socket(fileno=os.dup(fd))
                self.channel = MessageStream(sock, BackendRequest, name=f"{self.stream.name}/backend-req")
                self._channel_task = self._loop.create_task(self._read_channel(self.channel))
        msgs = self.backend.channel_outgoing()
        if self.channel is not None:
            for m in msgs:
                try:
                    self.channel.send(m)
                except PeerClosed as e:
                    self.backend.limiter.log(log, logging.INFO, "channel", "%s", e)

    async def _read_channel(self, channel: MessageStream) -> None:
        try:
            while True:
                self.backend.handle_channel_reply(await channel.receive())
        except PeerError as e:
            self.backend.limiter.log(log, logging.INFO, "channel", "back-end request channel: %s", e)

    def _close_channel(self) -> None:
        if self._channel_task is not None:
            self._channel_task.cancel()
            self._channel_task = None
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def _close(self) -> None:
        self._close_channel()
        try:
            self.backend.close()
        finally:
            self.backend.on_output = None
            self.stream.close()
            if self.backend.wire_log is not None:     # a wire log belongs to one connection
                self.backend.wire_log.close()
            self.done.set()

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self._close()


class BackendServer:
    """Listen for front-ends; one connection served at a time, each with a
    fresh :class:`Backend` from ``backend_factory``.  ``max_connections``
    caps the front-ends connected at once: beyond the one served, up to
    ``max_connections - 1`` wait (held open, served in order as the current
    one ends); any more are closed at once and counted in ``rejected``."""

    def __init__(self, backend_factory: Callable[[], Backend], *, path: str | None = None,
                 fd: int | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_fds: int = MAX_FDS, counters: PeerCounters | None = None,
                 max_connections: int = 1,
                 message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT):
        if max_connections < 1:
            raise UsageError(f"max_connections {max_connections} < 1")
        self.backend_factory = backend_factory
        self.counters = counters
        self.max_connections = max_connections
        self._waiting: collections.deque[socket.socket] = collections.deque()
        self.path = path
        self._fd = fd
        self.max_payload, self.max_fds = max_payload, max_fds
        self.message_timeout = message_timeout
        self.sock: socket.socket | None = None
        self.connection: BackendConnection | None = None
        self.connections = 0            # accepted and served
        self.rejected = 0               # refused while busy
        self._connected = asyncio.Event()

    @property
    def _limiter(self) -> LogLimiter:
        return self.counters.limiter if self.counters is not None else ratelimit.DEFAULT

    async def start(self) -> BackendServer:
        # the backlog holds a burst of the clients we take at once (the one
        # served and the max_connections - 1 waiting): none gets EAGAIN
        self.sock = listen_unix(self.path, self._fd,
                                backlog=backlog_for(self.max_connections))
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_accept)
        return self

    def _on_accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._limiter.log(log, logging.WARNING, "accept", "vhost-user accept failed: %s", e)
            return
        if self.connection is not None and not self.connection.done.is_set():
            if 1 + len(self._waiting) < self.max_connections:
                self._waiting.append(conn)          # served when the current one ends
                return
            self.rejected += 1
            if self.counters is not None:
                self.counters.rejected += 1
            self._limiter.log(log, logging.WARNING, "rejected",
                              "vhost-user %s: a front-end is already connected (max-connections "
                              "%d); closing the new one", self.path or self._fd,
                              self.max_connections)
            conn.close()
            return
        self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            backend = self.backend_factory()
        except Exception:
            conn.close()
            raise
        self.connections += 1
        self.connection = BackendConnection(conn, backend, max_payload=self.max_payload,
                                            max_fds=self.max_fds,
                                            message_timeout=self.message_timeout,
                                            name=f"{self.path or self._fd}#{self.connections}")
        self.connection.task.add_done_callback(self._serve_next)
        self._connected.set()

    def _serve_next(self, _task) -> None:
        if self._waiting and self.sock is not None and self.connection.done.is_set():
            self._serve(self._waiting.popleft())

    async def wait_connection(self, timeout: float | None = None) -> BackendConnection:
        """The next connection accepted (or the current one)."""
        if self.connection is None or self.connection.done.is_set():
            self._connected.clear()
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connection

    async def close(self) -> None:
        while self._waiting:
            self._waiting.popleft().close()
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            if self.path:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        if self.connection is not None:
            await self.connection.close()


class BackendClient:
    """A back-end that connects (``-chardev socket,server=off``), serving
    one connection at a time; with ``reconnect`` it connects again after
    each disconnect, every time with a fresh Backend."""

    def __init__(self, path: str, backend_factory: Callable[[], Backend], *,
                 reconnect: float | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_fds: int = MAX_FDS, message_timeout: float | None = DEFAULT_MESSAGE_TIMEOUT):
        self.path = path
        self.message_timeout = message_timeout
        self.backend_factory = backend_factory
        self.reconnect = reconnect
        self.max_payload, self.max_fds = max_payload, max_fds
        self.connection: BackendConnection | None = None
        self.connections = 0
        self._connected = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.backoff = Backoff(reconnect or 0)

    async def start(self) -> BackendClient:
        sock = await connect_unix(self.path, reconnect=self.reconnect, backoff=self.backoff)
        self._attach(sock)
        self.task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def _attach(self, sock: socket.socket) -> None:
        self.connections += 1
        self.connection = BackendConnection(sock, self.backend_factory(),
                                            max_payload=self.max_payload, max_fds=self.max_fds,
                                            message_timeout=self.message_timeout,
                                            name=f"{self.path}#{self.connections}")
        self.backoff.up()
        self._connected.set()

    async def _loop(self) -> None:
        while True:
            await self.connection.done.wait()
            if not self.reconnect:
                return
            self._connected.clear()
            # every end counts: a front-end that accepts and drops us at
            # once must not make us reconnect at full speed
            await asyncio.sleep(self.backoff.down())
            self._attach(await connect_unix(self.path, reconnect=self.reconnect,
                                            backoff=self.backoff))

    async def wait_connection(self, count: int, timeout: float | None = None) -> BackendConnection:
        """Wait until the ``count``-th connection is up."""
        async def _wait():
            while self.connections < count or self.connection.done.is_set():
                self._connected.clear()
                await self._connected.wait()
            return self.connection
        return await asyncio.wait_for(_wait(), timeout)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        if self.connection is not None:
            await self.connection.close()
