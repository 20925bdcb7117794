"""The virtio-pci modern transport (virtio 1.x §4.1; QEMU's
``hw/virtio/virtio-pci.c``): a :class:`~emu.pci.function.PCIFunction` that
presents a :class:`~emu.virtio.device.VirtioDevice` to a driver.

Layout (:class:`VirtioPCILayout`; defaults as in ``docs/vhost-pci-device.md``):
BAR0 (register-backed) holds the common configuration at 0x0, the ISR at
0x1000, the device configuration at 0x2000 and the notify area at 0x3000
(``notify_off_multiplier`` 4, queue *i* notifies at 0x3000 + 4·i); BAR1
holds the MSI-X table (0x0) and PBA (0x800).  Each structure is announced
by a vendor capability, plus a PCI_CFG capability (access to BAR0 through
config space).  A subclass may add its own registers to BAR0 with
``self.bar0.add(offset, length, ops, name)`` in space the layout leaves free
(shorten ``notify_length`` to make room inside the notify page) and its
own BARs with :meth:`add_bar`.

How the transport answers a driver that breaks the rules (each case is
counted in ``self.errors`` under the kind in brackets; none raises):

* access of the wrong size or alignment, or to no register: reads all ones,
  writes dropped [common-bad-access, unassigned]; write to a read-only
  register dropped [common-readonly];
* device_status: writing 0 resets; it reads back 0 once the device model's
  reset has completed (a device whose reset needs its back-end, e.g. a
  vhost-user ring stop, returns a completion from ``reset()`` and the
  status reads 0x40 | old bits until then, as the spec allows).  Otherwise bits
  are only ever *added*: a write that would clear bits keeps them
  [status-clear]; reserved bits and a NEEDS_RESET the device did not set
  are dropped [status-reserved]; a bit whose predecessor is missing
  (DRIVER without ACKNOWLEDGE, FEATURES_OK without DRIVER, DRIVER_OK
  without FEATURES_OK) is not kept [status-order]; FEATURES_OK is not
  kept when the driver's features contain a bit the device did not offer
  [features-unoffered], lack VERSION_1 [features-no-version-1], or the
  device model refuses them (counted in ``features_refused``); FAILED is
  always accepted.
* driver_feature written after FEATURES_OK: dropped [features-after-ok];
* a vector (msix_config, queue_msix_vector) beyond the MSI-X table: the
  register reads back 0xffff (NO_VECTOR) [vector-refused];
* queue registers with queue_select beyond num_queues: reads return 0
  (queue_size 0 means "no such queue"), writes dropped [queue-select];
  writes to size/vector/addresses of an enabled queue dropped [queue-frozen];
  a queue_size that is not a power of two in 1..max dropped [queue-size];
  queue_enable other than 1, before FEATURES_OK, or with misaligned ring
  addresses dropped [queue-enable]; queue_reset (not offered) [queue-reset];
* a notify for a queue that does not exist or is not enabled dropped
  [notify-queue]; notify writes of a size other than 2 or 4 [notify-bad-access].
  The notify *address* selects the queue (as QEMU); the value is not used
  (VIRTIO_F_NOTIFICATION_DATA is not offered).

Interrupts: with MSI-X enabled, a queue or config event raises the vector
the driver programmed (none for NO_VECTOR); otherwise the ISR bit is set
and INTx asserted until the driver reads the ISR.  Used-buffer and config
interrupts are only sent after DRIVER_OK (§2.1, like QEMU); the
config_generation is bumped on every config change regardless.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace

from emu.errors import EmuBug
from emu.pci.errors import GuestAccessError
from emu.pci.function import IoEventFd, PCIFunction
from emu.pci.msix import MSIX
from emu.pci.regions import RegisterMap
from emu.spec import pci as regs, virtio_pci, virtio_ring, virtio_ring_packed
from emu.spec.virtio import (F_RING_PACKED, F_VERSION_1, ISR_CONFIG, ISR_QUEUE, NO_VECTOR, STATUS_ACKNOWLEDGE,
                             STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
                             STATUS_NEEDS_RESET)
from emu.spec.virtio_pci import (CAP_BAR, CAP_COMMON_CFG, CAP_DEVICE_CFG, CAP_ISR_CFG,
                                 CAP_LENGTH, CAP_NOTIFY_CFG, CAP_OFFSET, CAP_PCI_CFG, CAP_SIZE,
                                 COMMON_CFG_SIZE, COMMON_CFGGENERATION, COMMON_DF,
                                 COMMON_DFSELECT, COMMON_FIELD_SIZES, COMMON_GF, COMMON_GFSELECT,
                                 COMMON_MSIX, COMMON_NUMQ, COMMON_Q_AVAIL, COMMON_Q_DESC,
                                 COMMON_Q_ENABLE, COMMON_Q_MSIX, COMMON_Q_NDATA, COMMON_Q_NOFF,
                                 COMMON_Q_RESET, COMMON_Q_SELECT, COMMON_Q_SIZE, COMMON_Q_USED,
                                 COMMON_STATUS, PCI_CFG_DATA, PCI_SUBSYSTEM_ID_MIN, PCI_VENDOR_ID)
from emu.virtio.device import QueueConfig, VirtioDevice

# struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar, id, pad[2], offset, length
_CAP_FMT = "<BBBB2xII"

_QUEUE_ADDR = {COMMON_Q_DESC: ("desc", virtio_ring.DESC_ALIGN),       # field, required
               COMMON_Q_AVAIL: ("driver", virtio_ring.AVAIL_ALIGN),   # alignment (§2.7)
               COMMON_Q_USED: ("device", virtio_ring.USED_ALIGN)}
# a packed ring's parts (§2.8.10.1): descriptor ring 16, both event areas 4
_PACKED_ALIGN = {"desc": virtio_ring_packed.DESC_ALIGN, "driver": virtio_ring_packed.EVENT_ALIGN,
                 "device": virtio_ring_packed.EVENT_ALIGN}


@dataclass(frozen=True)
class VirtioPCILayout:
    """Where the transport's structures live.  Offsets are within BAR ``bar``."""

    bar: int = 0
    bar_size: int = 0x4000
    bar_kind: str = "mem32"
    bar_prefetchable: bool = False
    common_offset: int = 0x0000
    common_length: int = 0x40
    isr_offset: int = 0x1000
    isr_length: int = 0x4
    device_offset: int = 0x2000
    device_length: int = 0x1000          # room; the capability announces config_size
    notify_offset: int = 0x3000
    notify_length: int = 0x1000
    notify_off_multiplier: int = 4
    msix_bar: int = 1
    msix_bar_size: int = 0x1000
    msix_table_offset: int = 0x0
    msix_pba_offset: int = 0x800
    msix_vectors: int | None = None      # default: one per queue + config; 0: no MSI-X
    pci_cfg_cap: bool = True


