"""Netdevs whose data path is emu's own C engine (no back-end process):

* :class:`SocketNetdev` -- ``-netdev socket`` (QEMU 7.2's net/socket.c,
  stream mode): an inherited connected socket (``fd=N``), a TCP
  listener taking one peer at a time (``listen=HOST:PORT``; after the peer
  goes, the next is accepted, as QEMU re-arms its accept), or a TCP
  client (``connect=HOST:PORT``).  Frames are framed as QEMU frames them
  (4-byte big-endian length).  One data-path thread (a
  :class:`~emu.ring.Pump` in interrupt mode) runs the NIC's job.
* :class:`HubPortNetdev` -- ``-netdev hubport,hubid=N``: a port of hub N
  (:class:`HubNetwork`, one data-path thread per hub); a frame a NIC sends
  reaches every other port's NIC; a port alone drops what it is sent.

Either gives its NIC (:class:`~emu.virtio.net_internal.InternalNetDevice`)
a :class:`~emu.ring.NetPort` to attach its queues to, and tells it when the
link changes (``nic.set_link``).  Everything here runs on the machine's
event loop; the job itself takes no lock and never blocks.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Callable

from emu.errors import PeerError
from emu.ring import Hub, NetPort, Pump

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


class NetdevError(PeerError):
    """A netdev that cannot be set up (QEMU's texts where it has them)."""


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` as QEMU's socket netdev takes it (an empty host:
    every address for listen=, loopback for connect=)."""
    host, sep, port = text.rpartition(":")
    lowest = 0 if what == "listen" else 1         # listen on port 0: the system picks one
    if not sep or not port.isdigit() or not lowest <= int(port) < 65536:
        raise NetdevError(f"netdev socket: {what}={text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class InternalNetdev:
    """What the NIC model and the machine see of a netdev of this module."""

    internal = True
    queues = 1

    def __init__(self, id: str, events: Callable | None = None):
        self.id = id
        self.emit = events or (lambda name, data: None)
        self.nic = None
        self.port = NetPort(name=id)
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self, nic) -> None:
        self.nic = nic

    @property
    def connected(self) -> bool:
        return self.port.up

    def send_raw(self, frame: bytes) -> bool:
        """Send ``frame`` to the peer(s) as if the NIC had (an announce)."""
        return self.port.inject(frame)

    def stats(self) -> dict:
        return self.port.stats()

    def _set_link(self, up: bool) -> None:
        if self.nic is not None:
            self.nic.set_link(up)


class SocketNetdev(InternalNetdev):
    """``-netdev socket,id=ID,fd=N | listen=HOST:PORT | connect=HOST:PORT``."""

    def __init__(self, id: str, *, fd: int | None = None, listen: str | None = None,
                 connect: str | None = None, events: Callable | None = None):
        given = [k for k, v in (("fd", fd), ("listen", listen), ("connect", connect))
                 if v is not None]
        if len(given) != 1:
            raise NetdevError("netdev socket: exactly one of fd=, listen= and connect= "
                              "(emu has no udp= or mcast=)")
        # refused here, before anything is made
        if fd is not None:
            self._check_stream(fd)
        for what, text in (("listen", listen), ("connect", connect)):
            if text is not None:
                parse_host_port(text, what)
        super().__init__(id, events)
        self.fd, self.listen, self.connect = fd, listen, connect
        self.pump = Pump("interrupt", name=f"net-{id}")
        self.pump.add_net(self.port)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self.connects = 0
        self.peer = ""
        self._released = False

    @staticmethod
    def _check_stream(fd: int) -> None:
        try:
            kind = socket.socket(fileno=os.dup(fd))
        except OSError as e:
            raise NetdevError(f"netdev socket: fd={fd}: {e.strerror}") from None
        try:
            stype = kind.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        except OSError as e:
            raise NetdevError(f"netdev socket: fd={fd} is not a socket ({e.strerror})") from None
        finally:
            kind.close()
        if stype != socket.SOCK_STREAM:
            raise NetdevError(f"netdev socket: fd={fd} is not a stream socket (emu takes "
                              "SOCK_STREAM only)")

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.port.event_fd, self._on_link_event)
        self.pump.start()
        if self.fd is not None:
            self._take(self.fd, f"fd={self.fd}")
        elif self.listen is not None:
            host, port = parse_host_port(self.listen, "listen")
            ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            try:
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((host or "0.0.0.0", port))
                ls.listen(1)
                ls.setblocking(False)
            except OSError as e:
                ls.close()
                raise NetdevError(f"netdev socket: can't bind ip={host or '0.0.0.0'} to "
                                  f"socket: {e.strerror}") from None
            self._listener = ls
            self._accepting = self.loop.create_task(self._accept())
        else:
            host, port = parse_host_port(self.connect, "connect")
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.setblocking(False)
            try:
                await asyncio.wait_for(self.loop.sock_connect(s, (host or "127.0.0.1", port)),
                                       CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                s.close()
                why = e.strerror if isinstance(e, OSError) else "timed out"
                raise NetdevError(f"netdev socket: can't connect socket: {why}") from None
            self._take(s.detach(), f"connect={self.connect}")

    @property
    def info_str(self) -> str:
        """``info network``'s text, as QEMU's net/socket.c sets it."""
        if not self.connected:
            return "type=socket," + (f"socket: wait connection on {self.listen}"
                                     if self.listen is not None else "")
        if self.fd is not None:
            return f"type=socket,socket: fd={self.fd}"
        if self.listen is not None:
            return f"type=socket,socket: connection from {self.peer}"
        return f"type=socket,socket: connect to {self.connect}"

    @property
    def listen_port(self) -> int | None:
        """The TCP port listened on (listen=HOST:0 picks one)."""
        return self._listener.getsockname()[1] if self._listener is not None else None

    def _take(self, fd: int, peer: str) -> None:
        self.port.set_socket(fd)
        self.connects += 1
        self.peer = peer
        self._set_link(True)            # (the NIC's link is up until a peer goes)

    async def _accept(self) -> None:
        conn, addr = await self.loop.sock_accept(self._listener)
        self._take(conn.detach(), f"{addr[0]}:{addr[1]}")

    def _on_link_event(self) -> None:
        if not self.port.consume_event() or self.port.up:
            return
        why = self.port.link
        fd = self.port.take_socket()
        if fd is not None:
            os.close(fd)
        log.info("netdev %s: the peer's stream ended (%s)", self.id, why)
        self._set_link(False)
        if self._listener is not None and self.loop is not None:
            self._accepting = self.loop.create_task(self._accept())

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        if self.loop is not None and self.port.event_fd >= 0:
            try:
                self.loop.remove_reader(self.port.event_fd)
            except Exception:
                pass
        self.release()

    def release(self) -> None:
        """Stop the job, close the socket and the port (without the loop;
        idempotent: also for a machine that never started)."""
        if self._released:
            return
        self._released = True
        self.pump.stop()
        fd = self.port.release()             # the job is gone: the socket is ours again
        if fd is not None:
            os.close(fd)
        elif self.fd is not None and self.connects == 0:
            os.close(self.fd)                # never handed over, still ours
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.port.close()


class HubNetwork:
    """Every hub of a machine (``hubid`` -> its ports), one job each."""

    def __init__(self):
        self.hubs: dict[int, tuple[Hub, Pump]] = {}

    def port(self, hubid: int, port: NetPort) -> Hub:
        if hubid not in self.hubs:
            hub = Hub(name=f"hub{hubid}")
            self.hubs[hubid] = (hub, Pump("interrupt", name=f"hub{hubid}"))
        hub, pump = self.hubs[hubid]
        if pump.running:
            raise NetdevError(f"hub {hubid} is running: ports are added before the machine starts")
        hub.add_port(port)
        return hub

    def start(self, hubid: int) -> None:
        hub, pump = self.hubs[hubid]
        if not pump.running:
            pump.add_hub(hub)
            pump.start()

    def close(self) -> None:
        for hub, pump in self.hubs.values():
            pump.stop()
            hub.close()
        self.hubs = {}


class HubPortNetdev(InternalNetdev):
    """``-netdev hubport,id=ID,hubid=N``: the link is always up (QEMU's hub
    ports have no link of their own)."""

    def __init__(self, id: str, hubid: int, network: HubNetwork, *,
                 events: Callable | None = None):
        super().__init__(id, events)
        self.hubid = hubid
        self.network = network
        self.hub = network.port(hubid, self.port)

    @property
    def connected(self) -> bool:
        return True

    @property
    def info_str(self) -> str:
        return f"type=hubport,hub {self.hubid} ({len(self.hub.ports)} ports)"

    async def open(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.network.start(self.hubid)
        self._set_link(True)

    async def close(self) -> None:
        pass                                   # the network closes the hub and its ports

    def release(self) -> None:
        pass
