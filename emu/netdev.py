"""Every vhost-user socket of a machine, one class per role:

* :class:`VhostUserNetdev` -- ``-netdev vhost-user``: the host side of a NIC
  whose back-end is another process (emu's vhost-pci VM2, DPDK, any
  vhost-user net back-end).  It owns the socket (client, with QEMU's
  ``reconnect=`` semantics, or server: listen and take one connection), runs
  the vhost-user front-end handshake, and tells the NIC device model what
  happened (connected, disconnected, the back-end's vhost-pci feature push).
* :class:`VhostUserBackendSocket` -- the ``-chardev socket`` of a device
  that *is* a vhost-user back-end (vhost-pci-net): it listens or connects,
  and serves each connection with a fresh
  :class:`~emu.vhost_user.backend.Backend` over the device's vhost-user face.

Both are opened and closed by the machine through the same two coroutines
(:class:`VhostUserSocket`).  Everything here runs on the machine's event
loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from emu.vhost_user.backend import Backend
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.device import BackendDevice, MemoryMapper
from emu.vhost_user.errors import VhostUserError
from emu.vhost_user.sockets import backlog_for, listen_unix
from emu.vhost_user.transport import BackendClient, BackendServer

if TYPE_CHECKING:   # the front-end is imported when a netdev opens: a VM whose
    # only socket chardev is a vhost-pci-net device's never loads it
    from emu.vhost_user.client import FrontendClient, Negotiated

log = logging.getLogger(__name__)


@dataclass
class SocketSpec:
    """The ``-chardev socket`` a netdev or device uses."""
    id: str
    path: str | None = None
    fd: int | None = None
    server: bool = False
    wait: bool = True
    reconnect: float = 0.0

    @property
    def label(self) -> str:
        if self.path:
            return f"unix:{self.path}{',server=on' if self.server else ''}"
        return f"fd:{self.fd}"


class VhostUserSocket(Protocol):
    """What the machine does with a vhost-user socket: open it at start
    (connect, listen or accept), close it at the end."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class VhostUserNetdev:
    """One vhost-user connection for a virtio-net device."""

    def __init__(self, id: str, sock: SocketSpec, *, queues: int = 1, vhost_pci: str = "auto",
                 timeout: float = 5.0, wire_log=None, events: Callable | None = None):
        self.id = id
        self.sock = sock
        self.queues = queues
        self.vhost_pci = vhost_pci
        self.timeout = timeout
        self.wire_log = wire_log
        self.emit = events or (lambda name, data: None)
        self.client: FrontendClient | None = None
        self.negotiated: Negotiated | None = None
        self.nic = None                       # the device model using us
        self.call_fds: dict[int, int] = {}    # ring index -> eventfd (the device's)
        self._listener: socket.socket | None = None
        self.up = asyncio.Event()
        self.connects = 0
        self._pending_features: int | None = None
        self.counters = PeerCounters()        # what the back-end cost us, over all connections

    # -- lifecycle -------------------------------------------------------------------------------
    def attach(self, nic) -> None:
        self.nic = nic

    @property
    def backend_features(self) -> int:
        return self.negotiated.features if self.negotiated else 0

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.stream is not None \
            and not self.client.stream.closed

    def _client(self, path=None, sock=None) -> FrontendClient:
        from emu.vhost_user.client import FrontendClient
        from emu.vhost_user.frontend import Frontend
        fe = Frontend(vhost_pci=self.vhost_pci, wire_log=self.wire_log, counters=self.counters)
        kw = dict(frontend=fe, timeout=self.timeout,
                  on_backend_features=self._on_backend_features,
                  on_disconnect=self._on_disconnect, on_reconnect=self._on_reconnect)
        if path is not None:
            return FrontendClient(path, reconnect=self.sock.reconnect or None, **kw)
        return FrontendClient(sock=sock, **kw)

    async def open(self) -> None:
        """Connect (or accept) and do the handshake.  With ``reconnect`` the
        client keeps trying in the background and this returns at once."""
        s = self.sock
        if s.server:
            self._listener = _listen(s)
            if s.wait:
                await self._accept()
            else:
                asyncio.get_running_loop().create_task(self._accept())
            return
        if s.fd is not None:
            conn = socket.socket(fileno=os.dup(s.fd))
            conn.setblocking(False)
            self.client = self._client(sock=conn)
            await self.client.connect()
            await self._handshake()
            return
        self.client = self._client(path=s.path)
        await self.client.connect()           # with reconnect=, retries until a peer listens
        if not s.reconnect:
            await self._handshake()
            return
        # QEMU (net_vhost_user_init) holds start-up until the first handshake
        # is done even with reconnect=: the guest must see the back-end's
        # features.  A failed handshake costs that connection; the client
        # reconnects and _on_reconnect tries again.
        try:
            await self._handshake()
        except VhostUserError as e:
            self.counters.limiter.log(log, logging.WARNING, "handshake",
                                      "netdev %s: handshake failed, reconnecting: %s", self.id, e)
            self.client.drop(e)
            await self.up.wait()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._listener)
        conn.setblocking(False)
        self.client = self._client(sock=conn)
        await self.client.connect()
        await self._handshake()
        if self.nic is not None and not self.sock.wait:
            await self.nic.backend_ready()

    async def _handshake(self) -> None:
        self.negotiated = await self.client.handshake(self.call_fds)
        self.connects += 1
        self.up.set()
        self.emit("VHOST_USER_CONNECTED", {**self._who(), "vhost-pci": self.negotiated.vhost_pci,
                                           "features": self.negotiated.features})
        pending, self._pending_features = self._pending_features, None
        if pending is not None:           # pushed during the handshake: report it in order
            self._on_backend_features(pending)

    def wait_up(self, timeout: float):
        return asyncio.wait_for(self.up.wait(), timeout)

    def _who(self) -> dict:
        return {"device": getattr(self.nic, "name", self.id), "chardev": self.sock.id,
                "netdev": self.id}

    # -- events from the front-end ---------------------------------------------------------------
    def _on_backend_features(self, features: int) -> None:
        if self.negotiated is None or not self.up.is_set():
            # a vhost-pci back-end pushes right after SET_PROTOCOL_FEATURES,
            # before our handshake is over: report (and apply) it after CONNECTED
            self._pending_features = features
            return
        self.emit("VHOST_USER_FEATURES_CHANGED", {
            **self._who(), "features": features,
            "protocol-features": self.negotiated.protocol_features if self.negotiated else 0})
        if self.nic is not None:
            self.nic.backend_features_changed(features)

    def _on_disconnect(self, err) -> None:
        self.up.clear()
        self.emit("VHOST_USER_DISCONNECTED", {**self._who(), "reason": str(err)})
        if self.nic is not None:
            self.nic.backend_lost()

    async def _on_reconnect(self, client) -> None:
        await self._handshake()
        if self.nic is not None:
            await self.nic.backend_ready()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.sock.fd is None and self.sock.path:
                # the socket file goes with the listener, as QEMU's chardev does
                try:
                    os.unlink(self.sock.path)
                except FileNotFoundError:
                    pass


