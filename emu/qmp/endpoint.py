"""Where a monitor listens or connects (:class:`MonitorEndpoint`), and the
error a monitor that cannot be set up raises.  Light (no typing module):
the launcher makes the sockets before anything else is imported
(:mod:`emu.launcher.early`)."""
from __future__ import annotations

from collections import namedtuple

from emu.errors import EmuError


class MonitorSetupError(EmuError):
    """A monitor endpoint could not be set up (bind, connect, bad fd)."""


_Fields = namedtuple("_Fields", "label path fd stdio server wait reconnect pretty",
                     defaults=(None, None, False, False, False, 0.0, False))


class MonitorEndpoint(_Fields):
    """Where a monitor listens or connects; built from the command line by
    :func:`emu.launcher.monitor_endpoints`.  Exactly one of path/fd/stdio.

    ``label``: the chardev id (``compat_monitor0`` for -qmp); ``path``: unix
    socket path; ``fd``: an inherited socket, connected (one session) or
    listening; ``server``: with path, listen (True) or connect (False);
    ``wait``: listening, hold start-up until the first client; ``reconnect``:
    connecting, seconds between attempts after a loss (0: none)."""

    __slots__ = ()

    def filename(self) -> str:
        if self.stdio:
            return "stdio"
        if self.fd is not None:
            return f"fd:{self.fd}"
        return f"unix:{self.path}" + (",server=on" if self.server else "")
