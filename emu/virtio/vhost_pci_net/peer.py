"""The vhost-user face of vhost-pci-net: what the peer (VM1's front-end)
does, through the Backend, published to VM2's driver in the metadata page.
Every method runs on the event-loop thread (the Backend calls them), except
:meth:`PeerFace.driver_negotiated` (the guest thread, FEATURES_OK).

It is kept apart from the virtio face (``device.py``) because the two
interfaces share method names (``reset``, ``features``) and mean different
things by them.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Callable, Protocol

from emu.spec import vhost_pci_net as S
from emu.spec import virtio as V, virtio_net as N
from emu.vhost_user.counters import PeerCounters
from emu.vhost_user.device import BackendDevice, BackendPort
from emu.window import PeerWindow, WindowMemory

from .doorbells import CallAliases
from .handshake import WindowHandshake
from .kicks import KickRouter
from .mapper import WindowMapper
from .metadata import Metadata

log = logging.getLogger(__name__)

ALL_PEER_STATE = S.PS_CONNECTED | S.PS_MEM_READY | S.PS_FEATURES_SET | S.PS_VHOST_PCI


class DriverSide(Protocol):
    """What the vhost-user face needs of the virtio face."""

    def guest_features(self) -> int:
        """What our driver negotiated (0 before FEATURES_OK)."""

    def config_changed(self) -> None:
        """Raise a config-change interrupt."""


def peer_bits(driver_features: int, peer_vq_max: int, peer_features: int) -> int:
    """Ring-format bits for the peer: our driver's choice, plus MQ while
    the peer may use it.  MQ is about the peer's queues (``peer_vq_max``),
    not our own, so our driver never negotiates it; without it a
    multi-queue front-end silently falls back to one pair.  Once the peer
    has set its features, MQ follows them: a push must stay a subset of
    what the peer acked.  RING_PACKED acked by our driver is about its own
    queues; the peer may use packed rings when the driver acked
    F_PEER_RING_PACKED (it serves either format) -- like MQ, only while the
    peer has not set features without them."""
    bits = driver_features & N.VHOST_NET_BITS & ~(N.F_MQ | V.F_RING_PACKED)
    if driver_features & S.F_PEER_RING_PACKED and (not peer_features
                                                   or peer_features & V.F_RING_PACKED):
        bits |= V.F_RING_PACKED
    if peer_vq_max > 2 and (not peer_features or peer_features & N.F_MQ):
        bits |= N.F_MQ
    return bits


class PeerFace(BackendDevice):
    def __init__(self, *, name: str, chardev: str, peer_vq_max: int, window: PeerWindow,
                 metadata: Metadata, handshake: WindowHandshake, kicks: KickRouter,
                 calls: CallAliases, driver: DriverSide, max_mem: int,
                 emit: Callable[[str, dict], None]):
        self.name, self.chardev = name, chardev
        self.peer_vq_max = peer_vq_max
        self.window = window
        self.metadata = metadata
        self.handshake = handshake
        self.kicks = kicks
        self.calls = calls
        self.driver = driver
        self.emit = emit
        self.state = 0                    # peer_state bits (§5)
        self.peer_features = 0
        self.vring_epoch = [0] * peer_vq_max
        # packed vrings: where our driver left each (peer_vq_base), this epoch
        self.driver_bases: list[int | None] = [None] * peer_vq_max
        self.counters = PeerCounters()    # refusals and drops, over all connections
        self.mapper = WindowMapper(window, max_mem=max_mem, take_away=self.take_memory_away,
                                   restored=self.memory_changed)

    @property
    def link_up(self) -> bool:
        return bool(self.state & S.PS_CONNECTED and self.state & S.PS_MEM_READY)

    def _who(self) -> dict:
        return {"device": self.name, "chardev": self.chardev}

    def _set_state(self, bits: int, on: bool) -> None:
        self.state = (self.state | bits) if on else (self.state & ~bits)
        self.metadata.set_peer_state(self.state)

    # -- negotiation ----------------------------------------------------------------------------
    def features(self) -> int:
        """GET_FEATURES: what our driver negotiated, or what it could."""
        return peer_bits(self.driver.guest_features() or S.FEATURES, self.peer_vq_max,
                         self.peer_features)

    def queue_num(self) -> int:
        return self.peer_vq_max // 2

    def set_features(self, features: int) -> None:
        self.peer_features = features
        backend = self.backend
        protocol = backend.protocol_features if backend is not None else 0
        self.metadata.set_peer_features(features, protocol)
        self._set_state(S.PS_FEATURES_SET, True)
        self._set_state(S.PS_VHOST_PCI, bool(backend is not None and backend.vhost_pci_active))
        self.emit("VHOST_USER_FEATURES_CHANGED", {**self._who(), "features": features,
                                                  "protocol-features": protocol})

    def driver_negotiated(self, features: int) -> None:
        """Our driver set FEATURES_OK: its choice goes to the peer (the
        seed's rule, vhost-pci mode).  Guest thread; push_features is
        thread-safe."""
        backend = self.backend
        if backend is not None:
            backend.push_features(peer_bits(features, self.peer_vq_max, self.peer_features))

    # -- connection -------------------------------------------------------------------------------
    def connected(self, backend: BackendPort) -> None:
        super().connected(backend)
        self.counters.connections += 1
        self._set_state(S.PS_CONNECTED, True)
        g = self.driver.guest_features()
        if g:
            backend.push_features(peer_bits(g, self.peer_vq_max, self.peer_features))
        self.emit("VHOST_USER_CONNECTED", self._who())

    def disconnected(self) -> None:
        super().disconnected()
        self.counters.disconnects += 1
        self.peer_features = 0
        for i in range(self.peer_vq_max):
            self.calls.point(i, None)
        self.take_memory_away("peer disconnected")
        self._set_state(ALL_PEER_STATE, False)
        self.metadata.clear_peer()
        self.driver.config_changed()
        self.emit("VHOST_USER_DISCONNECTED", {**self._who(), "reason": "peer closed the connection"})

    # -- memory ------------------------------------------------------------------------------------
    def memory_changed(self, mem: WindowMemory | None) -> None:
        regions = [] if mem is None else sorted(mem.regions, key=lambda r: r.gpa)
        self.metadata.set_regions((r.gpa, r.size, r.window_offset) for r in regions)
        self._set_state(S.PS_MEM_READY, mem is not None)
        self.driver.config_changed()

    def take_memory_away(self, why: str) -> None:
        """Unpublish the mapped table, wait for the driver to let go of it,
        retire the window (``handshake.py``)."""
        if not self.window.mapped:
            return
        if self.state & S.PS_MEM_READY:
            self._set_state(S.PS_MEM_READY, False)
        self.driver.config_changed()
        self.handshake.retire_window(why)

    # -- vrings ------------------------------------------------------------------------------------------
    def _publish_vring(self, v, ready: bool) -> None:
        self.metadata.set_vring(v.index, num=v.num, base=v.base, enabled=v.enabled, ready=ready,
                                epoch=self.vring_epoch[v.index], desc=v.desc_gpa,
                                avail=v.avail_gpa, used=v.used_gpa, packed=v.packed)
        self.driver.config_changed()

    def set_driver_base(self, index: int, base: int) -> None:
        """The driver wrote ``peer_vq_base`` for vring ``index`` (guest thread)."""
        self.driver_bases[index] = base & 0xFFFF

    def vring_start(self, v) -> None:
        # a packed vring is at its base until the driver says otherwise
        self.driver_bases[v.index] = v.base & 0xFFFF
        self.calls.point(v.index, v.call_fd)
        # a new epoch tells the driver this is a fresh start from v.base,
        # not the ring it was already serving
        self.vring_epoch[v.index] = (self.vring_epoch[v.index] + 1) & 0xFFFF
        self._publish_vring(v, ready=True)
        self.kicks.set_kick_fd(v.index, v.kick_fd)

    def vring_stop(self, v) -> int:
        """GET_VRING_BASE (or a re-map): the driver must let go of the ring;
        then its used->idx is the next avail index (the copy loop completes
        every chain it pops, in order)."""
        self.kicks.set_kick_fd(v.index, None)        # the Backend closes it after we return
        self._publish_vring(v, ready=False)
        self.handshake.wait(f"vring {v.index} stopped")
        self.calls.point(v.index, None)
        if v.packed:
            # no index in a packed ring's memory: the driver said where it is
            # (or never moved it: the ring's start)
            base = self.driver_bases[v.index]
            return v.base & 0xFFFF if base is None else base
        return self._used_idx(v)

    def _used_idx(self, v) -> int:
        """used->idx of the peer's ring, read only while it is the peer's
        memory in the window (never through a page taken away)."""
        if not v.used:
            return v.base
        if not self.window.holds(v.used + 2 - self.window.base, 2):
            log.warning("%s: vring %d's used ring is not mapped: base %d kept",
                        self.name, v.index, v.base)
            return v.base
        return ctypes.c_uint16.from_address(v.used + 2).value    # one aligned 16-bit load

    def vring_enable(self, v, enabled: bool) -> None:
        self._publish_vring(v, ready=v.started)

    def vring_call_changed(self, v) -> None:
        self.calls.point(v.index, v.call_fd)

    # -- net --------------------------------------------------------------------------------------------------
    def send_rarp(self, mac: bytes) -> None:
        self.metadata.set_peer_mac(mac)

    def set_mtu(self, mtu: int) -> None:
        self.metadata.set_peer_mtu(mtu)