class VhostUserBackendSocket:
    """The socket of a vhost-user back-end device: server (``server=on``, or
    an fd passed by the caller: listen) or client (connect, with QEMU's
    ``reconnect=``).  One front-end is served at a time, each connection by
    a fresh Backend; the limits are the device's (``PeerLimits``)."""

    def __init__(self, sock: SocketSpec, device: BackendDevice, *, mapper: MemoryMapper,
                 max_queues: int, counters: PeerCounters, max_regions: int, max_payload: int,
                 max_connections: int, message_timeout: float, vhost_pci: str = "auto",
                 wire_log=None):
        self.sock = sock
        self.device = device
        self.mapper = mapper
        self.max_queues = max_queues
        self.counters = counters          # the device's, across connections
        self.max_regions = max_regions
        self.max_payload = max_payload
        self.max_connections = max_connections
        self.message_timeout = message_timeout
        self.vhost_pci = vhost_pci
        self.wire_log = wire_log          # a WireLog, or a factory of one per connection
        self.server: BackendServer | BackendClient | None = None

    @property
    def connected(self) -> bool:
        """A front-end is being served (its Backend exists and is not closed)."""
        return self.device.backend is not None

    def _new_backend(self) -> Backend:
        wl = self.wire_log() if callable(self.wire_log) else self.wire_log
        return Backend(self.device, memory_mapper=self.mapper, max_queues=self.max_queues,
                       max_regions=self.max_regions, wire_log=wl, vhost_pci=self.vhost_pci,
                       counters=self.counters)

    async def open(self) -> None:
        s = self.sock
        if s.server or s.path is None:
            self.server = BackendServer(self._new_backend, path=s.path if s.fd is None else None,
                                        fd=s.fd, counters=self.counters,
                                        max_payload=self.max_payload,
                                        max_connections=self.max_connections,
                                        message_timeout=self.message_timeout)
        else:
            self.server = BackendClient(s.path, self._new_backend, reconnect=s.reconnect or None,
                                        max_payload=self.max_payload,
                                        message_timeout=self.message_timeout)
        await self.server.start()

    async def close(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()


def _listen(s: SocketSpec) -> socket.socket:
    """The netdev's listening socket: one back-end at a time, a few more
    may knock (they are turned away by the handshake, not by the kernel).
    Errors name the path (SocketSetupError); the launcher names the option."""
    if s.fd is not None:
        fd = os.dup(s.fd)
        try:
            return listen_unix(fd=fd, backlog=backlog_for(1))
        except BaseException:
            os.close(fd)
            raise
    return listen_unix(s.path, backlog=backlog_for(1))
