"""A listening unix socket that appears at its path only once it listens.

``bind()`` creates the socket file; a client that connects between
``bind()`` and ``listen()`` is refused (ECONNREFUSED), and a harness that
waits for the path and then connects at once hits exactly that window.
So the socket is bound under a temporary name beside the path, set
listening, then renamed into place: the path exists only for a socket
that accepts.  As QEMU, a stale socket at the path is replaced; nothing
else is removed.  Stdlib only.
"""
from __future__ import annotations

import os
import socket
import stat


def listen_unix(path: str, backlog: int = 16) -> tuple[socket.socket, tuple[str, int, int]]:
    """The listening socket (non-blocking, close-on-exec) and ``(path,
    st_dev, st_ino)``, which says the file is ours when it is removed.
    Raises OSError; ``EADDRINUSE`` when the path is something else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(98, "Address already in use", path)     # EADDRINUSE
    tmp = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        sock.bind(tmp)
        try:
            sock.listen(backlog)
            sock.setblocking(False)
            os.rename(tmp, path)            # atomic: replaces a stale socket too
        except BaseException:
            os.unlink(tmp)
            raise
    except BaseException:
        sock.close()
        raise
    st = os.stat(path)
    return sock, (path, st.st_dev, st.st_ino)


def remove_owned(owned: tuple[str, int, int] | None) -> None:
    """Remove the socket file :func:`listen_unix` made, if it is still that one."""
    if owned is None:
        return
    path, dev, ino = owned
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == (dev, ino):
            os.unlink(path)
    except OSError:
        pass