class _NoMSIX:
    """Stands in for the MSI-X capability of a function built with vectors=0."""

    enabled = False
    nvectors = 0

    def notify(self, vector: int) -> bool:
        return False

    def clear_pending(self, vector: int) -> None:
        pass


class VirtioPCIFunction(PCIFunction):
    """A virtio device behind the modern virtio-pci transport."""

    def __init__(self, device: VirtioDevice, *, layout: VirtioPCILayout = VirtioPCILayout(),
                 pci_device_id: int | None = None, class_code: int | None = None,
                 subsystem_id: int = PCI_SUBSYSTEM_ID_MIN, name: str = ""):
        super().__init__(
            PCI_VENDOR_ID,
            pci_device_id if pci_device_id is not None
            else virtio_pci.pci_device_id(device.device_id),
            class_code if class_code is not None else device.pci_class,
            revision=1, subsystem_vendor_id=PCI_VENDOR_ID,
            subsystem_id=subsystem_id, interrupt_pin=1,
            name=name or f"virtio-{device.device_id}")
        self.device = device
        self.layout = lay = layout
        n = device.num_queues
        if not 1 <= n <= 0xFFFF:
            raise EmuBug(f"num_queues {n} out of range")
        if device.config_size > lay.device_length:
            raise EmuBug("device configuration larger than its BAR window")
        if n * lay.notify_off_multiplier + 2 > lay.notify_length:
            raise EmuBug("notify area too small for the queues")
        self.queues = [QueueConfig(i, device.queue_max_size(i), notify_off=i) for i in range(n)]
        for q in self.queues:
            if not virtio_ring.num_valid(q.max_size):
                raise EmuBug(f"queue {q.index} max size {q.max_size} is not a power of two")
        self._status = 0
        self._reset_pending = None        # callable: True once the device's reset is done
        self._status_at_reset = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0          # as written, committed at FEATURES_OK
        self._guest_features = 0
        self.msix_config = NO_VECTOR
        self.queue_select = 0
        self.isr = 0
        self.config_generation = 0
        self.features_refused = 0
        self.suppressed_notifications = 0
        self.kicks = [0] * n
        self._kick_fds: dict[int, tuple[int, IoEventFd]] = {}

        self.bar0 = RegisterMap(lay.bar_size, f"{self.name}-bar{lay.bar}")
        self.bar0.add(lay.common_offset, lay.common_length, _CommonCfg(self), "common")
        self.bar0.add(lay.isr_offset, lay.isr_length, _Isr(self), "isr")
        if device.config_size:
            self.bar0.add(lay.device_offset, lay.device_length, _DeviceCfg(self), "device")
        self.bar0.add(lay.notify_offset, lay.notify_length, _Notify(self), "notify")
        self.add_bar(lay.bar, lay.bar_size, lay.bar_kind, lay.bar_prefetchable, ops=self.bar0)

        if lay.msix_vectors == 0:
            # QEMU's vectors=0: no MSI-X capability, interrupts are INTx + ISR
            self.bar_msix = None
            self.msix = _NoMSIX()
        else:
            self.bar_msix = RegisterMap(lay.msix_bar_size, f"{self.name}-bar{lay.msix_bar}")
            self.add_bar(lay.msix_bar, lay.msix_bar_size, "mem32", ops=self.bar_msix)
            self.msix = MSIX(self, lay.msix_vectors or n + 1, lay.msix_bar,
                             lay.msix_table_offset, lay.msix_bar, lay.msix_pba_offset)
            self.bar_msix.add(lay.msix_table_offset, self.msix.table_size, self.msix.table_ops,
                              "msix-table")
            self.bar_msix.add(lay.msix_pba_offset, self.msix.pba_size, self.msix.pba_ops,
                              "msix-pba")

        self._add_virtio_cap(CAP_COMMON_CFG, lay.common_offset, COMMON_CFG_SIZE)
        self._add_virtio_cap(CAP_ISR_CFG, lay.isr_offset, lay.isr_length)
        if device.config_size:
            self._add_virtio_cap(CAP_DEVICE_CFG, lay.device_offset, device.config_size)
        self._add_virtio_cap(CAP_NOTIFY_CFG, lay.notify_offset, lay.notify_length,
                             extra=struct.pack("<I", lay.notify_off_multiplier))
        self.pci_cfg_offset = None
        if lay.pci_cfg_cap:
            self.pci_cfg_offset = self._add_virtio_cap(
                CAP_PCI_CFG, 0, 0, extra=bytes(4),
                wmask=bytes(2) + b"\xff" + bytes(3) + b"\xff" * 12,
                on_read=self._pci_cfg_read, on_write=self._pci_cfg_write)
        device.attach(self)

    def _add_virtio_cap(self, cfg_type: int, offset: int, length: int, *, extra: bytes = b"",
                        wmask: bytes | None = None, on_read=None, on_write=None) -> int:
        body = struct.pack(_CAP_FMT, CAP_SIZE + len(extra), cfg_type,
                           self.layout.bar if cfg_type != CAP_PCI_CFG else 0, 0,
                           offset, length) + extra
        return self.add_capability(regs.CAP_ID_VNDR, body, wmask,
                                   on_read=on_read, on_write=on_write)

    # -- services for the device (any thread) ----------------------------------------
    @property
    def status(self) -> int:
        if self._reset_pending is not None:
            if not self._reset_pending():
                return self._status_at_reset or STATUS_NEEDS_RESET
            self._reset_pending = None
        return self._status

    @property
    def guest_features(self) -> int:
        return self._guest_features

    def notify_queue(self, index: int) -> None:
        """Used-buffer notification for queue ``index``."""
        with self.lock:
            self.notify_vector(self.queues[index].msix_vector, ISR_QUEUE)

    def notify_config(self) -> None:
        """The device configuration changed: bump config_generation and
        raise the configuration interrupt."""
        with self.lock:
            self.config_generation = (self.config_generation + 1) & 0xFF
            self.notify_vector(self.msix_config, ISR_CONFIG)

    def notify_vector(self, vector: int, isr_bits: int = ISR_QUEUE) -> None:
        """Raise ``vector`` (MSI-X enabled) or set ``isr_bits`` and assert
        INTx.  Suppressed (and counted) before DRIVER_OK.  A device type
        uses it for vectors of its own registers (validate them with
        :meth:`vector_ok` when the driver writes them)."""
        with self.lock:
            if not self._status & STATUS_DRIVER_OK:
                self.suppressed_notifications += 1
                return
            self.isr |= isr_bits
            if self.msix.enabled:
                if vector != NO_VECTOR:
                    self.msix.notify(vector)
            else:
                self.set_irq(True)

    def set_needs_reset(self) -> None:
        """The device hit an error it cannot recover from without a reset."""
        with self.lock:
            if self._status:
                self._status |= STATUS_NEEDS_RESET
                self.notify_config()

    def vector_ok(self, vector: int) -> bool:
        return vector == NO_VECTOR or vector < self.msix.nvectors

    def kick_eventfd(self, index: int) -> int:
        """An eventfd (owned by the transport) that the notify address of
        queue ``index`` signals instead of calling ``queue_notify``."""
        with self.lock:
            if not 0 <= index < len(self.queues):
                raise EmuBug(f"kick_eventfd: no queue {index}")
            if index in self._kick_fds:
                return self._kick_fds[index][0]
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            try:
                # with a zero multiplier all queues share one address: match the index
                data = index if self.layout.notify_off_multiplier == 0 else None
                ev = self.add_ioeventfd(self.layout.bar, self.notify_address(index), fd,
                                        data=data)
            except BaseException:
                os.close(fd)
                raise
            self._kick_fds[index] = (fd, ev)
            return fd

    def release_kick_eventfd(self, index: int) -> None:
        """Send kicks of queue ``index`` to ``queue_notify`` again."""
        with self.lock:
            entry = self._kick_fds.pop(index, None)
            if entry is not None:
                self.remove_ioeventfd(entry[1])
                os.close(entry[0])

    def notify_address(self, index: int) -> int:
        """Offset in the BAR of queue ``index``'s notify register."""
        return self.layout.notify_offset + self.queues[index].notify_off * \
            self.layout.notify_off_multiplier

    def close(self) -> None:
        for index in list(self._kick_fds):
            self.release_kick_eventfd(index)

    # -- reset ---------------------------------------------------------------------
    def reset_device(self) -> None:
        """PCI function reset: the virtio device resets too."""
        self._virtio_reset()

    def _virtio_reset(self) -> None:
        self._status_at_reset = self._status
        done = self.device.reset()
        # a device may finish its reset later (e.g. a vhost-user back-end
        # must stop its rings first): status reads non-zero until then
        self._reset_pending = done if callable(done) else None
        self._status = 0
        self.device_feature_select = self.driver_feature_select = 0
        self.driver_features = self._guest_features = 0
        self.msix_config = NO_VECTOR
        self.queue_select = 0
        for q in self.queues:
            q.reset()
        self.isr = 0
        self.set_irq(False)
        for v in range(self.msix.nvectors):
            self.msix.clear_pending(v)

    # -- device status -----------------------------------------------------------------
    def _write_status(self, value: int) -> None:
        if value == 0:
            self._virtio_reset()
            return
        if self._reset_pending is not None and not self._reset_pending():
            self.errors.record("status-during-reset",
                               f"status 0x{value:02x} written before the reset completed")
            return
        old = self._status
        if old & ~value & ~STATUS_NEEDS_RESET:
            self.errors.record("status-clear",
                               f"status 0x{value:02x} would clear bits of 0x{old:02x}")
        stray = value & ~(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK
                          | STATUS_FEATURES_OK | STATUS_FAILED | (old & STATUS_NEEDS_RESET))
        if stray:
            self.errors.record("status-reserved", f"status bits 0x{stray:02x} are not the driver's")
        new = value & ~old & ~stray
        st = old | (new & (STATUS_FAILED | STATUS_ACKNOWLEDGE))

        def order(bit: int, needs: int, name: str) -> bool:
            if not new & bit:
                return False
            if st & needs != needs:
                self.errors.record("status-order", f"{name} set before its predecessors "
                                   f"(status 0x{st:02x})")
                return False
            return True

        if order(STATUS_DRIVER, STATUS_ACKNOWLEDGE, "DRIVER"):
            st |= STATUS_DRIVER
        if order(STATUS_FEATURES_OK, STATUS_ACKNOWLEDGE | STATUS_DRIVER, "FEATURES_OK") \
                and self._accept_features():
            st |= STATUS_FEATURES_OK
        became_live = order(STATUS_DRIVER_OK, STATUS_FEATURES_OK, "DRIVER_OK")
        if became_live:
            st |= STATUS_DRIVER_OK
        self._status = st
        if became_live:
            self.device.driver_ok()

    def _accept_features(self) -> bool:
        f = self.driver_features
        offered = self.device.device_features()
        if f & ~offered:
            self.errors.record("features-unoffered",
                               f"driver features 0x{f:x} include unoffered 0x{f & ~offered:x}")
            return False
        if not f & F_VERSION_1:
            self.errors.record("features-no-version-1", "modern driver without VERSION_1")
            return False
        if not self.device.features_ok(f):
            self.features_refused += 1
            return False
        self._guest_features = f
        return True

    # -- PCI_CFG capability: BAR access through config space -------------------------------
    def _pci_cfg_target(self) -> tuple[int, int, int] | None:
        c = self.pci_cfg_offset
        bar, off, length = self.config[c + CAP_BAR], self._get(c + CAP_OFFSET, 4), \
            self._get(c + CAP_LENGTH, 4)
        if length not in (1, 2, 4) or off % length or bar not in self.bars:
            self.errors.record("pci-cfg-bad-access", f"PCI_CFG access bar={bar} "
                               f"offset=0x{off:x} length={length}")
            return None
        return bar, off, length

    def _pci_cfg_read(self, offset: int, size: int) -> None:
        if offset + size > PCI_CFG_DATA and offset < PCI_CFG_DATA + 4:
            t = self._pci_cfg_target()
            value = self.bar_read(*t) if t else 0xFFFFFFFF
            self._put(self.pci_cfg_offset + PCI_CFG_DATA, 4, value & 0xFFFFFFFF)

    def _pci_cfg_write(self, offset: int, size: int) -> None:
        if offset + size > PCI_CFG_DATA and offset < PCI_CFG_DATA + 4:
            t = self._pci_cfg_target()
            if t:
                value = self._get(self.pci_cfg_offset + PCI_CFG_DATA, 4)
                self.bar_write(*t, value & ((1 << (8 * t[2])) - 1))

    def stats(self) -> dict:
        with self.lock:
            return {"status": self._status, "guest_features": self._guest_features,
                    "config_generation": self.config_generation,
                    "queues": [dict(vars(q)) for q in self.queues],
                    "kicks": list(self.kicks), "features_refused": self.features_refused,
                    "suppressed_notifications": self.suppressed_notifications,
                    "msix_enabled": self.msix.enabled, "errors": self.errors.as_dict()}


