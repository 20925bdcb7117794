"""The transport-independent side of a virtio device (virtio 1.x §2-3).

A :class:`VirtioDevice` subclass is a device *type* (net, vhost-pci-net...):
it states its id, queues, features and configuration layout, and reacts to
what the driver does through the transport (features accepted, queue
enabled, kick, DRIVER_OK, reset).  It raises interrupts and other events
through the services of its :class:`VirtioTransport`, reachable as
``self.transport`` once the device is plugged into one (e.g.
:class:`emu.virtio.pci.VirtioPCIFunction`).

Threading: transport callbacks run with the transport's lock held (the
guest thread is inside a register access).  Transport services may be
called from any thread; they take the same lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from emu.errors import EmuBug
from emu.pci.errors import GuestAccessError
from emu.spec.virtio import F_VERSION_1, NO_VECTOR


@dataclass
class QueueConfig:
    """What the driver programmed for one virtqueue (guest-physical
    addresses of the descriptor table, driver (avail) and device (used)
    areas)."""

    index: int
    max_size: int
    size: int = 0
    enable: bool = False
    msix_vector: int = NO_VECTOR
    desc: int = 0
    driver: int = 0
    device: int = 0
    notify_off: int = 0

    def __post_init__(self):
        if self.size == 0:
            self.size = self.max_size

    def reset(self) -> None:
        self.size = self.max_size
        self.enable = False
        self.msix_vector = NO_VECTOR
        self.desc = self.driver = self.device = 0


class VirtioTransport(Protocol):
    """Services a transport offers its device."""

    @property
    def guest_features(self) -> int: ...      # accepted at FEATURES_OK, else 0

    @property
    def status(self) -> int: ...

    def notify_queue(self, index: int) -> None: ...   # used-buffer interrupt

    def notify_config(self) -> None: ...              # config changed

    def set_needs_reset(self) -> None: ...            # device entered an error state

    def kick_eventfd(self, index: int) -> int: ...    # bind kicks to an eventfd


class VirtioDevice:
    """Base class of virtio device types.  Override what the type needs;
    the defaults describe a device with read-only configuration ``config``."""

    device_id: int = 0
    num_queues: int = 1
    pci_class: int = 0xFF0000            # "other"; net devices say 0x020000

    def __init__(self, config_size: int = 0):
        self.config = bytearray(config_size)
        self._transport: VirtioTransport | None = None

    # -- description ------------------------------------------------------------
    @property
    def config_size(self) -> int:
        return len(self.config)

    def queue_max_size(self, index: int) -> int:
        return 256

    def device_features(self) -> int:
        """The features the modern interface offers (64 bits)."""
        return F_VERSION_1

    def legacy_features(self) -> int:
        """What the legacy interface offers (its low 32 bits are shown):
        the device's features, and bits only a legacy driver may take."""
        return self.device_features() & 0xFFFFFFFF

    def bad_features(self) -> int:
        """What a legacy driver that acked QEMU's BAD_FEATURE bit gets."""
        return 0

    # -- driver actions (transport -> device) -------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        """Device-configuration read; the transport has bounds-checked it."""
        return int.from_bytes(self.config[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        """Device-configuration write; raise GuestAccessError to refuse it."""
        raise GuestAccessError("config-readonly",
                               f"write to read-only device config at 0x{offset:x}")

    def features_ok(self, features: int) -> bool:
        """The driver set FEATURES_OK with ``features`` (already a subset of
        :meth:`device_features` containing VERSION_1).  False refuses it."""
        return True

    def driver_ok(self) -> None:
        """The driver set DRIVER_OK: the device is live."""

    def reset(self) -> None:
        """The driver reset the device (or the function was reset): stop
        using the queues.  The transport then clears its own state."""

    def queue_notify(self, index: int) -> None:
        """A kick for enabled queue ``index`` reached the device model (it
        was not taken by an ioeventfd)."""

    def queue_enabled(self, index: int, queue: QueueConfig) -> None:
        """The driver wrote 1 to queue_enable; ``queue`` is a snapshot."""

    # -- transport ----------------------------------------------------------------
    @property
    def transport(self) -> VirtioTransport:
        if self._transport is None:
            raise EmuBug(f"{type(self).__name__} is not plugged into a transport")
        return self._transport

    def attach(self, transport: VirtioTransport) -> None:
        if self._transport is not None:
            raise EmuBug(f"{type(self).__name__} already has a transport")
        self._transport = transport
