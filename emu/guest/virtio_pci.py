"""Guest side of the modern virtio-pci transport (virtio 1.x §4.1.3-4.1.5),
as Linux's ``virtio_pci_modern_dev.c`` drives it, through a
:class:`~emu.guest.pci.PCIDevice` only (the legacy interface:
:mod:`emu.guest.virtio_pci_legacy`; :func:`emu.guest.virtio_transport.transport`
picks one).

Typical use by a device-type driver::

    vp = VirtioPCIDriver(pci_dev)
    features = vp.negotiate(wanted)            # reset, ACK, DRIVER, FEATURES_OK
    vectors = pci_dev.enable_msix()            # optional
    vp.set_config_vector(0)
    q = vp.setup_queue(0, desc, avail, used, vector=1)
    vp.driver_ok()
    vp.notify(0)

Anything the device does against the spec (missing capabilities, a
refused vector, FEATURES_OK not kept, a reset that never completes) raises
:class:`~emu.guest.pci.DriverError`; the driver has set FAILED first where
the spec asks for it.
"""
from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass

from emu import eventfd
from emu.guest.pci import DriverError, PCIDevice
from emu.spec import pci as regs
from emu.spec.virtio import (F_VERSION_1, NO_VECTOR, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
                             STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK)
from emu.spec.virtio_pci import (CAP_BAR, CAP_CFG_TYPE, CAP_COMMON_CFG, CAP_DEVICE_CFG,
                                 CAP_ISR_CFG, CAP_LEN, CAP_LENGTH, CAP_NOTIFY_CFG, CAP_OFFSET,
                                 CAP_PCI_CFG, CAP_SIZE, COMMON_CFG_SIZE_1_0,
                                 COMMON_CFGGENERATION, COMMON_DF, COMMON_DFSELECT, COMMON_GF,
                                 COMMON_GFSELECT, COMMON_MSIX, COMMON_NUMQ, COMMON_Q_AVAIL,
                                 COMMON_Q_DESC, COMMON_Q_ENABLE, COMMON_Q_MSIX, COMMON_Q_NOFF,
                                 COMMON_Q_SELECT, COMMON_Q_SIZE, COMMON_Q_USED, COMMON_STATUS,
                                 NOTIFY_CAP_MULT, NOTIFY_CAP_SIZE, PCI_DEVICE_ID_LAST,
                                 PCI_DEVICE_ID_MODERN_BASE, PCI_DEVICE_ID_TRANSITIONAL_BASE,
                                 PCI_VENDOR_ID)

log = logging.getLogger(__name__)

RESET_POLLS = 5000          # ~5 s: a vhost-user back-end may have to stop its rings
CONFIG_RETRIES = 100


@dataclass(frozen=True)
class VirtioCap:
    cfg_type: int
    bar: int
    offset: int
    length: int
    cap_offset: int          # where in config space
    multiplier: int = 0      # NOTIFY only


@dataclass(frozen=True)
class QueueInfo:
    index: int
    size: int
    vector: int
    notify_addr: int         # guest-physical address of its notify register


def find_virtio_caps(dev: PCIDevice) -> dict[int, VirtioCap]:
    """The first usable capability of each cfg_type (Linux's rule: the
    BAR must exist and the structure must fit in it)."""
    found: dict[int, VirtioCap] = {}
    for off in dev.find_capabilities(regs.CAP_ID_VNDR):
        cap_len = dev.cfg_read(off + CAP_LEN, 1)
        if cap_len < CAP_SIZE:
            continue
        cfg_type = dev.cfg_read(off + CAP_CFG_TYPE, 1)
        bar = dev.cfg_read(off + CAP_BAR, 1)
        offset = dev.cfg_read(off + CAP_OFFSET, 4)
        length = dev.cfg_read(off + CAP_LENGTH, 4)
        if cfg_type in found or cfg_type == CAP_PCI_CFG:
            continue
        info = dev.bars.get(bar)
        if info is None or offset + length > info.size:
            continue
        mult = (dev.cfg_read(off + NOTIFY_CAP_MULT, 4)
                if cfg_type == CAP_NOTIFY_CFG and cap_len >= NOTIFY_CAP_SIZE else 0)
        found[cfg_type] = VirtioCap(cfg_type, bar, offset, length, off, mult)
    return found


class DeviceLifecycle:
    """Reset and restart, shared by the device drivers built on a
    :class:`VirtioPCIDriver` (``self.vp``) with a ``start`` of their own."""

    def reinit(self) -> None:
        """Reset and bring the device up again (after NEEDS_RESET)."""
        self.resets += 1
        self.vp.reset()
        self.start()

    def halt(self) -> None:
        """The machine is about to reset every device and this driver will
        be forgotten (its app has stopped): say what the device must keep."""

    def stop(self) -> None:
        """Reset the device: its back-end stops using our rings."""
        try:
            self.vp.reset()
        except DriverError as e:
            log.warning("%s: %s", self.name, e)


