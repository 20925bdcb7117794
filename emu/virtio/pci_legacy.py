"""The legacy virtio-pci interface (virtio 1.2 §4.1.4.8, "Legacy
Interfaces: A Note on PCI Device Layout"; QEMU's ``virtio_ioport_read`` /
``virtio_ioport_write``): an I/O BAR of little-endian registers
followed by the device configuration, which moves from 0x14 to 0x18 while
MSI-X is enabled (the two vector registers take 0x14 and 0x16).

A register is hit by its offset whatever the access width, as in QEMU
(``inw`` of the status register reads the status, not status and ISR);
offsets between registers read all ones and writes to them are dropped
(counted under ``legacy-bad-access``).  What the legacy interface does
differently from the modern one, all shared state being the function's
(:class:`~emu.virtio.pci.VirtioPCIFunction`):

* features are 32 bits and take effect when written (there is no
  FEATURES_OK); a write with QEMU's BAD_FEATURE bit gets the device's
  minimal set instead (``bad_features``); not after DRIVER_OK
  [features-after-ok];
* a queue has its maximum size; writing its page frame number places the
  three parts as the legacy layout does (§2.7.2: avail right after the
  descriptors, used on the next 4 KiB boundary) and enables it; a PFN of
  0 resets the device (QEMU's behaviour; Linux resets first anyway);
  rewriting the PFN of an enabled queue is dropped [queue-frozen];
* a queue_select beyond the queues reads back, queue registers then read 0;
* DRIVER_OK needs ACKNOWLEDGE and DRIVER only; FEATURES_OK is not a legacy
  bit [status-reserved]; the status ACKNOWLEDGE | DRIVER also turns on bus
  mastering (QEMU: "Linux before 2.6.34 drives the device without enabling
  the PCI device bus master bit");
* the notify register takes the queue index as its value.
"""
from __future__ import annotations

from emu.pci.errors import GuestAccessError
from emu.spec import pci as regs, virtio_pci as VP
from emu.spec.virtio import (F_BAD_FEATURE, NO_VECTOR, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
                             STATUS_DRIVER_OK)
from emu.spec.virtio_ring import LEGACY_ALIGN, ring_layout

_ALL_ONES = 0xFFFFFFFF


def region_size(config_size: int, msix: bool) -> int:
    """The I/O BAR's size: registers (with the vector pair when the
    function has MSI-X) and the device configuration, to a power of two
    (QEMU: ``pow2ceil(VIRTIO_PCI_REGION_SIZE + config_len)``)."""
    need = (VP.CONFIG_OFF_MSIX if msix else VP.CONFIG_OFF) + config_size
    size = 4                                # the smallest I/O BAR
    while size < need:
        size *= 2
    return size


