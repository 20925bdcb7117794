"""The metadata page (BAR4, ``docs/vhost-pci-device.md`` §5): what the
device tells its driver about the peer.  Written only by the device, read
by the driver under a sequence lock."""
from __future__ import annotations

import mmap
import threading
from typing import Callable

from emu.spec import vhost_pci_net as S

_GEN = S.M_GENERATION // 4          # the generation word, as a u32 index


class Metadata:
    """The page, and one sequence-locked writer per thing the device
    publishes.  Only the generation word needs single aligned stores (it
    has them); the fields are written between its two stores with
    ``struct.pack_into``, and a driver that read while they changed sees an
    odd or moved generation and reads again, so a torn field is never used.
    No ring index lives here."""

    def __init__(self, peer_vq_max: int, window_size: int):
        if S.vring_at(peer_vq_max) > S.METADATA_SIZE:
            raise ValueError(f"peer_vq_max {peer_vq_max} does not fit the metadata page")
        self.mm = mmap.mmap(-1, S.METADATA_SIZE)
        # 32-bit words (x86: little-endian, as the page's layout); an item store
        # is one aligned 4-byte store, as numpy's was, without importing numpy
        self.u32 = memoryview(self.mm).cast("I")
        self.peer_vq_max = peer_vq_max
        self._lock = threading.Lock()
        S.HEADER.pack_into(self.mm, 0, S.MAGIC, S.VERSION, 0, 0, 0, 0, bytes(6), 0, 0, 0,
                           window_size)

    @property
    def generation(self) -> int:
        return int(self.u32[_GEN])

    def update(self, fn: Callable[[mmap.mmap], None]) -> int:
        """Run ``fn(page)`` inside the sequence lock; returns the new (even)
        generation.  Each generation store is one aligned 32-bit store."""
        with self._lock:
            g = self.generation
            self.u32[_GEN] = (g + 1) & 0xFFFFFFFF        # odd: in progress
            fn(self.mm)
            g = (g + 2) & 0xFFFFFFFE
            self.u32[_GEN] = g
            return g

    def _field(self, name: str, value) -> int:
        return self.update(lambda mm: S.HEADER.pack_field(mm, 0, name, value))

    # -- what the device publishes ------------------------------------------------------------------
    def set_peer_state(self, state: int) -> int:
        return self._field("peer_state", state)

    def set_peer_features(self, features: int, protocol_features: int) -> int:
        def fill(mm):
            self._pack(mm, "peer_features", features)
            self._pack(mm, "peer_protocol_features", protocol_features)
        return self.update(fill)

    def set_peer_mac(self, mac: bytes) -> int:
        return self._field("peer_mac", bytes(mac[:6]).ljust(6, b"\0"))

    def set_peer_mtu(self, mtu: int) -> int:
        return self._field("peer_mtu", mtu)

    def set_regions(self, regions) -> int:
        """``regions``: ``(gpa, size, window_offset)`` in gpa order."""
        regions = list(regions)[:S.MAX_REGIONS]

        def fill(mm):
            for i, (gpa, size, woff) in enumerate(regions):
                S.REGION.pack_into(mm, S.region_at(i), gpa, size, woff, 0)
            self._pack(mm, "nregions", len(regions))
        return self.update(fill)

    def set_vring(self, index: int, *, num: int, base: int, enabled: bool, ready: bool,
                  epoch: int, desc: int, avail: int, used: int, packed: bool = False) -> int:
        fmt = S.FORMAT_PACKED if packed else S.FORMAT_SPLIT

        def fill(mm):
            S.VRING.pack_into(mm, S.vring_at(index), num, base & 0xFFFF, int(enabled),
                              int(ready), epoch & 0xFFFF, desc, avail, used, fmt, 0, 0, 0)
            n = S.HEADER.unpack_field(mm, 0, "nvrings")
            self._pack(mm, "nvrings", max(n, index + 1))
        return self.update(fill)

    def clear_peer(self) -> int:
        """The peer is gone: no regions, no vrings."""
        def fill(mm):
            start, end = S.vring_at(0), S.vring_at(self.peer_vq_max)
            mm[start:end] = bytes(end - start)
            self._pack(mm, "nregions", 0)
            self._pack(mm, "nvrings", 0)
        return self.update(fill)

    @staticmethod
    def _pack(mm, name: str, value) -> None:
        S.HEADER.pack_field(mm, 0, name, value)

    def close(self) -> None:
        if self.u32 is not None:
            self.u32.release()
        self.u32 = None
        try:
            self.mm.close()
        except BufferError:
            pass
