"""A scripted vhost-user back-end that VM1 (emu's virtio-net-pci front-end,
a real process with ``reconnect=1``) connects to.

The good path is emu's own sans-IO :class:`~emu.vhost_user.backend.Backend`
driven over a blocking socket, so every honest reply is right by
construction; a case takes over at any request (``serve(until=...)``) and
answers what it likes: wrong ids, flags, sizes, fds, silence, floods,
unsolicited messages, junk on the back-end channel, or hostile used rings
written straight into VM1's memory (which the good path mapped).
"""
from __future__ import annotations

import array
import os
import socket
import time

from emu.vhost_user.backend import Backend
from emu.vhost_user.codec import HEADER, Decoder, Message, close_fds, encode
from emu.vhost_user.device import BackendDevice
from emu.vhost_user.messages import (BackendRequest, FrontendRequest as F,
                                     ProtocolFeature as PF, VirtioFeature as VF)

NET_FEATURES = (VF.VERSION_1 | VF.NET_MRG_RXBUF | VF.EVENT_IDX | VF.INDIRECT_DESC | VF.NET_MAC
                | VF.NET_STATUS)


class NetDevice(BackendDevice):
    """A net device with no data path: rings are accepted and left alone."""

    def features(self):
        return NET_FEATURES

    def protocol_features(self):
        return super().protocol_features() | PF.BACKEND_REQ | PF.CONFIGURE_MEM_SLOTS

    def vring_stop(self, vring):
        return vring.base


class Listener:
    """The socket VM1's ``-chardev socket,path=...,reconnect=1`` connects to."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.path = path

    def accept(self, timeout: float = 15.0) -> "EvilBackend":
        """The next live connection: VM1 opens it and speaks first
        (GET_FEATURES); one it already gave up on may still sit in the
        listen backlog (closed by then) and is skipped."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            conn, _ = self.sock.accept()
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if conn.recv(1, socket.MSG_PEEK):
                    return EvilBackend(conn)
            except (ConnectionResetError, socket.timeout, TimeoutError):
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class EvilBackend:
    """One connection from VM1."""

    def __init__(self, sock: socket.socket, vhost_pci: str = "off"):
        self.sock = sock
        self.sock.settimeout(10)
        self.dec = Decoder(F)
        self.backend = Backend(NetDevice(), vhost_pci=vhost_pci)
        self.closed = False
        self.seen: list[Message] = []

    # -- wire ------------------------------------------------------------------------------
    def send_raw(self, data: bytes, fds=()) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def send(self, msg: Message) -> None:
        data, fds = encode(msg)
        self.send_raw(data, fds)

    def send_header(self, req_id: int, flags: int, size: int, body: bytes = b"", fds=()) -> None:
        self.send_raw(HEADER.pack(req_id, flags, size) + body, fds)

    def recv(self, timeout: float = 10.0) -> Message | None:
        self.sock.settimeout(timeout)
        while True:
            msg = self.dec.next_message()
            if msg is not None:
                self.seen.append(msg)
                return msg
            try:
                data, anc, _, _ = self.sock.recvmsg(self.dec.wanted(), socket.CMSG_SPACE(8 * 4))
            except ConnectionResetError:
                data, anc = b"", []
            fds = [fd for _, kind, d in anc if kind == socket.SCM_RIGHTS
                   for fd in array.array("i", d[:len(d) - len(d) % 4])]
            if not data:
                close_fds(fds)
                self.closed = True
                return None
            self.dec.feed(data, fds)

    # -- the honest part --------------------------------------------------------------------
    def serve(self, until=None, timeout: float = 10.0) -> Message | None:
        """Answer as emu's Backend does until ``until(msg)`` is true for a
        request (returned unanswered, its fds the caller's) or VM1 closes."""
        while True:
            msg = self.recv(timeout)
            if msg is None:
                return None
            if until is not None and until(msg):
                return msg
            for out in self.backend.handle(msg):
                self.send(out)
            self._sync_channel()

    def _sync_channel(self) -> None:
        for m in self.backend.channel_outgoing():
            data, fds = encode(m)
            os.write(self.backend.backend_req_fd, data)

    def serve_until_started(self, timeout: float = 15.0) -> None:
        """The handshake and VM1's whole start, up to its final SET_STATUS
        (DRIVER_OK): memory, every ring, the enables."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.1, deadline - time.monotonic()))
            assert msg is not None, "VM1 closed before it started"
            for out in self.backend.handle(msg):
                self.send(out)
            if msg.request == F.SET_STATUS and msg.payload.value & 0x4:
                return
            assert time.monotonic() < deadline, "VM1 never started"

    def channel(self) -> socket.socket:
        """The back-end request channel VM1 gave us (SET_BACKEND_REQ_FD)."""
        return socket.socket(fileno=os.dup(self.backend.backend_req_fd))

    def wait_closed(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                msg = self.recv(max(0.05, deadline - time.monotonic()))
            except (socket.timeout, TimeoutError):
                return False
            if msg is not None:
                close_fds(msg.fds)
        return self.closed

    def close(self) -> None:
        self.backend.close()
        self.dec.close()
        self.sock.close()


def channel_message(req: BackendRequest, payload=None, need_reply: bool = False) -> bytes:
    from emu.vhost_user.codec import request
    return encode(request(req, payload, (), need_reply))[0]
