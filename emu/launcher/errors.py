"""The launcher's one error: a start-up that cannot happen."""
from __future__ import annotations


class StartupError(Exception):
    """A configuration the machine cannot build, or a monitor or chardev
    that cannot be set up; ``origin`` names the option.  Fatal: ``emu:
    ORIGIN: reason``, exit 1."""

    def __init__(self, origin: str, msg: str):
        super().__init__(f"{origin}: {msg}" if origin else msg)
        self.origin = origin
