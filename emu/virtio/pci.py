"""The virtio-pci transport (virtio 1.x §4.1; QEMU's
``hw/virtio/virtio-pci.c``): a :class:`~emu.pci.function.PCIFunction` that
presents a :class:`~emu.virtio.device.VirtioDevice` to a driver through the
modern interface, the legacy one, or both (a *transitional* device).

Layout (:class:`~emu.virtio.pci_layout.VirtioPCILayout`): emu's default
(``docs/vhost-pci-device.md``) puts the modern structures in BAR0 (common
configuration 0x0, ISR 0x1000, device configuration 0x2000, notify area
0x3000 with ``notify_off_multiplier`` 4, queue *i* at 0x3000 + 4·i) and
MSI-X in BAR1 (table 0x0, PBA 0x800); ``QEMU_LAYOUT`` is QEMU's (the modern
structures in BAR4, the legacy I/O registers in BAR0).  Each modern
structure is announced by a vendor capability, plus a PCI_CFG capability
(access to the modern BAR through config space).  A subclass may add its
own registers to the modern BAR with ``self.bar0.add(offset, length, ops,
name)`` in space the layout leaves free (shorten ``notify_length`` to make
room inside the notify page) and its own BARs with :meth:`add_bar`.

Interfaces (:class:`~emu.virtio.pci_layout.Interfaces`): modern, legacy or
both, fixed when the function is *realized* -- at construction, or later
(``realize=False`` then :meth:`realize`) for a device whose features are
known only once its back-end has connected: without VERSION_1 the modern
interface is dropped, as QEMU does.  Ids follow §4.1.2.1: a modern-only
device is 0x1040 + id, revision 1; a transitional or legacy device is
0x1000 + id - 1, revision 0, subsystem id = the virtio device id.

How the transport answers a driver that breaks the rules (each case is
counted in ``self.errors`` under the kind in brackets; none raises); the
legacy registers' own rules are in :mod:`emu.virtio.pci_legacy`:

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
  without FEATURES_OK -- without DRIVER on the legacy interface) is not
  kept [status-order]; FEATURES_OK is not kept when the driver's features
  contain a bit the device did not offer [features-unoffered], lack
  VERSION_1 [features-no-version-1], or the device model refuses them
  (counted in ``features_refused``); FAILED is always accepted.
* driver_feature written after FEATURES_OK: dropped [features-after-ok];
* a vector (msix_config, queue_msix_vector) beyond the MSI-X table: the
  register reads back 0xffff (NO_VECTOR) [vector-refused];
* queue registers with queue_select beyond num_queues: reads return 0
  (queue_size 0 means "no such queue"; the vector reads NO_VECTOR and the
  notify offset the index, as in QEMU), writes dropped [queue-select];
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
from dataclasses import replace

from emu import eventfd as efd
from emu.errors import EmuBug
from emu.pci.function import IoEventFd, PCIFunction
from emu.pci.msix import MSIX
from emu.pci.regions import RegisterMap
from emu.spec import pci as regs, virtio_pci, virtio_ring
from emu.spec.virtio import (F_VERSION_1, ISR_CONFIG, ISR_QUEUE, NO_VECTOR, STATUS_ACKNOWLEDGE,
                             STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK,
                             STATUS_NEEDS_RESET)
from emu.spec.virtio_pci import (CAP_BAR, CAP_COMMON_CFG, CAP_DEVICE_CFG, CAP_ISR_CFG,
                                 CAP_LENGTH, CAP_NOTIFY_CFG, CAP_OFFSET, CAP_PCI_CFG, CAP_SIZE,
                                 COMMON_CFG_SIZE, PCI_CFG_DATA, PCI_SUBSYSTEM_ID_MIN, PCI_VENDOR_ID)
from emu.virtio.device import QueueConfig, VirtioDevice
from emu.virtio.pci_layout import Interfaces, VirtioPCILayout
from emu.virtio.pci_legacy import LegacyIO, region_size
from emu.virtio.pci_modern import CommonCfg, DeviceCfg, Isr, Notify

# struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar, id, pad[2], offset, length
_CAP_FMT = "<BBBB2xII"
# the legacy notify register takes the queue index as its value
_LEGACY_NOTIFY_SIZE = 2


class _NoMSIX:
    """Stands in for the MSI-X capability of a function built with vectors=0."""

    enabled = False
    nvectors = 0

    def notify(self, vector: int) -> bool:
        return False

    def clear_pending(self, vector: int) -> None:
        pass


class VirtioPCIFunction(PCIFunction):
    """A virtio device behind the virtio-pci transport."""

    def __init__(self, device: VirtioDevice, *, layout: VirtioPCILayout = VirtioPCILayout(),
                 interfaces: Interfaces = Interfaces(), pci_device_id: int | None = None,
                 class_code: int | None = None, subsystem_id: int = PCI_SUBSYSTEM_ID_MIN,
                 name: str = "", realize: bool = True):
        super().__init__(
            PCI_VENDOR_ID, 0,
            class_code if class_code is not None else device.pci_class,
            subsystem_vendor_id=PCI_VENDOR_ID, interrupt_pin=1,
            name=name or f"virtio-{device.device_id}")
        self.device = device
        self.layout = lay = layout
        self.asked = interfaces
        self.interfaces: Interfaces | None = None      # once realized
        self._pci_device_id = pci_device_id
        self._modern_subsystem_id = subsystem_id
        self.cap_list_newest_first = lay.cap_style == "qemu"
        n = device.num_queues
        if not 1 <= n <= 0xFFFF:
            raise EmuBug(f"num_queues {n} out of range")
        if device.config_size > lay.device_length:
            raise EmuBug("device configuration larger than its BAR window")
        if n * lay.notify_off_multiplier + 2 > lay.notify_length:
            raise EmuBug("notify area too small for the queues")
        if interfaces.legacy and (lay.legacy_bar == lay.bar or lay.legacy_bar == lay.msix_bar):
            raise EmuBug("the legacy I/O BAR overlaps another BAR of the layout")
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
        self._kick_fds: dict[int, tuple[int, list[IoEventFd]]] = {}
        self.bar0: RegisterMap | None = None          # the modern structures' BAR
        self.legacy: LegacyIO | None = None
        self.device_cfg = DeviceCfg(self)
        self.pci_cfg_offset = None
        self.bar_msix = None
        self.msix = _NoMSIX()
        device.attach(self)
        if realize:
            self.realize()

    # -- building -------------------------------------------------------------------------
    def realize(self, *, by_features: bool = True) -> Interfaces:
        """Fix the interfaces (the modern one only if the device offers
        VERSION_1; ``by_features`` False: as asked, for a device whose
        back-end is still to come) and build the BARs and capabilities; once."""
        if self.interfaces is not None:
            raise EmuBug(f"{self.name} is realized already")
        ifs = self.asked.for_features(self.device.device_features()) if by_features \
            else self.asked
        lay, dev = self.layout, self.device
        if ifs.modern and not ifs.legacy:
            did = self._pci_device_id if self._pci_device_id is not None \
                else virtio_pci.pci_device_id(dev.device_id)
            rev, sub = virtio_pci.MODERN_REVISION, self._modern_subsystem_id
        else:
            did = virtio_pci.transitional_device_id(dev.device_id)
            rev, sub = virtio_pci.ABI_VERSION, dev.device_id
        for off, size, value in ((regs.DEVICE_ID, 2, did), (regs.REVISION_ID, 1, rev),
                                 (regs.SUBSYSTEM_ID, 2, sub)):
            self._put(off, size, value)
            self._defaults[off:off + size] = self.config[off:off + size]
        if lay.cap_style == "emu":
            self._add_msix()
        if ifs.modern:
            self._add_modern()
        if lay.cap_style == "qemu":
            self._add_msix()
        if ifs.legacy:
            self.legacy = LegacyIO(self)
            size = region_size(dev.config_size, self.msix.nvectors > 0)
            self.add_bar(lay.legacy_bar, size, "io", ops=self.legacy)
        self.interfaces = ifs
        self.update_mappings()
        return ifs

    def _add_modern(self) -> None:
        lay, dev = self.layout, self.device
        whole = lay.cap_style == "qemu"        # QEMU announces each whole region
        self.bar0 = RegisterMap(lay.bar_size, f"{self.name}-bar{lay.bar}")
        self.bar0.add(lay.common_offset, lay.common_length, CommonCfg(self), "common")
        self.bar0.add(lay.isr_offset, lay.isr_length, Isr(self), "isr")
        if dev.config_size:
            self.bar0.add(lay.device_offset, lay.device_length, self.device_cfg, "device")
        self.bar0.add(lay.notify_offset, lay.notify_length, Notify(self), "notify")
        self.add_bar(lay.bar, lay.bar_size, lay.bar_kind, lay.bar_prefetchable, ops=self.bar0)
        self._add_virtio_cap(CAP_COMMON_CFG, lay.common_offset,
                             lay.common_length if whole else COMMON_CFG_SIZE)
        self._add_virtio_cap(CAP_ISR_CFG, lay.isr_offset, lay.isr_length)
        if dev.config_size:
            self._add_virtio_cap(CAP_DEVICE_CFG, lay.device_offset,
                                 lay.device_length if whole else dev.config_size)
        self._add_virtio_cap(CAP_NOTIFY_CFG, lay.notify_offset, lay.notify_length,
                             extra=struct.pack("<I", lay.notify_off_multiplier))
        if lay.pci_cfg_cap:
            self.pci_cfg_offset = self._add_virtio_cap(
                CAP_PCI_CFG, 0, 0, extra=bytes(4),
                wmask=bytes(2) + b"\xff" + bytes(3) + b"\xff" * 12,
                on_read=self._pci_cfg_read, on_write=self._pci_cfg_write)

    def _add_msix(self) -> None:
        lay = self.layout
        if lay.msix_vectors == 0:
            return                  # QEMU's vectors=0: no MSI-X capability, INTx + ISR
        self.bar_msix = RegisterMap(lay.msix_bar_size, f"{self.name}-bar{lay.msix_bar}")
        self.add_bar(lay.msix_bar, lay.msix_bar_size, "mem32", ops=self.bar_msix)
        self.msix = MSIX(self, lay.msix_vectors or len(self.queues) + 1, lay.msix_bar,
                         lay.msix_table_offset, lay.msix_bar, lay.msix_pba_offset)
        self.bar_msix.add(lay.msix_table_offset, self.msix.table_size, self.msix.table_ops,
                          "msix-table")
        self.bar_msix.add(lay.msix_pba_offset, self.msix.pba_size, self.msix.pba_ops, "msix-pba")

    def _add_virtio_cap(self, cfg_type: int, offset: int, length: int, *, extra: bytes = b"",
                        wmask: bytes | None = None, on_read=None, on_write=None) -> int:
        body = struct.pack(_CAP_FMT, CAP_SIZE + len(extra), cfg_type,
                           self.layout.bar if cfg_type != CAP_PCI_CFG else 0, 0,
                           offset, length) + extra
        return self.add_capability(regs.CAP_ID_VNDR, body, wmask,
                                   on_read=on_read, on_write=on_write)

    @property
    def modern(self) -> bool:
        return self.interfaces is not None and self.interfaces.modern

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

    def modern_features(self) -> int:
        """What device_feature shows: the device's features."""
        return self.device.device_features()

    def legacy_features(self) -> int:
        """What the legacy host-features register shows (32 bits)."""
        return self.device.legacy_features() & 0xFFFFFFFF

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

    def read_isr(self) -> int:
        """The ISR, cleared by the read; INTx deasserts (lock held)."""
        value, self.isr = self.isr, 0
        self.set_irq(False)
        return value

    def set_needs_reset(self) -> None:
        """The device hit an error it cannot recover from without a reset."""
        with self.lock:
            if self._status:
                self._status |= STATUS_NEEDS_RESET
                self.notify_config()

    def vector_ok(self, vector: int) -> bool:
        return vector == NO_VECTOR or vector < self.msix.nvectors

    def checked_vector(self, value: int) -> int:
        """A vector the driver wrote, or NO_VECTOR if the table has no such entry."""
        if self.vector_ok(value):
            return value
        self.errors.record("vector-refused", f"MSI-X vector {value} >= {self.msix.nvectors}")
        return NO_VECTOR

    def kick_eventfd(self, index: int) -> int:
        """An eventfd (owned by the transport) that queue ``index``'s
        notify register (modern address, legacy register with its index)
        signals instead of calling ``queue_notify``."""
        with self.lock:
            if not 0 <= index < len(self.queues):
                raise EmuBug(f"kick_eventfd: no queue {index}")
            if index in self._kick_fds:
                return self._kick_fds[index][0]
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            evs: list[IoEventFd] = []
            try:
                if self.modern:
                    # with a zero multiplier all queues share one address: match the index
                    data = index if self.layout.notify_off_multiplier == 0 else None
                    evs.append(self.add_ioeventfd(self.layout.bar, self.notify_address(index),
                                                  fd, data=data))
                if self.legacy is not None:
                    evs.append(self.add_ioeventfd(self.layout.legacy_bar,
                                                  virtio_pci.QUEUE_NOTIFY, fd,
                                                  size=_LEGACY_NOTIFY_SIZE, data=index))
            except BaseException:
                for ev in evs:
                    self.remove_ioeventfd(ev)
                os.close(fd)
                raise
            self._kick_fds[index] = (fd, evs)
            return fd

    def release_kick_eventfd(self, index: int) -> None:
        """Send kicks of queue ``index`` to ``queue_notify`` again."""
        with self.lock:
            entry = self._kick_fds.pop(index, None)
            if entry is not None:
                for ev in entry[1]:
                    self.remove_ioeventfd(ev)
                os.close(entry[0])

    def kick(self, index: int) -> None:
        """A notify of enabled queue ``index`` that no ioeventfd took (a
        write of another size or value): it still reaches whoever waits on
        the queue's eventfd, or the device model."""
        self.kicks[index] += 1
        entry = self._kick_fds.get(index)
        if entry is not None:
            efd.signal(entry[0])    # a vhost-user back-end's kick too: never blocks
            return
        self.device.queue_notify(index)

    def notify_address(self, index: int) -> int:
        """Offset in the modern BAR of queue ``index``'s notify register."""
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

    # -- device status and features (lock held) -------------------------------------------------
    def write_status(self, value: int, *, legacy: bool = False) -> None:
        """A driver's device_status write.  ``legacy``: through the legacy
        interface, where DRIVER_OK follows DRIVER (no FEATURES_OK)."""
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
        allowed = (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK | STATUS_FAILED
                   | (0 if legacy else STATUS_FEATURES_OK) | (old & STATUS_NEEDS_RESET)
                   | (old & STATUS_FEATURES_OK))
        stray = value & ~allowed
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
        ready = STATUS_ACKNOWLEDGE | STATUS_DRIVER if legacy else STATUS_FEATURES_OK
        became_live = order(STATUS_DRIVER_OK, ready, "DRIVER_OK")
        if became_live:
            st |= STATUS_DRIVER_OK
        self._status = st
        if became_live:
            self.device.driver_ok()

    def _accept_features(self) -> bool:
        f = self.driver_features
        offered = self.modern_features()
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

    def accept_legacy_features(self, features: int) -> None:
        """Features a legacy driver wrote (already masked with the offer):
        in effect at once; a device model that refuses them is counted."""
        self.driver_features = features
        if not self.device.features_ok(features):
            self.features_refused += 1
            self.errors.record("features-refused", f"legacy features 0x{features:x} refused "
                               "by the device")
        self._guest_features = features

    def enable_queue(self, q: QueueConfig) -> None:
        """Queue ``q`` is set up (modern queue_enable, legacy PFN): tell the device."""
        q.enable = True
        self.device.queue_enabled(q.index, replace(q))

    # -- PCI_CFG capability: BAR access through config space -------------------------------
    def _pci_cfg_target(self) -> tuple[int, int, int] | None:
        c = self.pci_cfg_offset
        bar, off, length = self.config[c + CAP_BAR], self._get(c + CAP_OFFSET, 4), \
            self._get(c + CAP_LENGTH, 4)
        if length == 0:
            return None             # nothing asked for (a config-space dump reads it too)
        if length not in (1, 2, 4) or off % length or bar not in self.bars:
            self.errors.record("pci-cfg-bad-access", f"PCI_CFG access bar={bar} "
                               f"offset=0x{off:x} length={length}")
            return None
        return bar, off, length

    def _pci_cfg_read(self, offset: int, size: int) -> None:
        # no access to make: pci_cfg_data keeps what it holds (QEMU's virtio_read_config)
        if offset + size > PCI_CFG_DATA and offset < PCI_CFG_DATA + 4:
            t = self._pci_cfg_target()
            if t:
                self._put(self.pci_cfg_offset + PCI_CFG_DATA, 4,
                          self.bar_read(*t) & 0xFFFFFFFF)

    def _pci_cfg_write(self, offset: int, size: int) -> None:
        if offset + size > PCI_CFG_DATA and offset < PCI_CFG_DATA + 4:
            t = self._pci_cfg_target()
            if t:
                value = self._get(self.pci_cfg_offset + PCI_CFG_DATA, 4)
                self.bar_write(*t, value & ((1 << (8 * t[2])) - 1))

    def stats(self) -> dict:
        with self.lock:
            ifs = self.interfaces
            return {"status": self._status, "guest_features": self._guest_features,
                    "config_generation": self.config_generation,
                    "interfaces": ("transitional" if ifs.transitional else
                                   "modern" if ifs.modern else "legacy") if ifs else None,
                    "queues": [dict(vars(q)) for q in self.queues],
                    "kicks": list(self.kicks), "features_refused": self.features_refused,
                    "suppressed_notifications": self.suppressed_notifications,
                    "msix_enabled": self.msix.enabled, "errors": self.errors.as_dict()}
