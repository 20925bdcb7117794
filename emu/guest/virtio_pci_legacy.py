"""Guest side of the legacy virtio-pci interface (virtio 1.2 §4.1.4.8 and
§4.1.5.1.3.1's legacy notes), as Linux's ``virtio_pci_legacy_dev.c``
drives it: the I/O BAR0 registers, 32-bit features written once, queues of
the device's size placed by page frame number, the legacy status sequence
(ACKNOWLEDGE, DRIVER, DRIVER_OK: no FEATURES_OK).

:class:`LegacyVirtioPCIDriver` has the methods of
:class:`~emu.guest.virtio_pci.VirtioPCIDriver` a device-type driver uses,
so a driver runs over either interface.
"""
from __future__ import annotations

import struct
import time

from emu import eventfd
from emu.guest.pci import DriverError, PCIDevice
from emu.guest.virtio_pci import CONFIG_RETRIES, RESET_POLLS, QueueInfo, is_virtio
from emu.spec import virtio_pci as VP
from emu.spec.virtio import (F_BAD_FEATURE, NO_VECTOR, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
                             STATUS_DRIVER_OK, STATUS_FAILED)
from emu.spec.virtio_ring import LEGACY_ALIGN, ring_layout

LEGACY_BAR = 0


class LegacyVirtioPCIDriver:
    """A legacy virtio-pci transport driver for one (transitional or
    legacy-only) function."""

    legacy = True

    def __init__(self, dev: PCIDevice):
        if not is_virtio(dev) or not VP.PCI_DEVICE_ID_TRANSITIONAL_BASE < dev.device_id <= \
                VP.PCI_DEVICE_ID_TRANSITIONAL_LAST:
            raise DriverError(f"{dev!r} has no legacy virtio interface")
        if dev.revision != VP.ABI_VERSION:
            # (§4.1.2.2: "Drivers MUST match any PCI Revision ID value"; a
            # legacy driver only knows ABI 0, as Linux's legacy probe checks)
            raise DriverError(f"{dev!r}: legacy ABI revision {dev.revision}, not 0")
        if not dev.bars:
            dev.size_bars()
        bar = dev.bars.get(LEGACY_BAR)
        if bar is None or bar.kind != "io" or bar.size < VP.CONFIG_OFF:
            raise DriverError(f"{dev!r}: BAR0 is not the legacy I/O region")
        self.dev = dev
        self.device_id = dev.subsystem_id
        self.features = 0
        self.queues: dict[int, QueueInfo] = {}
        self.msix_enabled = False

    # -- registers ------------------------------------------------------------------------
    def _r(self, off: int, size: int) -> int:
        return self.dev.bar_read(LEGACY_BAR, off, size)

    def _w(self, off: int, size: int, value: int) -> None:
        self.dev.bar_write(LEGACY_BAR, off, size, value)

    @property
    def _config_off(self) -> int:
        self.msix_enabled = bool(self.dev.msix)
        return VP.CONFIG_OFF_MSIX if self.msix_enabled else VP.CONFIG_OFF

    @property
    def status(self) -> int:
        return self._r(VP.STATUS, 1)

    def add_status(self, bits: int) -> None:
        self._w(VP.STATUS, 1, self.status | bits)

    # -- initialisation --------------------------------------------------------------------
    def reset(self) -> None:
        self._w(VP.STATUS, 1, 0)
        for i in range(RESET_POLLS):
            if self.status == 0:          # (Linux: the read flushes the reset)
                self.queues.clear()
                self.features = 0
                return
            if i >= 8:
                time.sleep(0.001)
        raise DriverError(f"{self.dev!r}: reset did not complete")

    def device_features(self) -> int:
        return self._r(VP.HOST_FEATURES, 4)

    def negotiate(self, wanted: int) -> int:
        """Reset, ACKNOWLEDGE, DRIVER, write ``wanted`` & offered (32 bits,
        never QEMU's BAD_FEATURE probe bit)."""
        self.reset()
        self.add_status(STATUS_ACKNOWLEDGE)
        self.add_status(STATUS_DRIVER)
        accepted = wanted & self.device_features() & 0xFFFFFFFF & ~F_BAD_FEATURE
        self._w(VP.GUEST_FEATURES, 4, accepted)
        if self._r(VP.GUEST_FEATURES, 4) != accepted:
            self.add_status(STATUS_FAILED)
            raise DriverError(f"{self.dev!r} did not keep features 0x{accepted:x}")
        self.features = accepted
        return accepted

    def set_config_vector(self, vector: int) -> None:
        if not self.dev.msix:
            raise DriverError(f"{self.dev!r}: config vector without MSI-X enabled")
        self._w(VP.MSI_CONFIG_VECTOR, 2, vector)
        if self._r(VP.MSI_CONFIG_VECTOR, 2) != vector:
            raise DriverError(f"{self.dev!r} refused config vector {vector}")

    def queue_size(self, index: int, wanted: int | None = None) -> int:
        """The size queue ``index`` has (a legacy driver cannot choose it)."""
        self._w(VP.QUEUE_SEL, 2, index)
        size = self._r(VP.QUEUE_NUM, 2)
        if size == 0 or size & (size - 1):
            raise DriverError(f"{self.dev!r}: queue {index} does not exist (size {size})")
        return size

    def setup_queue(self, index: int, desc: int, avail: int, used: int,
                    size: int | None = None, vector: int = NO_VECTOR) -> QueueInfo:
        """Place queue ``index`` at ``desc`` (§2.7.2's legacy layout: the
        caller's avail and used must be where that layout puts them)."""
        num = self.queue_size(index)
        if size is not None and size != num:
            raise DriverError(f"legacy queue {index} has size {num}, not {size}")
        if self._r(VP.QUEUE_PFN, 4):
            raise DriverError(f"{self.dev!r}: queue {index} is already set up")
        want = ring_layout(desc, num, LEGACY_ALIGN)[:3]
        if desc % LEGACY_ALIGN or (desc, avail, used) != want:
            raise DriverError(f"queue {index} rings 0x{desc:x}/0x{avail:x}/0x{used:x} are not "
                              f"the legacy layout {tuple(hex(a) for a in want)}")
        if self.dev.msix:
            self._w(VP.MSI_QUEUE_VECTOR, 2, vector)
            if self._r(VP.MSI_QUEUE_VECTOR, 2) != vector:
                raise DriverError(f"{self.dev!r} refused vector {vector} for queue {index}")
        elif vector != NO_VECTOR:
            raise DriverError(f"queue {index} vector {vector} without MSI-X enabled")
        self._w(VP.QUEUE_PFN, 4, desc >> VP.QUEUE_ADDR_SHIFT)
        if self._r(VP.QUEUE_PFN, 4) != desc >> VP.QUEUE_ADDR_SHIFT:
            raise DriverError(f"{self.dev!r}: queue {index} PFN not kept")
        info = QueueInfo(index, num, vector, self.dev.bar_address(LEGACY_BAR) + VP.QUEUE_NOTIFY)
        self.queues[index] = info
        return info

    def driver_ok(self) -> None:
        self.add_status(STATUS_DRIVER_OK)
        if not self.status & STATUS_DRIVER_OK:
            raise DriverError(f"{self.dev!r} did not accept DRIVER_OK")

    def fail(self) -> None:
        self.add_status(STATUS_FAILED)

    # -- run time --------------------------------------------------------------------------
    def notify_eventfd(self, index: int) -> int | None:
        return self.dev.bus.pio_ioeventfd_for(self.queues[index].notify_addr, 2, index)

    def notify(self, index: int) -> None:
        fd = self.notify_eventfd(index)
        if fd is not None:
            eventfd.signal(fd)      # shared with a vhost-user back-end: never blocks
        else:
            self._w(VP.QUEUE_NOTIFY, 2, index)

    def read_isr(self) -> int:
        return self._r(VP.ISR, 1)

    def config_read(self, offset: int, size: int) -> int:
        return self._r(self._config_off + offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self._w(self._config_off + offset, size, value)

    def read_config(self, offset: int, length: int) -> bytes:
        """Device configuration bytes: no generation counter in legacy, so
        read twice until two reads agree (what Linux's legacy get does not
        even try; a changing config could tear)."""
        for _ in range(CONFIG_RETRIES):
            a = bytes(self.config_read(offset + i, 1) for i in range(length))
            b = bytes(self.config_read(offset + i, 1) for i in range(length))
            if a == b:
                return a
        raise DriverError(f"{self.dev!r}: device configuration never settled")

    def read_config_struct(self, fmt: str, offset: int = 0) -> tuple:
        return struct.unpack_from(fmt, self.read_config(offset, struct.calcsize(fmt)))
