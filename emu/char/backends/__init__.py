"""Chardev backends for serial ports: where a UART's bytes go and come from.

One backend per ``-chardev`` (or legacy ``-serial SPEC``) that a serial
port uses:

* ``socket``: a unix socket, listening (``server=on``: one client at a
  time, as QEMU; the next one is accepted when it leaves) or connecting
  (``reconnect=N`` retries), or an inherited fd (listening or connected);
* ``file``: output only, truncated or ``append=on``; ``/dev/fdset/N`` works;
* ``stdio``: stdout and stdin; ``pty``: a new pseudo-terminal, its path
  printed as QEMU prints it and shown by ``query-chardev``; ``null``.

Output from the frontend (the UART, on the guest thread) goes into a
bounded buffer (:data:`LIMIT`); :meth:`Backend.room` is what the UART
reports as THRE, so a peer that does not read slows the guest's console
down instead of growing emu's memory.  A listening socket with no client
keeps the last :data:`LIMIT` bytes and gives them to the next client:
emu's guest boots in milliseconds, before a harness has connected its
console (QEMU drops output while no client is connected; emu's console
would otherwise always lose its boot lines).  Input goes to the
frontend only as far as it has room (its receive FIFO), as QEMU's
``can_receive``.

Sockets are served on the event loop (never blocking on a peer's fd);
stdio, files and ptys by a writer thread with blocking writes (stdout
shares its open file description with the terminal and stderr: making it
non-blocking would break them) and, for input, a reader thread.
"""
from __future__ import annotations

from typing import Callable

from emu.char.backends.base import (LIMIT, Backend, ChardevError, Frontend,  # noqa: F401
                                    LogCopy, NullBackend)
from emu.char.backends.fd import FdBackend, FileBackend, PtyBackend, StdioBackend  # noqa: F401
from emu.char.backends.unixsocket import SocketBackend  # noqa: F401
from emu.config import Chardev
from emu.fdset import FdSets


def create(cfg: Chardev, fdsets: FdSets | None = None,
           opener: Callable[[str, int], int] | None = None) -> Backend:
    """The backend of a chardev a serial port uses."""
    if cfg.backend == "socket":
        return SocketBackend(cfg)
    if cfg.backend == "file":
        return FileBackend(cfg, fdsets, opener)
    if cfg.backend == "stdio":
        return StdioBackend(cfg, fdsets)
    if cfg.backend == "pty":
        return PtyBackend(cfg, fdsets)
    return NullBackend(cfg)
