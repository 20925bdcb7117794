"""File descriptors of every kind a hostile vhost-user peer can send.

Every maker returns a new fd the caller owns (and closes once it is sent:
SCM_RIGHTS gives the receiver its own).  Memory kinds are memfds that are
wrong in one way each; eventfd kinds include the ones a peer can turn
against emu (blocking, counter at 2^64 - 2); the rest are fds of the wrong
type altogether.
"""
from __future__ import annotations

import fcntl
import os
import socket

MiB = 1 << 20
FULL = (1 << 64) - 2


def _memfd(size: int, seals: int = 0, name: str = "emu-fuzz-kind") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _reopen(flags: int, size: int) -> int:
    m = _memfd(size)
    try:
        return os.open(f"/proc/self/fd/{m}", flags | os.O_CLOEXEC)
    finally:
        os.close(m)


def _blocking(fd: int) -> int:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _eventfd(blocking: bool = False, count: int = 0) -> int:
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    if count:
        os.eventfd_write(fd, count)
    return _blocking(fd) if blocking else fd


def _socket() -> int:
    a, b = socket.socketpair()
    a.close()
    return b.detach()


def _pipe() -> int:
    r, w = os.pipe()
    os.close(w)
    return r


MAKERS = {
    "memfd": lambda: _memfd(2 * MiB),
    "memfd-sealed-write": lambda: _memfd(2 * MiB, fcntl.F_SEAL_WRITE),
    "memfd-read-only": lambda: _reopen(os.O_RDONLY, 2 * MiB),
    "memfd-short": lambda: _memfd(4096),
    "memfd-empty": lambda: _memfd(0),
    "pipe": _pipe,
    "socket": _socket,
    "eventfd": _eventfd,
    "eventfd-blocking": lambda: _eventfd(blocking=True),
    "eventfd-full": lambda: _eventfd(count=FULL),
    "eventfd-full-blocking": lambda: _eventfd(blocking=True, count=FULL),
    "directory": lambda: os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
    "dev-null": lambda: os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC),
}
KINDS = sorted(MAKERS)
EVENTFD_KINDS = [k for k in KINDS if k.startswith("eventfd")]
BAD_MEMORY_KINDS = [k for k in KINDS if k != "memfd"]


def make(kind: str) -> int:
    return MAKERS[kind]()
