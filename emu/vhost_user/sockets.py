"""Unix sockets for vhost-user: listening, connecting, backing off.

* :func:`listen_unix` -- bind and listen on a path (a stale *socket* there
  is replaced, as QEMU does; anything else is left alone and refused), or
  adopt an inherited listening fd; the backlog is sized by the caller to
  the connections it will take, so a burst of legitimate clients is queued
  instead of refused with EAGAIN;
* :func:`connect_unix` -- connect, with QEMU's ``reconnect=SECONDS``: retry
  with :class:`Backoff` whatever the error (nobody listens, a backlog that
  is full);
* :class:`Backoff` -- the delays between attempts, shared by every
  connecting client, so a peer that is there but fails every attempt never
  makes emu spin.

Errors name the path, in QEMU's words (``Failed to bind socket to PATH:
...``); the launcher puts the option in front (:class:`SocketSetupError`,
:class:`ConnectFailed`).
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import time

from emu.vhost_user.errors import ConnectFailed, SocketSetupError, UsageError

#: sun_path holds 108 bytes with its terminating NUL (unix(7))
UNIX_PATH_MAX = 108
FIRST_DELAY = 0.05           # s: the first retry after a failure


def check_path(path: str) -> None:
    if len(os.fsencode(path)) >= UNIX_PATH_MAX:
        raise SocketSetupError(path, f"UNIX socket path '{path}' is too long "
                                     f"(must be less than {UNIX_PATH_MAX} bytes)")


def backlog_for(connections: int, slack: int = 4) -> int:
    """A listen backlog that holds ``connections`` clients arriving at once
    (plus ``slack`` that are turned away by accept, not by the kernel)."""
    return max(1, min(socket.SOMAXCONN, connections + slack))


def listen_unix(path: str | None = None, fd: int | None = None, *,
                backlog: int = 4) -> socket.socket:
    """A non-blocking listening unix stream socket on ``path`` (or the
    inherited listening ``fd``, which is taken over)."""
    if (path is None) == (fd is None):
        raise UsageError("give exactly one of path= or fd=")
    if fd is not None:
        sock = socket.socket(fileno=fd)
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise SocketSetupError(None, f"fd {fd} is not a unix stream socket")
        try:
            sock.listen(backlog)          # an inherited listener may have a short backlog
            sock.setblocking(False)
        except OSError as e:
            sock.detach()
            raise SocketSetupError(None, f"fd {fd}: cannot listen: {e.strerror}") from None
        return sock
    check_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SocketSetupError(path, f"Failed to bind socket to {path}: {e.strerror}") from None
    else:
        if stat.S_ISDIR(st.st_mode):
            raise SocketSetupError(path, f"Failed to bind socket to {path}: "
                                         f"{os.strerror(errno.EISDIR)}")
        if not stat.S_ISSOCK(st.st_mode):
            # QEMU unlinks whatever is there; emu removes only a stale socket
            raise SocketSetupError(path, f"Failed to bind socket to {path}: "
                                         f"{os.strerror(errno.EEXIST)} (not a socket: left alone)")
        try:
            os.unlink(path)             # a stale socket from an earlier run, as QEMU does
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SocketSetupError(path, f"Failed to unlink socket {path}: {e.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise SocketSetupError(path, f"Failed to bind socket to {path}: {e.strerror}") from None
    return sock


class Backoff:
    """Delays between connection attempts: ``first``, doubling on every
    failure up to ``ceiling`` (QEMU's ``reconnect=`` seconds).  A
    connection that stayed up for ``PROVED`` seconds (or ``ceiling``, if
    shorter) resets it: only then is the next attempt quick again.  A
    connection refused, one that "connects" into a full backlog, one that
    dies in its handshake: each is one more failure, whatever the errno."""

    PROVED = 1.0

    def __init__(self, ceiling: float, first: float = FIRST_DELAY):
        self.ceiling = max(float(ceiling), 0.0)
        self.first = min(first, self.ceiling) if self.ceiling else 0.0
        self._next = self.first
        self._up_at: float | None = None
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt (and grow the one after)."""
        delay = self._next
        self.failures += 1
        self._next = min(max(self._next * 2, self.first), self.ceiling)
        return delay

    def reset(self) -> None:
        self._next = self.first
        self.failures = 0

    def up(self) -> None:
        """A connection is established."""
        self._up_at = time.monotonic()

    def down(self) -> float:
        """The connection ended: the delay before the next attempt."""
        if self._up_at is not None and \
                time.monotonic() - self._up_at >= min(self.PROVED, self.ceiling):
            self.reset()
        self._up_at = None
        return self.next()


def _connect_now(path: str) -> socket.socket:
    """One non-blocking connect.  A unix stream connect completes at once
    or fails: EAGAIN means the listener's backlog is full and *nothing* is
    queued (asyncio's sock_connect would wait for writability and then call
    it connected -- the ENOTCONN that follows made reconnect spin)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_unix(path: str, *, reconnect: float | None = None,
                       timeout: float | None = None,
                       backoff: Backoff | None = None) -> socket.socket:
    """Connect to ``path``.  With ``reconnect`` (seconds), retry whatever
    the failure, waiting ``backoff``'s delays (50 ms doubling up to
    ``reconnect``); ``timeout`` bounds the whole wait."""
    check_path(path)
    loop = asyncio.get_running_loop()
    if reconnect and backoff is None:
        backoff = Backoff(reconnect)
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        try:
            return _connect_now(path)
        except OSError as e:
            why = e.strerror or str(e)
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                why += " (its listen backlog is full)"
            if not reconnect:
                raise ConnectFailed(f"Failed to connect to '{path}': {why}", path=path) from None
            delay = backoff.next()
            if deadline is not None and loop.time() + delay > deadline:
                raise ConnectFailed(f"Failed to connect to '{path}': {why} "
                                    f"(gave up after {timeout} s)", path=path) from None
        await asyncio.sleep(delay)
