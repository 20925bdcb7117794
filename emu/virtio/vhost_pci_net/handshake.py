"""Window safety (``docs/vhost-pci-device.md`` §7): before the device takes
anything away from its driver -- a memory table, a vring, the peer -- it
bumps the metadata generation, raises a config interrupt and waits for the
driver's ``driver_ack`` of that generation, the driver's promise that its
copy loop no longer touches what is going.  A driver that does not answer
within ``ack_timeout`` gets the window revoked (private zero pages): a late
access can neither crash emu nor reach the peer.

Two threads meet here: the guest thread writes ``driver_ack`` (a config
write), the event loop waits for it.  The guest never waits for the loop
while it holds the machine lock, so the wait is bounded by the timeout.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from emu.window import PeerWindow

log = logging.getLogger(__name__)


class WindowHandshake:
    def __init__(self, window: PeerWindow, generation: Callable[[], int], *,
                 timeout: float, name: str, emit: Callable[[str, dict], None]):
        self.window = window
        self.generation = generation      # the metadata's current generation
        self.timeout = timeout
        self.name = name
        self.emit = emit
        self.driver_ack = 0
        self.driver_active = False        # a driver acknowledged since the last reset
        self._ack = threading.Condition()
        self.ack_timeouts = 0
        self.window_revocations = 0

    # -- the driver (guest thread) --------------------------------------------------------------
    def acknowledge(self, generation: int) -> None:
        """``driver_ack`` written: the driver no longer uses anything older."""
        with self._ack:
            self.driver_ack = generation
            self.driver_active = True
            self._ack.notify_all()

    def driver_reset(self) -> None:
        """The driver reset the device: it uses nothing, nobody to wait for."""
        with self._ack:
            self.driver_active = False
            self.driver_ack = 0
            self._ack.notify_all()

    # -- the device (event loop) ----------------------------------------------------------------
    def wait(self, why: str) -> bool:
        """Wait until the driver acknowledged the current generation; False
        after ``timeout`` (counted and logged)."""
        gen = self.generation()
        with self._ack:
            if not self.driver_active:
                return True
            ok = self._ack.wait_for(lambda: not self.driver_active or
                                    ((self.driver_ack - gen) & 0xFFFFFFFF) < 0x80000000,
                                    self.timeout)
        if not ok:
            self.ack_timeouts += 1
            log.warning("%s: driver did not acknowledge generation %d (%s) within %.1f s",
                        self.name, gen, why, self.timeout)
        return ok

    def retire_window(self, why: str) -> None:
        """Take the mapped table away once the driver let go of it (the
        caller has already published that it is going): unmapped after the
        driver's ack, revoked if none comes.  Zero pages stay until the
        driver next acknowledges (the next unmap releases them)."""
        if not self.window.mapped:
            return
        if self.wait(why):
            self.window.unmap()
            return
        self.window.revoke()
        self.window_revocations += 1
        self.emit("EMU_VHOST_PCI_WINDOW_REVOKED", {"device": self.name, "reason": why})