class LegacyIO:
    """The legacy register set of function ``t`` (lock held by the bus)."""

    def __init__(self, t):
        self.t = t

    @property
    def config_offset(self) -> int:
        return VP.CONFIG_OFF_MSIX if self.t.msix.enabled else VP.CONFIG_OFF

    def _queue(self):
        sel = self.t.queue_select
        return self.t.queues[sel] if sel < len(self.t.queues) else None

    # -- reads ---------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        cfg = self.config_offset
        if offset >= cfg:
            return self.t.device_cfg.read(offset - cfg, size)
        value = self._register(offset, cfg)
        return value & ((1 << (8 * size)) - 1)

    def _register(self, offset: int, cfg: int) -> int:
        t = self.t
        q = self._queue()
        if offset == VP.HOST_FEATURES:
            return t.legacy_features() & _ALL_ONES
        if offset == VP.GUEST_FEATURES:
            return t.guest_features & _ALL_ONES
        if offset == VP.QUEUE_PFN:
            return q.desc >> VP.QUEUE_ADDR_SHIFT if q is not None else 0
        if offset == VP.QUEUE_NUM:
            return q.size if q is not None else 0
        if offset == VP.QUEUE_SEL:
            return t.queue_select
        if offset == VP.STATUS:
            return t.status
        if offset == VP.ISR:
            return t.read_isr()
        if cfg == VP.CONFIG_OFF_MSIX and offset == VP.MSI_CONFIG_VECTOR:
            return t.msix_config
        if cfg == VP.CONFIG_OFF_MSIX and offset == VP.MSI_QUEUE_VECTOR:
            return q.msix_vector if q is not None else NO_VECTOR
        if offset != VP.QUEUE_NOTIFY:           # notify reads all ones, as in QEMU
            t.errors.record("legacy-bad-access", f"legacy read at 0x{offset:02x}")
        return _ALL_ONES

    # -- writes --------------------------------------------------------------------------
    def write(self, offset: int, size: int, value: int) -> None:
        t = self.t
        cfg = self.config_offset
        if offset >= cfg:
            t.device_cfg.write(offset - cfg, size, value)
        elif offset == VP.GUEST_FEATURES:
            self._write_features(value)
        elif offset == VP.QUEUE_PFN:
            self._write_pfn(value)
        elif offset == VP.QUEUE_SEL:
            t.queue_select = value & 0xFFFF
        elif offset == VP.QUEUE_NOTIFY:
            index = value & 0xFFFF
            if index >= len(t.queues) or not t.queues[index].enable:
                raise GuestAccessError("notify-queue", f"legacy notify of queue {index} that "
                                       "does not exist or is not enabled")
            t.kick(index)
        elif offset == VP.STATUS:
            self._write_status(value & 0xFF)
        elif cfg == VP.CONFIG_OFF_MSIX and offset == VP.MSI_CONFIG_VECTOR:
            t.msix_config = t.checked_vector(value & 0xFFFF)
        elif cfg == VP.CONFIG_OFF_MSIX and offset == VP.MSI_QUEUE_VECTOR:
            q = self._queue()
            if q is None:
                raise GuestAccessError("queue-select", f"queue vector written with queue_select "
                                       f"{t.queue_select} >= {len(t.queues)}")
            q.msix_vector = t.checked_vector(value & 0xFFFF)
        elif offset in (VP.HOST_FEATURES, VP.QUEUE_NUM, VP.ISR):
            raise GuestAccessError("legacy-readonly", f"write 0x{value:x} to read-only legacy "
                                   f"register 0x{offset:02x}")
        else:
            raise GuestAccessError("legacy-bad-access", f"legacy write at 0x{offset:02x}")

    def _write_features(self, value: int) -> None:
        t = self.t
        if t.status & STATUS_DRIVER_OK:
            raise GuestAccessError("features-after-ok", "legacy guest features written after "
                                   "DRIVER_OK")
        if value & F_BAD_FEATURE:
            # (QEMU: "Guest does not negotiate properly?  We have to assume nothing.")
            value = t.device.bad_features()
        t.accept_legacy_features(value & t.legacy_features() & _ALL_ONES)

    def _write_pfn(self, value: int) -> None:
        t = self.t
        if value == 0:
            t.write_status(0)
            return
        q = self._queue()
        if q is None:
            raise GuestAccessError("queue-select", f"queue PFN written with queue_select "
                                   f"{t.queue_select} >= {len(t.queues)}")
        if q.enable:
            raise GuestAccessError("queue-frozen", f"queue {q.index} PFN written while enabled")
        desc, avail, used, _ = ring_layout(value << VP.QUEUE_ADDR_SHIFT, q.size, LEGACY_ALIGN)
        q.desc, q.driver, q.device = desc, avail, used
        t.enable_queue(q)

    def _write_status(self, value: int) -> None:
        t = self.t
        t.write_status(value, legacy=True)
        if value == STATUS_ACKNOWLEDGE | STATUS_DRIVER and not t.bus_master:
            t.config[regs.COMMAND] |= regs.COMMAND_MASTER
