"""vhost-user front-end on a socket: the asyncio client.

:class:`FrontendClient` runs a :class:`~emu.vhost_user.frontend.Frontend`
on a unix socket: a reader task accepts back-end-initiated messages at any
time, :meth:`FrontendClient.call` waits for replies with a timeout, and
:meth:`~FrontendClient.handshake`, :meth:`~FrontendClient.start`,
:meth:`~FrontendClient.stop` send the sequences QEMU sends.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import socket
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from emu.eventfd import new as new_eventfd
from emu.memory import GuestMemory
from emu.vhost_user.codec import DEFAULT_MAX_PAYLOAD, Message, close_fds
from emu.vhost_user.errors import (PeerClosed, PeerTimeout, ProtocolViolation, UsageError,
                                   VhostUserError)
from emu.vhost_user.frontend import (BackendFeatures, ConfigChange, Frontend, Reply, VringCall,
                                     VringErr)
from emu.vhost_user.messages import (MAX_FDS, MAX_MEM_TABLE_REGIONS, BackendRequest as B,
                                     FrontendRequest as F, Inflight, MemoryRegion, MemoryTable,
                                     ProtocolFeature as PF, SingleMemRegion, U64,
                                     VirtioFeature, VringAddr, VringFd, VringState)
from emu.vhost_user.sockets import Backoff, connect_unix
from emu.vhost_user.transport import MessageStream
from emu.spec import virtio_ring, virtio_ring_packed

log = logging.getLogger(__name__)

STATUS_DRIVER_OK = 0x1 | 0x2 | 0x4 | 0x8    # ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK


# -- ring description for start() ---------------------------------------------------------
@dataclass
class FrontendVring:
    """A ring in our guest memory, by guest-physical address.  The fds are
    the caller's; None sends the NOFD bit (the back-end polls / never calls)."""

    index: int
    num: int
    desc: int
    avail: int
    used: int
    base: int = 0
    kick_fd: int | None = None
    call_fd: int | None = None
    log: int = 0
    flags: int = 0


@dataclass
class Negotiated:
    features: int
    protocol_features: int
    queue_num: int | None
    max_mem_slots: int | None
    vhost_pci: bool
    backend_protocol_features: int = 0
    extra: dict = field(default_factory=dict)


def _gpa_to_uaddr(mem: GuestMemory, gpa: int, length: int) -> int:
    region, off = mem.translate_gpa(gpa, length)
    return region.uaddr + off


