"""The modern interface's structures (virtio 1.2 §4.1.4): the common
configuration, the ISR status, the device configuration and the notify
area, as register sets a :class:`~emu.virtio.pci.VirtioPCIFunction` maps
into its modern BAR.  Each is accessed with the function's lock held (the
bus dispatch takes it) and raises :class:`GuestAccessError` for what the
transport refuses (counted by the function under the error's kind)."""
from __future__ import annotations

from emu.pci.errors import GuestAccessError
from emu.spec import virtio_ring, virtio_ring_packed
from emu.spec.virtio import F_RING_PACKED, NO_VECTOR, STATUS_FEATURES_OK
from emu.spec.virtio_pci import (COMMON_CFGGENERATION, COMMON_DF, COMMON_DFSELECT,
                                 COMMON_FIELD_SIZES, COMMON_GF, COMMON_GFSELECT, COMMON_MSIX,
                                 COMMON_NUMQ, COMMON_Q_AVAIL, COMMON_Q_DESC, COMMON_Q_ENABLE,
                                 COMMON_Q_MSIX, COMMON_Q_NDATA, COMMON_Q_NOFF, COMMON_Q_RESET,
                                 COMMON_Q_SELECT, COMMON_Q_SIZE, COMMON_Q_USED, COMMON_STATUS)
from emu.virtio.device import QueueConfig

_QUEUE_ADDR = {COMMON_Q_DESC: ("desc", virtio_ring.DESC_ALIGN),       # field, required
               COMMON_Q_AVAIL: ("driver", virtio_ring.AVAIL_ALIGN),   # alignment (§2.7)
               COMMON_Q_USED: ("device", virtio_ring.USED_ALIGN)}
# a packed ring's parts (§2.8.10.1): descriptor ring 16, both event areas 4
_PACKED_ALIGN = {"desc": virtio_ring_packed.DESC_ALIGN, "driver": virtio_ring_packed.EVENT_ALIGN,
                 "device": virtio_ring_packed.EVENT_ALIGN}


