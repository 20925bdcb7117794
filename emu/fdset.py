"""``-add-fd`` fd sets: ``/dev/fdset/ID`` wherever emu opens a path.

As QEMU's ``qemu_open()``: a path ``/dev/fdset/ID`` names the fd set ID
(from ``-add-fd fd=N,set=ID``); opening it returns a duplicate of the
set's fd whose access mode (``O_RDONLY``/``O_WRONLY``/``O_RDWR``) is the
one asked for.  Any other path is opened as usual.  Stdlib only.
"""
from __future__ import annotations

import errno
import fcntl
import os
from typing import Mapping, Sequence

PREFIX = "/dev/fdset/"

FdSets = Mapping[int, Sequence[tuple[int, "str | None"]]]


def set_id(path: str) -> int | None:
    """The set id of a ``/dev/fdset/ID`` path, else None."""
    if path.startswith(PREFIX):
        rest = path[len(PREFIX):]
        if rest.isascii() and rest.isdigit():
            return int(rest)
    return None


def open_path(path: str, flags: int, mode: int = 0o666, fdsets: FdSets | None = None) -> int:
    """``os.open`` that knows ``/dev/fdset/ID``; the fd is close-on-exec.
    Raises OSError (ENOENT: no such set, EACCES: no fd of that access mode)."""
    sid = set_id(path)
    if sid is None:
        return os.open(path, flags | os.O_CLOEXEC, mode)
    entries = (fdsets or {}).get(sid)
    if not entries:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    want = flags & os.O_ACCMODE
    for fd, _opaque in entries:
        try:
            have = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            continue
        if have == want:
            dup = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)
            if flags & os.O_APPEND:
                fcntl.fcntl(dup, fcntl.F_SETFL, fcntl.fcntl(dup, fcntl.F_GETFL) | os.O_APPEND)
            return dup
    raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)


def take_over(fdsets: FdSets) -> None:
    """Mark every fd of every set close-on-exec (QEMU dups them so; the
    originals are ours now and must not leak into children)."""
    for entries in fdsets.values():
        for fd, _ in entries:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