# -- the asyncio client ----------------------------------------------------------------------
class FrontendClient:
    """A vhost-user front-end on a socket.

    Callbacks (plain functions or coroutines; coroutines run as tasks, so
    they may ``await client.call(...)``): ``on_backend_features(features)``,
    ``on_config_change()``, ``on_vring_call(index)``, ``on_vring_err(index)``,
    ``on_disconnect(error)``, and ``on_reconnect(client)`` which, after a
    reconnect, must redo :meth:`handshake` and :meth:`start`.
    """

    def __init__(self, path: str | None = None, *, sock: socket.socket | None = None,
                 frontend: Frontend | None = None, timeout: float = 5.0,
                 reconnect: float | None = None,
                 on_backend_features: Callable | None = None,
                 on_config_change: Callable | None = None,
                 on_vring_call: Callable | None = None,
                 on_vring_err: Callable | None = None,
                 on_disconnect: Callable | None = None,
                 on_reconnect: Callable | None = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, max_fds: int = MAX_FDS):
        if (path is None) == (sock is None):
            raise UsageError("give exactly one of path= or sock=")
        self.path = path
        self._sock = sock
        self.frontend = frontend or Frontend()
        self.timeout = timeout
        self.reconnect = reconnect
        self.on_backend_features = on_backend_features
        self.on_config_change = on_config_change
        self.on_vring_call = on_vring_call
        self.on_vring_err = on_vring_err
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.max_payload, self.max_fds = max_payload, max_fds
        self.stream = None
        self.channel = None
        self.connections = 0
        self.error: BaseException | None = None
        self.events: collections.deque = collections.deque(maxlen=256)   # for monitors/tests
        self._futures: collections.deque[asyncio.Future] = collections.deque()
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()
        self._reader: asyncio.Task | None = None
        self._reconnector: asyncio.Task | None = None
        self._vrings: list[FrontendVring] = []
        self._closing = False
        self.connected: asyncio.Event | None = None
        # INFLIGHT_SHMFD: the back-end's inflight area, kept across reconnects
        self.inflight: tuple[Inflight, int] | None = None
        self.backoff = Backoff(reconnect or 0)

    # -- connection ----------------------------------------------------------------------------
    async def connect(self) -> FrontendClient:
        self._lock = asyncio.Lock()
        self.connected = asyncio.Event()
        if self._sock is not None:
            sock, self._sock = self._sock, None
        else:
            sock = await connect_unix(self.path, reconnect=self.reconnect, backoff=self.backoff)
        self._attach(sock)
        return self

    def _attach(self, sock: socket.socket) -> None:
        self.connections += 1
        if self.connections > 1:
            self.frontend = self.frontend.fresh()
        if self.frontend.counters is not None:
            self.frontend.counters.connections += 1
        self.stream = MessageStream(sock, F, max_payload=self.max_payload, max_fds=self.max_fds,
                                    name=f"{self.path or 'socket'}#{self.connections}")
        self.error = None
        self._vrings = []
        self._reader = self._spawn(self._read_main(self.stream))
        self.backoff.up()
        self.connected.set()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _callback(self, fn: Callable | None, *args) -> None:
        if fn is None:
            return
        try:
            result = fn(*args)
        except Exception:
            self.frontend.limiter.log(log, logging.ERROR, "callback", "vhost-user front-end "
                                      "callback %r failed", fn, exc_info=True)
            return
        if inspect.isawaitable(result):
            self._spawn(result)

    async def _read_main(self, stream) -> None:
        try:
            while True:
                event = self.frontend.receive(await stream.receive())
                self.events.append(event)
                if isinstance(event, Reply):
                    fut = self._futures.popleft()
                    if not fut.done():
                        fut.set_result(event.reply)
                elif isinstance(event, BackendFeatures):
                    self._callback(self.on_backend_features, event.features)
        except VhostUserError as e:
            self._lost(stream, e)
        except Exception as e:              # a bug of ours: drop the connection, say why
            self.frontend.limiter.log(log, logging.ERROR, "internal",
                                      "vhost-user front-end reader failed", exc_info=True)
            self._lost(stream, PeerClosed(f"internal error: {e!r}"))

    async def _read_channel(self, channel) -> None:
        try:
            while True:
                event, replies = self.frontend.handle_channel(await channel.receive())
                self.events.append(event)
                for r in replies:
                    channel.send(r)
                if isinstance(event, ConfigChange):
                    self._callback(self.on_config_change)
                elif isinstance(event, VringCall):
                    self._callback(self.on_vring_call, event.index)
                elif isinstance(event, VringErr):
                    self._callback(self.on_vring_err, event.index)
        except VhostUserError as e:
            self.frontend.limiter.log(log, logging.INFO, "channel",
                                      "back-end request channel closed: %s", e)

    def _lost(self, stream, err: BaseException) -> None:
        """The connection is gone (or must go): fail waiters, close, maybe reconnect."""
        if stream is not self.stream or stream.closed:
            return
        self.error = err
        quiet = isinstance(err, PeerClosed) or self._closing
        # one bucket per kind of loss, as the back-end's "dropped" lines: a
        # peer that keeps timing out does not hide the first malformed reply
        self.frontend.limiter.log(log, logging.INFO if quiet else logging.WARNING,
                                  ("lost", quiet, type(err).__name__),
                                  "vhost-user front-end connection %s lost: %s", stream.name, err)
        counters = self.frontend.counters
        if counters is not None and not self._closing:
            counters.disconnects += 1
            if not isinstance(err, PeerClosed):
                counters.note_dropped(err)
        while self._futures:
            fut = self._futures.popleft()
            if not fut.done():
                fut.set_exception(err if isinstance(err, VhostUserError) else PeerClosed(str(err)))
        self.frontend.pending.clear()
        stream.close()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self.connected.clear()
        self._callback(self.on_disconnect, err)
        if self.reconnect and not self._closing and self.path is not None:
            self._reconnector = self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        # after every loss, not only a failed connect: a back-end whose
        # socket is there but that drops (or never completes) each
        # connection would otherwise be retried thousands of times a second
        await asyncio.sleep(self.backoff.down())
        if self._closing:
            return
        sock = await connect_unix(self.path, reconnect=self.reconnect, backoff=self.backoff)
        if self._closing:
            sock.close()
            return
        self._attach(sock)
        if self.on_reconnect is not None:
            try:
                result = self.on_reconnect(self)
                if inspect.isawaitable(result):
                    await result
            except VhostUserError as e:
                self.frontend.limiter.log(log, logging.WARNING, "redo", "vhost-user front-end: "
                                          "redoing the set-up after reconnect failed: %s", e)

    def drop(self, err: VhostUserError) -> None:
        """Give up the current connection (e.g. its handshake was refused);
        with ``reconnect`` a new one follows."""
        if self.stream is not None:
            self._lost(self.stream, err)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    # -- requests ---------------------------------------------------------------------------------
    async def call(self, req: F, payload=None, fds: Sequence[int] = (), *,
                   need_reply: bool = False, timeout: float | None = None) -> Message | None:
        """Send a request; -> its reply (or REPLY_ACK), or None if none comes.
        A reply later than ``timeout`` raises PeerTimeout and closes the
        connection (its replies could no longer be matched)."""
        if self.stream is None or self.stream.closed:
            raise PeerClosed("not connected")
        async with self._lock:
            stream = self.stream
            msg = self.frontend.request(req, payload, fds, need_reply)
            fut = None
            if self.frontend.expects_reply(msg):
                fut = asyncio.get_running_loop().create_future()
                self._futures.append(fut)
            try:
                stream.send(msg)
            except VhostUserError as e:
                self._lost(stream, e)
                if fut is not None and fut.done() and not fut.cancelled():
                    fut.exception()          # raised below instead: not "never retrieved"
                raise
            if fut is None:
                return None
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout or self.timeout)
            except asyncio.TimeoutError:
                err = PeerTimeout(f"no reply to {req.name} within {timeout or self.timeout} s")
                fut.cancel()                 # nobody waits for it any more
                self._lost(stream, err)
                raise err from None

    async def _acked(self, req: F, payload=None, fds: Sequence[int] = ()) -> None:
        """A request whose failure must not pass silently: NEED_REPLY when
        REPLY_ACK is negotiated, and a non-zero status raises."""
        reply = await self.call(req, payload, fds, need_reply=True)
        status = reply.payload.value if reply is not None and isinstance(reply.payload, U64) else 0
        if status:
            raise ProtocolViolation(f"back-end refused {req.name} (status {status})")

    async def get_u64(self, req: F) -> int:
        return (await self.call(req)).payload.value

    # -- QEMU-shaped sequences -----------------------------------------------------------------------
    async def handshake(self, vring_calls: Mapping[int, int | None] = {}) -> Negotiated:
        """What QEMU does when the netdev connects: features, protocol
        features, queue count, memory slots, back-end channel, owner, and
        a call fd per ring (``vring_calls``: index -> eventfd or None)."""
        fe = self.frontend
        features = await self.get_u64(F.GET_FEATURES)
        if features & VirtioFeature.PROTOCOL_FEATURES:
            offered = await self.get_u64(F.GET_PROTOCOL_FEATURES)
            await self.call(F.SET_PROTOCOL_FEATURES, U64(fe.choose_protocol_features(offered)))
            if fe.negotiated(PF.MQ):
                await self.get_u64(F.GET_QUEUE_NUM)
            if fe.negotiated(PF.CONFIGURE_MEM_SLOTS):         # QEMU 7.2's order
                await self.get_u64(F.GET_MAX_MEM_SLOTS)
            if fe.negotiated(PF.BACKEND_REQ):
                await self._open_channel()
        await self.call(F.SET_OWNER)
        for index, fd in vring_calls.items():
            await self.call(F.SET_VRING_CALL, VringFd(index, fd is None), () if fd is None else (fd,))
        return Negotiated(features, fe.protocol_features, fe.queue_num, fe.max_mem_slots,
                          fe.vhost_pci_active, fe.backend_protocol_features or 0)

    async def _open_channel(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self._acked(F.SET_BACKEND_REQ_FD, None, (theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if self.channel is not None:
            self.channel.close()
        self.channel = MessageStream(ours, B, name=f"{self.stream.name}/backend-req")
        self._spawn(self._read_channel(self.channel))

    async def set_mem_table(self, memory: GuestMemory) -> None:
        regions = memory.regions
        if not 1 <= len(regions) <= MAX_MEM_TABLE_REGIONS:
            raise UsageError(f"{len(regions)} regions do not fit one SET_MEM_TABLE")
        if any(r.fd is None for r in regions):
            raise UsageError("guest memory has no fd to share (use emu.memory.allocate)")
        table = MemoryTable(tuple(MemoryRegion(r.gpa, r.size, r.uaddr, r.mmap_offset)
                                  for r in regions))
        await self._acked(F.SET_MEM_TABLE, table, tuple(r.fd for r in regions))

    async def add_mem_reg(self, region) -> None:
        await self._acked(F.ADD_MEM_REG, SingleMemRegion(
            MemoryRegion(region.gpa, region.size, region.uaddr, region.mmap_offset)), (region.fd,))

    async def rem_mem_reg(self, region) -> None:
        await self._acked(F.REM_MEM_REG, SingleMemRegion(
            MemoryRegion(region.gpa, region.size, region.uaddr, region.mmap_offset)))

    async def setup_vring(self, memory: GuestMemory, v: FrontendVring) -> None:
        """NUM -> BASE -> ADDR (front-end virtual addresses) -> KICK -> CALL.
        With RING_PACKED acked the three addresses are the descriptor ring
        and the driver and device event suppression areas, and ``v.base``
        carries the wrap counters (emu.vhost_user.vring.packed_base)."""
        packed = (self.frontend.acked_features or 0) & VirtioFeature.RING_PACKED
        d_size, a_size, u_size = (virtio_ring_packed if packed else virtio_ring).ring_sizes(v.num)
        addr = VringAddr(v.index, v.flags, _gpa_to_uaddr(memory, v.desc, d_size),
                         _gpa_to_uaddr(memory, v.used, u_size),
                         _gpa_to_uaddr(memory, v.avail, a_size), v.log)
        await self.call(F.SET_VRING_NUM, VringState(v.index, v.num))
        await self.call(F.SET_VRING_BASE, VringState(v.index, v.base))
        await self.call(F.SET_VRING_ADDR, addr)
        await self.call(F.SET_VRING_KICK, VringFd(v.index, v.kick_fd is None),
                        () if v.kick_fd is None else (v.kick_fd,))
        await self.call(F.SET_VRING_CALL, VringFd(v.index, v.call_fd is None),
                        () if v.call_fd is None else (v.call_fd,))

    async def start(self, features: int, memory: GuestMemory, vrings: Sequence[FrontendVring],
                    *, status: int = STATUS_DRIVER_OK) -> None:
        """What QEMU does at DRIVER_OK: features, memory table, every ring,
        enables, status."""
        await self._acked(F.SET_FEATURES, U64(features))
        await self.set_mem_table(memory)
        if self.frontend.negotiated(PF.INFLIGHT_SHMFD) and vrings:
            await self.setup_inflight(vrings)
        for v in vrings:
            await self.setup_vring(memory, v)
        if features & VirtioFeature.PROTOCOL_FEATURES:
            for v in vrings:
                await self._acked(F.SET_VRING_ENABLE, VringState(v.index, 1))
        if self.frontend.negotiated(PF.STATUS):
            await self._acked(F.SET_STATUS, U64(status))
        self._vrings = list(vrings)

    async def setup_inflight(self, vrings: Sequence[FrontendVring]) -> None:
        """INFLIGHT_SHMFD: the first start asks the back-end for its inflight
        area (GET_INFLIGHT_FD) and keeps it; later starts -- a restarted
        back-end -- give it back (SET_INFLIGHT_FD).  After SET_FEATURES, so
        the back-end lays it out for the rings' format (split or packed;
        DPDK decides the same way)."""
        if self.inflight is None:
            want = Inflight(0, 0, max(v.index for v in vrings) + 1, max(v.num for v in vrings))
            reply = await self.call(F.GET_INFLIGHT_FD, want)
            p = reply.payload
            if not reply.fds or p.mmap_size == 0 or (p.num_queues, p.queue_size) != \
                    (want.num_queues, want.queue_size):
                close_fds(reply.fds)
                raise ProtocolViolation(f"GET_INFLIGHT_FD answered {p} for {want}")
            self.inflight = (p, reply.fds[0])
            close_fds(reply.fds[1:])
        else:
            p, fd = self.inflight
            await self._acked(F.SET_INFLIGHT_FD, p, (fd,))

    async def stop(self) -> dict[int, int]:
        """Disable and stop every started ring; -> {index: last_avail_idx}."""
        bases = {}
        if (self.frontend.acked_features or 0) & VirtioFeature.PROTOCOL_FEATURES:
            for v in self._vrings:
                await self._acked(F.SET_VRING_ENABLE, VringState(v.index, 0))
        for v in self._vrings:
            reply = await self.call(F.GET_VRING_BASE, VringState(v.index, 0))
            if reply.payload.index != v.index:
                raise ProtocolViolation(f"GET_VRING_BASE {v.index} answered for ring "
                                        f"{reply.payload.index}")
            bases[v.index] = reply.payload.num
        self._vrings = []
        return bases

    # -- teardown -------------------------------------------------------------------------------------
    async def close(self) -> None:
        self._closing = True
        if self.stream is not None and not self.stream.closed:
            self._lost(self.stream, PeerClosed("closed by the front-end"))
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.inflight is not None:
            close_fds([self.inflight[1]])
            self.inflight = None
        if self.frontend.wire_log is not None:
            self.frontend.wire_log.close()


eventfd = new_eventfd     # a non-blocking, close-on-exec eventfd (kick/call)
