"""eventfd I/O that never blocks on an fd a peer can reach.

A kick or call eventfd that crossed a vhost-user socket shares its open
file description with the peer: the peer can clear ``O_NONBLOCK``, read the
counter dry after the loop saw it readable, or fill it to 2^64 - 2 so the
next write blocks.  ``os.eventfd_read``/``os.eventfd_write`` would then hang
the thread that called them (the event loop: QMP and every device; the
guest thread: stop/cont).  Every eventfd emu reads or signals goes through
here instead (the C data path uses the same code, ``emu/_efd.c``):

* :func:`drain` reads with ``preadv2(RWF_NOWAIT)``, which an eventfd honours
  whatever its flags say: it never blocks;
* :func:`signal` writes 1; a write the peer made block is interrupted by
  emu's guard thread within two periods (``GUARD_MS``) and reports the
  counter full, which is harmless: a full counter is readable already.

The GIL is released for the call, so a held write stalls only its caller.
"""
from __future__ import annotations

import os

from emu._ring import ffi, lib


def new() -> int:
    """A fresh eventfd of emu's own (non-blocking, close-on-exec)."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def signal(fd: int) -> bool:
    """Add 1 to ``fd``'s counter; False if it is full (its reader is woken
    anyway).  OSError for a bad fd; never blocks for long."""
    r = lib.emu_efd_signal(fd)
    if r < 0:
        raise OSError(-r, f"eventfd {fd}: {os.strerror(-r)}")
    return r == 1


def drain(fd: int) -> int:
    """Read and reset ``fd``'s counter: its value, 0 if it was empty.
    OSError for a bad fd or one that is not an eventfd; never blocks."""
    value = ffi.new("uint64_t *")
    r = lib.emu_efd_drain(fd, value)
    if r < 0:
        raise OSError(-r, f"eventfd {fd}: {os.strerror(-r)}")
    return int(value[0]) if r else 0


def stats() -> dict:
    """The guard's figures: writes it interrupted, reads done the racy way
    (a kernel without RWF_NOWAIT for eventfds), its state and period."""
    out = ffi.new("uint64_t[4]")
    lib.emu_efd_stats(out)
    state = {0: "idle", 1: "starting", 2: "guarded", 3: "unguarded"}.get(int(out[2]), "?")
    return {"interrupted_writes": int(out[0]), "racy_reads": int(out[1]), "guard": state,
            "guard_ms": int(out[3])}


# the guard thread from the start, not at the first signal: a process's
# threads and mappings are then the same before and after its first peer
lib.emu_efd_start()
GUARD_MS = stats()["guard_ms"]
