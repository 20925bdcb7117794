"""vhost-user errors, split by whose fault they are.

Everything a peer can cause is a :class:`emu.errors.PeerError` subclass: the
connection that caused it is dropped (or the request is refused) and the
process keeps serving.  Misuse of this package by emu code is an
:class:`emu.errors.EmuBug`.
"""
from emu.errors import EmuBug, EmuError, PeerError


class VhostUserError(PeerError):
    """Base of every vhost-user error caused by the peer."""


class MalformedMessage(VhostUserError):
    """Framing, size, flags, payload or fd count is wrong: the byte stream
    cannot be trusted any more, so the connection is closed."""


class TruncatedMessage(MalformedMessage):
    """The peer closed the connection in the middle of a message."""


class ProtocolViolation(VhostUserError):
    """A well-formed message that is invalid here: out of order, not
    negotiated, out of range for this device, a reply nobody asked for."""


class UnsupportedRequest(VhostUserError):
    """A request emu does not implement (answered, never fatal by itself)."""


class PeerClosed(VhostUserError):
    """The peer closed the connection (at a message boundary)."""


class PeerTimeout(VhostUserError):
    """The peer did not answer a request in time."""


class UsageError(EmuBug):
    """emu code called this package wrongly (e.g. start before init)."""


class ConnectFailed(VhostUserError):
    """No peer listens on the socket path (and no reconnect was asked for,
    or its time ran out).  ``path`` names it, for the launcher to name the
    option that gave it."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class SocketSetupError(EmuError):
    """A socket from the command line cannot be set up (a path that is a
    directory, a file, too long; a bad inherited fd): the operator's error,
    not a peer's.  ``path`` names it (None for an fd); the launcher puts the
    option in front, as QEMU does (``-chardev ...: Failed to bind ...``)."""

    def __init__(self, path: str | None, message: str):
        super().__init__(message)
        self.path = path
