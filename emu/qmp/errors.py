"""QMP errors: what a command answers with ``{"error": {"class", "desc"}}``."""
from __future__ import annotations

from emu.errors import PeerError

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"
DEVICE_NOT_FOUND = "DeviceNotFound"


class QmpError(PeerError):
    """A command failed; the client gets ``{"error": {"class": ..., "desc": ...}}``.

    Raised by command handlers and by :class:`~emu.qmp.control.MachineControl`
    implementations (e.g. ``cont`` on a VM that needs a reset).  The
    monitor answers and keeps serving.
    """

    def __init__(self, desc: str, error_class: str = GENERIC_ERROR):
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class

    def to_json(self) -> dict:
        return {"class": self.error_class, "desc": self.desc}


class CommandNotFound(QmpError):
    def __init__(self, desc: str):
        super().__init__(desc, COMMAND_NOT_FOUND)