class CommonCfg:
    """struct virtio_pci_common_cfg; accessed with the transport lock held."""

    def __init__(self, t):
        self.t = t

    @staticmethod
    def _register(offset: int, size: int) -> int:
        """The register an access hits; fields are accessed whole with their
        natural width, 64-bit fields also as two aligned 32-bit halves."""
        base = offset & ~7 if offset >= COMMON_Q_DESC and offset < COMMON_Q_NDATA else offset
        width = COMMON_FIELD_SIZES.get(base)
        if width == 8 and size == 4 and offset % 4 == 0:
            return base
        if width is None or offset != base or size != width:
            raise GuestAccessError("common-bad-access",
                                   f"common cfg access of size {size} at 0x{offset:x}")
        return base

    def _queue(self) -> QueueConfig | None:
        sel = self.t.queue_select
        return self.t.queues[sel] if sel < len(self.t.queues) else None

    def read(self, offset: int, size: int) -> int:
        t = self.t
        reg = self._register(offset, size)
        if reg == COMMON_DFSELECT:
            return t.device_feature_select
        if reg == COMMON_DF:
            sel = t.device_feature_select
            return (t.modern_features() >> (32 * sel)) & 0xFFFFFFFF if sel < 2 else 0
        if reg == COMMON_GFSELECT:
            return t.driver_feature_select
        if reg == COMMON_GF:
            sel = t.driver_feature_select
            return (t.driver_features >> (32 * sel)) & 0xFFFFFFFF if sel < 2 else 0
        if reg == COMMON_MSIX:
            return t.msix_config
        if reg == COMMON_NUMQ:
            return len(t.queues)
        if reg == COMMON_STATUS:
            return t.status
        if reg == COMMON_CFGGENERATION:
            return t.config_generation
        if reg == COMMON_Q_SELECT:
            return t.queue_select
        q = self._queue()
        if q is None:
            # no such queue: size 0 says so; its vector reads NO_VECTOR and its
            # notify offset the index, as QEMU's unused queues read
            return NO_VECTOR if reg == COMMON_Q_MSIX else \
                t.queue_select if reg == COMMON_Q_NOFF else 0
        if reg in (COMMON_Q_NDATA, COMMON_Q_RESET):
            return 0
        if reg == COMMON_Q_SIZE:
            return q.size
        if reg == COMMON_Q_MSIX:
            return q.msix_vector
        if reg == COMMON_Q_ENABLE:
            return int(q.enable)
        if reg == COMMON_Q_NOFF:
            return q.notify_off
        value = getattr(q, _QUEUE_ADDR[reg][0])
        return value if size == 8 else (value >> (8 * (offset - reg))) & 0xFFFFFFFF

    def write(self, offset: int, size: int, value: int) -> None:
        t = self.t
        reg = self._register(offset, size)
        if reg == COMMON_DFSELECT:
            t.device_feature_select = value
        elif reg == COMMON_GFSELECT:
            t.driver_feature_select = value
        elif reg == COMMON_GF:
            self._write_driver_feature(value)
        elif reg == COMMON_MSIX:
            t.msix_config = self._vector(value)
        elif reg == COMMON_STATUS:
            t.write_status(value)
        elif reg == COMMON_Q_SELECT:
            t.queue_select = value
        elif reg in (COMMON_DF, COMMON_NUMQ, COMMON_CFGGENERATION, COMMON_Q_NOFF,
                     COMMON_Q_NDATA):
            raise GuestAccessError("common-readonly",
                                   f"write 0x{value:x} to read-only common cfg 0x{reg:02x}")
        elif reg == COMMON_Q_RESET:
            raise GuestAccessError("queue-reset", "queue_reset without VIRTIO_F_RING_RESET")
        else:
            self._write_queue(reg, offset, size, value)

    def _write_driver_feature(self, value: int) -> None:
        t = self.t
        sel = t.driver_feature_select
        if t.status & STATUS_FEATURES_OK:
            raise GuestAccessError("features-after-ok", "driver_feature written after FEATURES_OK")
        if sel >= 2:
            if value:
                raise GuestAccessError("features-unoffered",
                                       f"driver features 0x{value:x} in select window {sel}")
            return
        shift = 32 * sel
        t.driver_features = (t.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)

    def _vector(self, value: int) -> int:
        return self.t.checked_vector(value)

    def _write_queue(self, reg: int, offset: int, size: int, value: int) -> None:
        t = self.t
        q = self._queue()
        if q is None:
            raise GuestAccessError("queue-select", f"queue register 0x{reg:02x} written with "
                                   f"queue_select {t.queue_select} >= {len(t.queues)}")
        if reg == COMMON_Q_ENABLE:
            self._enable(q, value)
            return
        if q.enable:
            raise GuestAccessError("queue-frozen", f"queue {q.index} register 0x{reg:02x} "
                                   f"written while enabled")
        if reg == COMMON_Q_SIZE:
            # (§2.8: a packed ring's size need not be a power of two)
            packed = t.guest_features & F_RING_PACKED
            if not 1 <= value <= q.max_size or (value & (value - 1) and not packed):
                raise GuestAccessError("queue-size", f"queue {q.index} size {value} is not a "
                                       f"{'' if packed else 'power of two '}<= {q.max_size}")
            q.size = value
        elif reg == COMMON_Q_MSIX:
            q.msix_vector = self._vector(value)
        else:
            name = _QUEUE_ADDR[reg][0]
            if size == 8:
                new = value
            else:
                shift = 8 * (offset - reg)
                new = (getattr(q, name) & ~(0xFFFFFFFF << shift)) | (value << shift)
            setattr(q, name, new)

    def _enable(self, q: QueueConfig, value: int) -> None:
        t = self.t
        if value != 1:
            raise GuestAccessError("queue-enable", f"queue_enable {value} (only 1 is writable)")
        if q.enable:
            return
        if not t.status & STATUS_FEATURES_OK:
            raise GuestAccessError("queue-enable", f"queue {q.index} enabled before FEATURES_OK")
        packed = t.guest_features & F_RING_PACKED
        for reg, (name, align) in _QUEUE_ADDR.items():
            align = _PACKED_ALIGN[name] if packed else align
            if getattr(q, name) % align:
                raise GuestAccessError("queue-enable", f"queue {q.index} {name} address "
                                       f"0x{getattr(q, name):x} not {align}-byte aligned")
        t.enable_queue(q)


class Isr:
    """ISR status: reading returns the bits and clears them, deasserting INTx."""

    def __init__(self, t):
        self.t = t

    def read(self, offset: int, size: int) -> int:
        if offset != 0:
            raise GuestAccessError("isr-bad-access", f"ISR read at 0x{offset:x}")
        return self.t.read_isr()

    def write(self, offset: int, size: int, value: int) -> None:
        raise GuestAccessError("isr-write", "ISR is read-only")


class DeviceCfg:
    """The device-specific configuration, forwarded to the device model."""

    def __init__(self, t):
        self.t = t

    def _check(self, offset: int, size: int) -> None:
        if size not in (1, 2, 4) or offset % size or offset + size > self.t.device.config_size:
            raise GuestAccessError("device-cfg-bad-access",
                                   f"device config access of size {size} at 0x{offset:x}")

    def read(self, offset: int, size: int) -> int:
        self._check(offset, size)
        return self.t.device.config_read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self._check(offset, size)
        self.t.device.config_write(offset, size, value)


class Notify:
    """Queue notifications: queue i at i * notify_off_multiplier."""

    def __init__(self, t):
        self.t = t

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        t = self.t
        mult = t.layout.notify_off_multiplier
        if size not in (2, 4) or offset % 2:
            raise GuestAccessError("notify-bad-access", f"notify write of size {size} "
                                   f"at 0x{offset:x}")
        index = offset // mult if mult else value & 0xFFFF
        if (mult and offset % mult) or index >= len(t.queues) or not t.queues[index].enable:
            raise GuestAccessError("notify-queue", f"notify at 0x{offset:x} for a queue that "
                                   f"does not exist or is not enabled")
        t.kick(index)