def is_virtio(dev: PCIDevice) -> bool:
    """(§4.1.2: "Any PCI device with PCI Vendor ID 0x1AF4, and PCI Device ID
    0x1000 through 0x107F inclusive is a virtio device")"""
    return dev.vendor_id == PCI_VENDOR_ID and \
        PCI_DEVICE_ID_TRANSITIONAL_BASE < dev.device_id <= PCI_DEVICE_ID_LAST


def virtio_device_id(dev: PCIDevice) -> int:
    """The virtio device type of a virtio function: from a modern id, or
    (transitional and legacy ids) its subsystem id (§4.1.2.1)."""
    if dev.device_id >= PCI_DEVICE_ID_MODERN_BASE:
        return dev.device_id - PCI_DEVICE_ID_MODERN_BASE
    return dev.subsystem_id


class VirtioPCIDriver:
    """A modern virtio-pci transport driver for one function (modern-only
    or transitional: Linux's virtio_pci_modern_probe takes both when the
    capabilities are there)."""

    legacy = False

    def __init__(self, dev: PCIDevice):
        if not is_virtio(dev):
            raise DriverError(f"{dev!r} is not a virtio-pci device")
        if not dev.bars:
            dev.size_bars()
        self.dev = dev
        self.caps = find_virtio_caps(dev)
        for need in (CAP_COMMON_CFG, CAP_NOTIFY_CFG, CAP_ISR_CFG):
            if need not in self.caps:
                raise DriverError(f"{dev!r}: virtio capability type {need} missing or unusable"
                                  " (no modern interface)")
        self.common = self.caps[CAP_COMMON_CFG]
        self.notify_cap = self.caps[CAP_NOTIFY_CFG]
        self.isr_cap = self.caps[CAP_ISR_CFG]
        self.device_cap = self.caps.get(CAP_DEVICE_CFG)
        if self.common.length < COMMON_CFG_SIZE_1_0:
            raise DriverError(f"{dev!r}: common configuration is only {self.common.length} bytes")
        self.device_id = virtio_device_id(dev)
        self.features = 0
        self.queues: dict[int, QueueInfo] = {}

    # -- registers ----------------------------------------------------------------------
    def _cread(self, off: int, size: int) -> int:
        return self.dev.bar_read(self.common.bar, self.common.offset + off, size)

    def _cwrite(self, off: int, size: int, value: int) -> None:
        self.dev.bar_write(self.common.bar, self.common.offset + off, size, value)

    def _cwrite64(self, off: int, value: int) -> None:
        self._cwrite(off, 4, value & 0xFFFFFFFF)           # two halves, as Linux does
        self._cwrite(off + 4, 4, value >> 32)

    @property
    def status(self) -> int:
        return self._cread(COMMON_STATUS, 1)

    def add_status(self, bits: int) -> None:
        self._cwrite(COMMON_STATUS, 1, self.status | bits)

    @property
    def num_queues(self) -> int:
        return self._cread(COMMON_NUMQ, 2)

    @property
    def config_generation(self) -> int:
        return self._cread(COMMON_CFGGENERATION, 1)

    # -- initialisation (§3.1.1) -----------------------------------------------------------
    def reset(self) -> None:
        """Write 0 and wait until the device reads back 0."""
        self._cwrite(COMMON_STATUS, 1, 0)
        for i in range(RESET_POLLS):
            if self.status == 0:
                self.queues.clear()
                self.features = 0
                return
            if i >= 8:          # like Linux's msleep(1) between polls
                time.sleep(0.001)
        raise DriverError(f"{self.dev!r}: reset did not complete")

    def device_features(self) -> int:
        features = 0
        for sel in (0, 1):
            self._cwrite(COMMON_DFSELECT, 4, sel)
            features |= self._cread(COMMON_DF, 4) << (32 * sel)
        return features

    def negotiate(self, wanted: int) -> int:
        """Reset, ACKNOWLEDGE, DRIVER, accept ``wanted`` & offered (with
        VERSION_1), FEATURES_OK and check the device kept it."""
        self.reset()
        self.add_status(STATUS_ACKNOWLEDGE)
        self.add_status(STATUS_DRIVER)
        offered = self.device_features()
        if not offered & F_VERSION_1:
            self.add_status(STATUS_FAILED)
            raise DriverError(f"{self.dev!r} does not offer VERSION_1")
        accepted = (wanted | F_VERSION_1) & offered
        for sel in (0, 1):
            self._cwrite(COMMON_GFSELECT, 4, sel)
            self._cwrite(COMMON_GF, 4, (accepted >> (32 * sel)) & 0xFFFFFFFF)
        self.add_status(STATUS_FEATURES_OK)
        if not self.status & STATUS_FEATURES_OK:
            self.add_status(STATUS_FAILED)
            raise DriverError(f"{self.dev!r} refused features 0x{accepted:x}")
        self.features = accepted
        return accepted

    def set_config_vector(self, vector: int) -> None:
        self._cwrite(COMMON_MSIX, 2, vector)
        if self._cread(COMMON_MSIX, 2) != vector:
            raise DriverError(f"{self.dev!r} refused config vector {vector}")

    def queue_size(self, index: int, wanted: int | None = None) -> int:
        """The size queue ``index`` will have: ``wanted`` if the device
        allows it, else its maximum."""
        self._cwrite(COMMON_Q_SELECT, 2, index)
        max_size = self._cread(COMMON_Q_SIZE, 2)
        if max_size == 0 or max_size == 0xFFFF:
            raise DriverError(f"{self.dev!r}: queue {index} does not exist")
        return max_size if wanted is None or wanted > max_size else wanted

    def setup_queue(self, index: int, desc: int, avail: int, used: int,
                    size: int | None = None, vector: int = NO_VECTOR) -> QueueInfo:
        """Program and enable queue ``index`` (§4.1.5.1.3)."""
        self._cwrite(COMMON_Q_SELECT, 2, index)
        max_size = self._cread(COMMON_Q_SIZE, 2)
        if max_size == 0 or max_size == 0xFFFF:
            raise DriverError(f"{self.dev!r}: queue {index} does not exist")
        if self._cread(COMMON_Q_ENABLE, 2):
            raise DriverError(f"{self.dev!r}: queue {index} is already enabled")
        size = max_size if size is None else size
        if not 1 <= size <= max_size or size & (size - 1):
            raise DriverError(f"queue size {size} is not a power of two <= {max_size}")
        self._cwrite(COMMON_Q_SIZE, 2, size)
        self._cwrite(COMMON_Q_MSIX, 2, vector)
        if self._cread(COMMON_Q_MSIX, 2) != vector:
            raise DriverError(f"{self.dev!r} refused vector {vector} for queue {index}")
        self._cwrite64(COMMON_Q_DESC, desc)
        self._cwrite64(COMMON_Q_AVAIL, avail)
        self._cwrite64(COMMON_Q_USED, used)
        noff = self._cread(COMMON_Q_NOFF, 2)
        off = noff * self.notify_cap.multiplier
        if off + 2 > self.notify_cap.length:
            raise DriverError(f"{self.dev!r}: queue {index} notify offset 0x{off:x} outside "
                              f"the notify area")
        self._cwrite(COMMON_Q_ENABLE, 2, 1)
        if self._cread(COMMON_Q_ENABLE, 2) != 1:
            raise DriverError(f"{self.dev!r}: queue {index} did not enable")
        addr = self.dev.bar_address(self.notify_cap.bar) + self.notify_cap.offset + off
        info = QueueInfo(index, size, vector, addr)
        self.queues[index] = info
        return info

    def driver_ok(self) -> None:
        self.add_status(STATUS_DRIVER_OK)
        if not self.status & STATUS_DRIVER_OK:
            raise DriverError(f"{self.dev!r} did not accept DRIVER_OK")

    def fail(self) -> None:
        self.add_status(STATUS_FAILED)

    # -- run time ----------------------------------------------------------------------------
    def notify_eventfd(self, index: int) -> int | None:
        """The eventfd behind queue ``index``'s notify register, if the
        device bound one (a C data path signals it directly)."""
        return self.dev.bus.ioeventfd_for(self.queues[index].notify_addr, 2, index)

    def notify(self, index: int) -> None:
        """Kick queue ``index``: its eventfd if there is one, else MMIO."""
        q = self.queues[index]
        fd = self.dev.bus.ioeventfd_for(q.notify_addr, 2, index)
        if fd is not None:
            eventfd.signal(fd)      # shared with a vhost-user back-end: never blocks
        else:
            self.dev.bus.mmio_write(q.notify_addr, 2, index)

    def read_isr(self) -> int:
        """Read (and so clear) the ISR; deasserts INTx."""
        return self.dev.bar_read(self.isr_cap.bar, self.isr_cap.offset, 1)

    def config_read(self, offset: int, size: int) -> int:
        cap = self._device_cap(offset, size)
        return self.dev.bar_read(cap.bar, cap.offset + offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        cap = self._device_cap(offset, size)
        self.dev.bar_write(cap.bar, cap.offset + offset, size, value)

    def _device_cap(self, offset: int, size: int) -> VirtioCap:
        cap = self.device_cap
        if cap is None or offset < 0 or offset + size > cap.length:
            raise DriverError(f"device config 0x{offset:x}+{size} is outside the device's")
        return cap

    def read_config(self, offset: int, length: int) -> bytes:
        """``length`` bytes of device configuration, consistent: re-read
        while config_generation changes (§4.1.4.3.1)."""
        for _ in range(CONFIG_RETRIES):
            before = self.config_generation
            out = bytearray()
            pos = offset
            while pos < offset + length:
                width = 4 if pos % 4 == 0 and offset + length - pos >= 4 else \
                    2 if pos % 2 == 0 and offset + length - pos >= 2 else 1
                out += self.config_read(pos, width).to_bytes(width, "little")
                pos += width
            if self.config_generation == before:
                return bytes(out)
        raise DriverError(f"{self.dev!r}: config_generation never settled")

    def read_config_struct(self, fmt: str, offset: int = 0) -> tuple:
        """Unpack a ``struct`` format from a consistent config snapshot."""
        return struct.unpack_from(fmt, self.read_config(offset, struct.calcsize(fmt)))

