"""The virtio face of vhost-pci-net: device type 21, its own queues, the
device configuration of ``docs/vhost-pci-device.md`` §4, and the parts the
vhost-user face (``peer.py``) and the driver share: the window, the
metadata page, the ack handshake, kick routing and doorbells."""
from __future__ import annotations

import asyncio
from typing import Callable

from emu.pci.errors import GuestAccessError
from emu.spec import vhost_pci_net as S
from emu.spec import virtio as V
from emu.spec.virtio import ISR_QUEUE, NO_VECTOR
from emu.virtio.device import VirtioDevice
from emu.window import PeerWindow

from .doorbells import CallAliases
from .handshake import WindowHandshake
from .kicks import KickRouter
from .limits import PeerLimits
from .metadata import Metadata
from .peer import PeerFace


class VhostPciNetDevice(VirtioDevice):
    device_id = S.VIRTIO_ID_VHOST_PCI_NET
    pci_class = S.PCI_CLASS

    def __init__(self, *, mac: bytes, queue_pairs: int = 1, peer_vq_max: int = 8,
                 window_size: int = S.DEFAULT_WINDOW_SIZE, queue_size: int = 256,
                 ack_timeout: float = 1.0, name: str = "vp0", chardev: str = "",
                 events: Callable[[str, dict], None] | None = None,
                 limits: PeerLimits = PeerLimits(), packed: bool = False):
        super().__init__(S.CONFIG.size)
        limits.check()
        if not 2 <= peer_vq_max <= S.MAX_PEER_VQS:
            raise ValueError(f"peer-vqs {peer_vq_max} not in 2..{S.MAX_PEER_VQS}")
        self.limits = limits
        self.packed = packed              # offer packed own queues (peer rings: either)
        self.name = name
        self.mac = mac
        self.pairs = queue_pairs
        self.num_queues = 2 * queue_pairs
        self.peer_vq_max = peer_vq_max
        self._qsize = queue_size
        self.vq_select = 0
        emit = events or (lambda name, data: None)
        self.window = PeerWindow(window_size)
        self.metadata = Metadata(peer_vq_max, window_size)
        self.handshake = WindowHandshake(self.window, lambda: self.metadata.generation,
                                         timeout=ack_timeout, name=name, emit=emit)
        self.kicks = KickRouter(peer_vq_max, self._raise_kick_vector)
        self.calls = CallAliases(peer_vq_max)
        self.peer = PeerFace(name=name, chardev=chardev, peer_vq_max=peer_vq_max,
                             window=self.window, metadata=self.metadata,
                             handshake=self.handshake, kicks=self.kicks, calls=self.calls,
                             driver=self, max_mem=limits.max_mem or window_size, emit=emit)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the device's reactions run on (set before start)."""
        return self.kicks.loop

    @loop.setter
    def loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.kicks.loop = loop

    # -- description -------------------------------------------------------------------------------
    def queue_max_size(self, index: int) -> int:
        return self._qsize

    def device_features(self) -> int:
        return S.FEATURES | (V.F_RING_PACKED if self.packed else 0)

    # -- device configuration (guest thread) ------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        sel = self.vq_select
        S.CONFIG.pack_into(self.config, 0, self.mac, S.S_LINK_UP if self.peer.link_up else 0,
                           self.pairs, self.peer_vq_max, self.metadata.generation,
                           self.handshake.driver_ack, sel, self.kicks.vectors[sel],
                           self.kicks.counts[sel] & 0xFFFFFFFF,
                           self.peer.driver_bases[sel] or 0)
        return int.from_bytes(self.config[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        if offset == S.CFG_DRIVER_ACK and size == 4:
            self.handshake.acknowledge(value)
        elif offset == S.CFG_VQ_SELECT and size == 2:
            if value >= self.peer_vq_max:
                self.vq_select = 0
                raise GuestAccessError("vq-select", f"peer_vq_select {value} >= {self.peer_vq_max}")
            self.vq_select = value
        elif offset == S.CFG_VQ_VECTOR and size == 2:
            if value != NO_VECTOR and not self.transport.vector_ok(value):
                raise GuestAccessError("vector-refused", f"peer vring vector {value}")
            self.kicks.set_vector(self.vq_select, value)
        elif offset == S.CFG_VQ_BASE and size == 4:
            self.peer.set_driver_base(self.vq_select, value)
        else:
            raise GuestAccessError("config-readonly",
                                   f"write of {size} bytes to device config 0x{offset:x}")

    def features_ok(self, features: int) -> bool:
        self.peer.driver_negotiated(features)
        return True

    def reset(self) -> None:
        self.handshake.driver_reset()
        self.kicks.reset()

    # -- what the vhost-user face needs (peer.DriverSide) ------------------------------------------------
    def guest_features(self) -> int:
        return self._transport.guest_features if self._transport is not None else 0

    def config_changed(self) -> None:
        if self._transport is not None:
            self.transport.notify_config()

    def _raise_kick_vector(self, vector: int) -> None:
        self.transport.notify_vector(vector, ISR_QUEUE)

    # -- monitor and teardown -------------------------------------------------------------------------------
    def device_stats(self) -> dict:
        return {"peer_state": self.peer.state, "peer_features": self.peer.peer_features,
                "generation": self.metadata.generation, "driver_ack": self.handshake.driver_ack,
                "window_revocations": self.handshake.window_revocations,
                "ack_timeouts": self.handshake.ack_timeouts,
                "window_rollbacks": self.window.rollbacks,
                "peer_kicks": self.kicks.stats(),
                "vhost_user": self.peer.counters.as_dict()}

    def close(self) -> None:
        self.kicks.close()
        self.calls.close()
        self.window.close()
        self.metadata.close()
