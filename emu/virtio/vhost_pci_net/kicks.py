"""Kick-to-vector routing (``docs/vhost-pci-device.md`` §4): the peer's
kicks on vring *i* raise the MSI-X vector the driver chose for it
(``peer_vq_msix_vector``), counted in ``peer_vq_kick_count``.  The kick
eventfd is watched only while a vector is set: a polling driver costs
nothing."""
from __future__ import annotations

import asyncio
from typing import Callable

from emu import eventfd as efd
from emu.spec.virtio import NO_VECTOR


class KickRouter:
    def __init__(self, nvrings: int, raise_vector: Callable[[int], None]):
        self.raise_vector = raise_vector          # the transport's MSI-X / INTx signal
        self.vectors = [NO_VECTOR] * nvrings
        self.counts = [0] * nvrings
        self._kick_fd: list[int | None] = [None] * nvrings   # the peer's, per vring
        self._watching: dict[int, int] = {}                   # vring -> fd the loop reads
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- the driver (guest thread) --------------------------------------------------------------
    def set_vector(self, index: int, vector: int) -> None:
        """``peer_vq_msix_vector`` of vring ``index`` (already validated)."""
        self.vectors[index] = vector
        self._reconsider(index)

    def reset(self) -> None:
        for i in range(len(self.vectors)):
            self.set_vector(i, NO_VECTOR)

    def _reconsider(self, index: int) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._apply, index)

    # -- the peer (event loop) ----------------------------------------------------------------------
    def set_kick_fd(self, index: int, fd: int | None) -> None:
        """The peer's kick eventfd of vring ``index`` (None: stopped).  The
        Backend owns the fd: it is closed only after this returns."""
        self._kick_fd[index] = fd
        self._apply(index)

    def _apply(self, index: int) -> None:
        if self.loop is None:
            return
        fd = self._kick_fd[index]
        want = fd if fd is not None and self.vectors[index] != NO_VECTOR else None
        have = self._watching.get(index)
        if have == want:
            return
        if have is not None:
            self._remove_reader(have)
            del self._watching[index]
        if want is not None:
            self.loop.add_reader(want, self._on_kick, index, want)
            self._watching[index] = want

    def _remove_reader(self, fd: int) -> None:
        try:
            self.loop.remove_reader(fd)
        except (ValueError, OSError):
            pass

    def _on_kick(self, index: int, fd: int) -> None:
        try:
            if not efd.drain(fd):        # the peer's: it may be blocking, or read dry
                return
        except OSError:
            return
        self.counts[index] += 1
        vector = self.vectors[index]
        if vector != NO_VECTOR:
            self.raise_vector(vector)

    def stats(self) -> dict:
        return {i: c for i, c in enumerate(self.counts) if c}

    def close(self) -> None:
        if self.loop is not None:
            for fd in self._watching.values():
                self._remove_reader(fd)
        self._watching.clear()
