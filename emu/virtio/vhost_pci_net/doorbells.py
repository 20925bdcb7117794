"""Doorbells (``docs/vhost-pci-device.md`` §6): a write at BAR0 + 0x3800 +
4i signals the peer's call eventfd of vring *i*.

The driver (and its C loop, through the bus's ioeventfd) sees stable fd
numbers of the device, :class:`CallAliases`; the peer's call fds are
``dup2``-ed onto them, so a peer's SET_VRING_CALL swaps the target
atomically and the driver never holds a closed fd.
"""
from __future__ import annotations

import os

from emu import eventfd as efd
from emu.pci.errors import GuestAccessError
from emu.spec import vhost_pci_net as S


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class CallAliases:
    """One stable eventfd per peer vring."""

    def __init__(self, nvrings: int):
        self.fds = [_eventfd() for _ in range(nvrings)]

    def point(self, index: int, fd: int | None) -> None:
        """Make ``fds[index]`` signal ``fd`` (None: nobody, a fresh dummy)."""
        if index >= len(self.fds):
            return
        if fd is None:
            dummy = _eventfd()
            os.dup2(dummy, self.fds[index], inheritable=False)
            os.close(dummy)
        else:
            os.dup2(fd, self.fds[index], inheritable=False)

    def ring(self, index: int) -> None:
        efd.signal(self.fds[index])     # the peer's call eventfd: never blocks

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


class Doorbells:
    """The doorbell MMIO range; writes that miss the ioeventfd (a size it
    does not match) still ring."""

    def __init__(self, aliases: CallAliases, nvrings: int):
        self.aliases, self.nvrings = aliases, nvrings
        self.rung = 0

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        i = offset // S.DOORBELL_STRIDE
        if offset % S.DOORBELL_STRIDE or i >= self.nvrings:
            raise GuestAccessError("doorbell", f"doorbell write at 0x{offset:x}")
        self.rung += 1
        self.aliases.ring(i)
