"""Typed errors shared by every layer.

The split that matters to a device emulator is *whose fault* an error is:
`PeerError` means the other side (a vhost-user peer, a guest driver, guest
memory contents) sent something invalid -- log it, count it, drop that
connection or request, keep serving.  `EmuBug` means our own invariant broke.
"""


class EmuError(Exception):
    """Base of every emu error."""


class PeerError(EmuError):
    """Invalid input from an untrusted party (peer process, guest, guest RAM)."""


class EmuBug(EmuError):
    """An internal invariant was violated: a bug in emu, not in the peer."""


class GuestMemoryError(PeerError):
    """A guest-physical or peer-virtual range is not wholly inside one region."""


class RegionTableError(PeerError):
    """A memory table (regions from a peer or the command line) is malformed."""
