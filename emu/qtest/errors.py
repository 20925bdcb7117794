"""qtest errors, split by whose fault they are.

Everything a qtest client or a target access can cause is a
:class:`emu.errors.PeerError`: the command is answered ``FAIL <reason>``,
counted, and the session keeps serving.  QEMU asserts on most of these;
emu refuses them instead.
"""
from emu.errors import EmuBug, PeerError


class QtestError(PeerError):
    """Base of every qtest error caused by the client or the access."""


class BadCommand(QtestError):
    """A command line that is not a valid command: unknown word, missing or
    extra argument, a number QEMU's parser rejects, a value out of range."""


class LineTooLong(QtestError):
    """A command line longer than the decoder's bound (it is discarded)."""


class TargetError(QtestError):
    """The target refused an access: no such device, an access the machine
    cannot make.  Raised by a :class:`~emu.qtest.target.QtestTarget`."""


class UnknownDevice(TargetError):
    """No device at that QOM path (QEMU's reply text: ``Unknown device``)."""

    def __init__(self, path: str = ""):
        super().__init__("Unknown device")
        self.path = path


class UsageError(EmuBug):
    """emu code called this package wrongly (e.g. an IRQ number >= MAX_IRQ)."""