class _CommonCfg:
    """struct virtio_pci_common_cfg; accessed with the transport lock held."""

    def __init__(self, t: VirtioPCIFunction):
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
            return (t.device.device_features() >> (32 * sel)) & 0xFFFFFFFF if sel < 2 else 0
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
        if q is None or reg in (COMMON_Q_NDATA, COMMON_Q_RESET):
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
            t._write_status(value)
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
        if self.t.vector_ok(value):
            return value
        self.t.errors.record("vector-refused", f"MSI-X vector {value} >= {self.t.msix.nvectors}")
        return NO_VECTOR

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
        q.enable = True
        t.device.queue_enabled(q.index, replace(q))


class _Isr:
    """ISR status: reading returns the bits and clears them, deasserting INTx."""

    def __init__(self, t: VirtioPCIFunction):
        self.t = t

    def read(self, offset: int, size: int) -> int:
        if offset != 0:
            raise GuestAccessError("isr-bad-access", f"ISR read at 0x{offset:x}")
        t = self.t
        value, t.isr = t.isr, 0
        t.set_irq(False)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        raise GuestAccessError("isr-write", "ISR is read-only")


class _DeviceCfg:
    """The device-specific configuration, forwarded to the device model."""

    def __init__(self, t: VirtioPCIFunction):
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


class _Notify:
    """Queue notifications: queue i at i * notify_off_multiplier."""

    def __init__(self, t: VirtioPCIFunction):
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
        t.kicks[index] += 1
        t.device.queue_notify(index)
