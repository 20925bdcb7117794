"""A socket whose open file description the peer shares (the back-end
request channel of SET_BACKEND_REQ_FD: the front-end may keep a copy of
the end it handed over): the peer clears O_NONBLOCK and reads the data
the loop was told about.  MessageStream must not block (class 2)."""
from __future__ import annotations

import asyncio
import fcntl
import os
import socket

from emu.vhost_user.codec import encode, request
from emu.vhost_user.messages import BackendRequest as B, FrontendRequest as F, U64
from emu.vhost_user.transport import MessageStream


def _make_blocking(sock: socket.socket) -> None:
    fd = sock.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)


def test_readable_then_stolen_on_a_blocking_description(no_fd_leak, arun):
    async def main():
        ours, far = socket.socketpair()
        stream = MessageStream(ours, B, name="channel")
        peer_copy = socket.socket(fileno=os.dup(ours.fileno()))   # what the peer kept
        try:
            _make_blocking(peer_copy)                  # the flag is the description's
            far.sendall(encode(request(B.CONFIG_CHANGE_MSG))[0])
            peer_copy.recv(4096)                       # the peer takes it first
            stream._on_readable()                      # what the loop does after epoll said so
            assert not stream.closed and stream._error is None
            far.sendall(encode(request(B.CONFIG_CHANGE_MSG))[0])
            msg = await asyncio.wait_for(stream.receive(), 5)
            assert msg.request == B.CONFIG_CHANGE_MSG
        finally:
            stream.close()
            peer_copy.close()
            far.close()
    arun(main())


def test_send_into_a_full_blocking_description_queues(no_fd_leak, arun):
    """The peer stops reading and makes the socket blocking: sends queue
    (and drain() times out) instead of blocking the loop."""
    async def main():
        ours, far = socket.socketpair()
        stream = MessageStream(ours, F, name="main")
        try:
            _make_blocking(ours)
            msg = request(F.SET_FEATURES, U64(1))
            for _ in range(200_000):                   # far more than the socket buffer
                stream.send(msg)
                if stream._out:
                    break
            assert stream._out, "the socket never filled"
            for _ in range(100):
                stream.send(msg)                       # queued, not blocked
            assert not stream.closed
        finally:
            stream.close()
            far.close()
    arun(main())
