"""What a back-end device model implements, and how peer memory is mapped.

:class:`BackendDevice` is the request-handler interface (rust-vmm's
``VhostUserBackend`` in spirit): the :class:`~emu.vhost_user.backend.Backend`
validates every request first and then calls the device synchronously with
sane values, on the event-loop thread.  Defaults make a device without a
data path work; a real device overrides what it needs.

:class:`MemoryMapper` decides where peer memory lands: :class:`DefaultMapper`
``mmap``\\ s each region anywhere (``emu.memory.map_regions``); the
vhost-pci device passes a mapper that places regions in its peer-memory
window.

:class:`BackendPort` is what a device may call on the back-end serving it
(the Backend implements it): devices depend on that small interface, not
on the state machine, so this module imports nothing of ``backend.py``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol, Sequence

from emu.memory import GuestMemory, map_regions
from emu.vhost_user.errors import ProtocolViolation
from emu.vhost_user.messages import ProtocolFeature

if TYPE_CHECKING:
    from emu.vhost_user.shm import DirtyLog
    from emu.vhost_user.vring import Vring

RegionSpec = tuple[int, int, int, int]   # gpa, size, uaddr, mmap_offset

DEFAULT_PROTOCOL_FEATURES = (ProtocolFeature.MQ | ProtocolFeature.REPLY_ACK
                             | ProtocolFeature.RARP | ProtocolFeature.NET_MTU
                             | ProtocolFeature.STATUS)


class BackendPort(Protocol):
    """What a device may use of the back-end that serves it (one connection)."""

    protocol_features: int          # acked by SET_PROTOCOL_FEATURES

    @property
    def vhost_pci_active(self) -> bool:
        """The front-end negotiated the vhost-pci extension."""

    def push_features(self, features: int) -> None:
        """The device's driver negotiated ``features``: tell the front-end
        (vhost-pci extension).  Thread-safe."""

    def backend_request(self, req, payload=None, fds=(), need_reply: bool = False) -> bool:
        """Queue a request on the back-end request channel; False if none."""


class MemoryMapper(Protocol):
    def map(self, specs: Sequence[RegionSpec], fds: Sequence[int]) -> GuestMemory:
        """Map a table; takes ownership of ``fds`` (closed, mapped or not).
        On failure it must leave any previously mapped table untouched.  A
        mapper that can hold only one table (a fixed window) may release the
        previous one here: every ring is stopped when ``map`` is called."""

    def unmap(self, mem: GuestMemory) -> None:
        """Release a table returned by :meth:`map`.  Called only after the
        device has been told of the new memory and no ring uses the old."""


class DefaultMapper:
    """Each region ``mmap``\\ ed at an address of the kernel's choosing."""

    def __init__(self, max_regions: int = 8, max_total: int | None = None):
        self.max_regions = max_regions
        self.max_total = max_total

    def map(self, specs: Sequence[RegionSpec], fds: Sequence[int]) -> GuestMemory:
        return map_regions(list(specs), list(fds), max_regions=self.max_regions,
                           max_total=self.max_total)

    def unmap(self, mem: GuestMemory) -> None:
        mem.close()


class BackendDevice(ABC):
    """A device behind a vhost-user back-end.  All methods run on the event
    loop thread; ``vring_*`` get the :class:`~emu.vhost_user.vring.Vring`
    the Backend owns (read it, do not keep its fds without ``dup``)."""

    backend: BackendPort | None = None
    _status: int = 0

    # -- negotiation ----------------------------------------------------------
    @abstractmethod
    def features(self) -> int:
        """Virtio features to offer (GET_FEATURES).  The Backend adds
        VHOST_USER_F_PROTOCOL_FEATURES.  Offer VHOST_F_LOG_ALL only if the
        data path logs dirty pages."""

    def protocol_features(self) -> int:
        """Protocol features the device can support; the Backend masks them
        with what it implements and adds the vhost-pci bits of its mode."""
        return int(DEFAULT_PROTOCOL_FEATURES)

    def queue_num(self) -> int:
        """GET_QUEUE_NUM: queue pairs for a net device."""
        return 1

    def max_vrings(self) -> int:
        """Ring indices accepted: 0 .. max_vrings()-1 (rx/tx per pair)."""
        return 2 * self.queue_num()

    def set_features(self, features: int) -> None:
        """SET_FEATURES: the negotiated set (already checked against the offer)."""

    # -- connection -----------------------------------------------------------
    def connected(self, backend: BackendPort) -> None:
        self.backend = backend

    def disconnected(self) -> None:
        self.backend = None

    # -- memory -----------------------------------------------------------------
    def memory_changed(self, mem: GuestMemory | None) -> None:
        """The peer's memory is now ``mem`` (None: gone).  Every ring is
        stopped while this runs."""

    def log_changed(self, log: DirtyLog | None) -> None:
        """The dirty log to mark while VHOST_F_LOG_ALL is negotiated."""

    # -- rings ----------------------------------------------------------------------
    def vring_start(self, vring: Vring) -> None:
        """``vring`` has size, addresses, kick: start its data path from
        ``vring.base``.  Called again after every stop (re-map, re-address)."""

    def vring_stop(self, vring: Vring) -> int:
        """Stop the data path of ``vring``; when this returns nothing touches
        the ring any more.  Returns the next avail index to process."""
        return vring.base

    def vring_enable(self, vring: Vring, enabled: bool) -> None:
        """SET_VRING_ENABLE (may come before the ring exists)."""

    def vring_call_changed(self, vring: Vring) -> None:
        """``vring.call_fd`` was replaced; the old fd is closed when this
        returns, so the data path must have switched."""

    # -- config, status, net ---------------------------------------------------------
    def get_config(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def set_config(self, offset: int, data: bytes, flags: int) -> None:
        raise ProtocolViolation("device configuration is read-only")

    def set_status(self, status: int) -> None:
        self._status = status

    def get_status(self) -> int:
        return self._status

    def reset(self) -> None:
        """RESET_OWNER / RESET_DEVICE: back to the initial state."""
        self._status = 0

    def send_rarp(self, mac: bytes) -> None:
        """SEND_RARP: announce ``mac`` (after migration)."""

    def set_mtu(self, mtu: int) -> None:
        """NET_SET_MTU."""

    # -- the seed's vhost-pci requests (vhost_pci="seed" only) ------------------------
    def set_device_id(self, device_id: int) -> None:
        """SET_DEVICE_ID: the virtio device type behind the front-end."""

    def vhost_pci_started(self, started: bool) -> None:
        """SET_VHOST_PCI start/stop: the seed hot-plugged its device here;
        emu's device exists from the start and may raise LINK_UP."""
