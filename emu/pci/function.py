"""A PCI function: 4 KiB configuration space (type 0 header), BARs,
capability list, INTx, and dispatch of its BAR accesses.

Config-space writes follow QEMU's ``hw/pci/pci.c``: every byte has a write
mask (``wmask``: bits the guest may set) and a write-1-to-clear mask
(``w1cmask``: status error bits), so read-only registers, reserved bits and
RW1C bits need no per-register code::

    new = (old & ~wmask) | (value & wmask);  new &= ~(value & w1cmask)

Writes to read-only registers are legal PCI (they are ignored); one that
touches no writable bit outside the BAR registers is counted as a guest
error so the monitor can show a confused driver.

Locking: every entry point takes ``self.lock``.  A function starts with its
own re-entrant lock; plugging it into a :class:`~emu.pci.bus.PCIBus`
replaces that with the bus's (machine-wide) lock, so a device-side event
from the asyncio thread (``set_irq``, an MSI-X notify) and the guest
thread's register accesses are serialised.  Plug functions before other
threads use them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from emu import eventfd
from emu.errors import EmuBug
from emu.spec import pci as regs
from emu.pci.bar import Bar, RegisterOps, as_ram_backing
from emu.pci.errors import GuestAccessError, GuestErrors

MappingListener = Callable[["PCIFunction", Bar], None]
CapHook = Callable[[int, int], None]      # (offset within capability, size)


@dataclass(frozen=True)
class Capability:
    cap_id: int
    offset: int
    length: int
    on_read: CapHook | None = None
    on_write: CapHook | None = None


@dataclass(frozen=True)
class IoEventFd:
    """Writes to ``bar``+``offset`` (of ``size`` bytes, any size if None,
    with value ``data`` if not None) only signal ``fd`` (QEMU's ioeventfd)."""

    bar: int
    offset: int
    fd: int
    size: int | None = None
    data: int | None = None

    def matches(self, bar: int, offset: int, size: int, data: int | None) -> bool:
        return (bar == self.bar and offset == self.offset
                and (self.size is None or size == self.size)
                and (self.data is None or data == self.data))


def _signal(fd: int) -> None:
    eventfd.signal(fd)     # a full counter wakes its reader anyway; never blocks


def all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


class PCIFunction:
    """One PCI function.  Device models subclass it (or compose it) and
    describe themselves with :meth:`add_bar` and :meth:`add_capability`
    before the function is plugged into a bus."""

    def __init__(self, vendor_id: int, device_id: int, class_code: int, *,
                 revision: int = 0, subsystem_vendor_id: int = 0, subsystem_id: int = 0,
                 interrupt_pin: int = 1, name: str = ""):
        if not 0 <= interrupt_pin <= regs.INTX_PINS:
            raise EmuBug(f"interrupt pin {interrupt_pin} not in 0..4")
        self.name = name or f"pci-{vendor_id:04x}:{device_id:04x}"
        self.config = bytearray(regs.CONFIG_SPACE_SIZE)
        self.wmask = bytearray(regs.CONFIG_SPACE_SIZE)
        self.w1cmask = bytearray(regs.CONFIG_SPACE_SIZE)
        self._defaults = bytearray(regs.CONFIG_SPACE_SIZE)  # power-on values
        self.bars: dict[int, Bar] = {}
        self.capabilities: list[Capability] = []
        self._cap_free = regs.CAP_START
        # QEMU's pci_add_capability links each new capability at the head of
        # the list; emu's own functions append (list order = insertion order)
        self.cap_list_newest_first = False
        self.errors = GuestErrors(self.name)
        self.lock: threading.RLock = threading.RLock()
        self.bus = None
        self.bdf: int | None = None
        self._intx_level = False
        self._intx_out = False
        self._intx_sink: Callable[[bool], None] | None = None
        self._msi_sink: Callable[[int, int], bool] | None = None
        self._listeners: list[MappingListener] = []
        self._reset_hooks: list[Callable[[], None]] = []
        self.ioeventfds: list[IoEventFd] = []

        self._set16(regs.VENDOR_ID, vendor_id)
        self._set16(regs.DEVICE_ID, device_id)
        self.config[regs.REVISION_ID] = revision
        self.config[regs.CLASS_PROG:regs.CLASS_PROG + 3] = class_code.to_bytes(3, "little")
        self._set16(regs.SUBSYSTEM_VENDOR_ID, subsystem_vendor_id)
        self._set16(regs.SUBSYSTEM_ID, subsystem_id)
        self.config[regs.INTERRUPT_PIN] = interrupt_pin
        self._set16(regs.COMMAND, 0, wmask=regs.COMMAND_WRITABLE)
        self._set16(regs.STATUS, 0, w1cmask=regs.STATUS_W1C)
        self.wmask[regs.CACHE_LINE_SIZE] = 0xFF
        self.wmask[regs.INTERRUPT_LINE] = 0xFF
        self._defaults[:] = self.config

    # -- byte helpers (no locking, no side effects) -----------------------------
    def _get(self, off: int, size: int) -> int:
        return int.from_bytes(self.config[off:off + size], "little")

    def _set16(self, off: int, value: int, wmask: int = 0, w1cmask: int = 0) -> None:
        self.config[off:off + 2] = value.to_bytes(2, "little")
        self.wmask[off:off + 2] = wmask.to_bytes(2, "little")
        self.w1cmask[off:off + 2] = w1cmask.to_bytes(2, "little")

    def _put(self, off: int, size: int, value: int) -> None:
        self.config[off:off + size] = value.to_bytes(size, "little")

    def _put_wmask(self, off: int, size: int, mask: int) -> None:
        self.wmask[off:off + size] = mask.to_bytes(size, "little")

    @property
    def vendor_id(self) -> int:
        return self._get(regs.VENDOR_ID, 2)

    @property
    def device_id(self) -> int:
        return self._get(regs.DEVICE_ID, 2)

    @property
    def command(self) -> int:
        return self._get(regs.COMMAND, 2)

    @property
    def pci_status(self) -> int:
        """The PCI status register (``status`` is left free for subclasses,
        e.g. the virtio device status)."""
        return self._get(regs.STATUS, 2)

    @property
    def bus_master(self) -> bool:
        return bool(self.command & regs.COMMAND_MASTER)

    # -- building ---------------------------------------------------------------
    def add_bar(self, index: int, size: int, kind: str = "mem32", prefetchable: bool = False,
                ops: RegisterOps | None = None, ram=None) -> Bar:
        """Declare BAR ``index``: register-backed (``ops``) or RAM-backed
        (``ram``: a RamBacking, ``(host_addr, length)`` or a buffer)."""
        bar = Bar(index, size, kind, prefetchable, ops,
                  as_ram_backing(ram) if ram is not None else None)
        taken = {i for b in self.bars.values() for i in (b.index, b.index + b.is_64)}
        if index in taken or (bar.is_64 and index + 1 in taken):
            raise EmuBug(f"{self.name}: BAR{index} already in use")
        off = regs.BASE_ADDRESS_0 + 4 * index
        mask = ~(size - 1) & ((1 << 64) - 1 if bar.is_64 else 0xFFFFFFFF)
        mask &= ~(regs.BAR_IO_FLAGS if bar.is_io else regs.BAR_MEM_FLAGS)
        self._put(off, 4, bar.flags)
        self._put_wmask(off, 4, mask & 0xFFFFFFFF)
        if bar.is_64:
            self._put(off + 4, 4, 0)
            self._put_wmask(off + 4, 4, mask >> 32)
        end = off + (8 if bar.is_64 else 4)
        self._defaults[off:end] = self.config[off:end]
        self.bars[index] = bar
        return bar

    def add_capability(self, cap_id: int, body: bytes, wmask: bytes | None = None,
                       w1cmask: bytes | None = None, *, on_read: CapHook | None = None,
                       on_write: CapHook | None = None) -> int:
        """Append a capability (``body`` = the bytes after its ID and next
        pointer) to the list; returns its config-space offset.  ``on_read``
        runs before a guest read of it (to refresh the bytes), ``on_write``
        after a guest write (bytes already masked into ``config``)."""
        length = 2 + len(body)
        offset = self._cap_free
        if offset + length > regs.CONVENTIONAL_SIZE:
            raise EmuBug(f"{self.name}: no room for capability 0x{cap_id:02x}")
        for mask in (wmask, w1cmask):
            if mask is not None and len(mask) != len(body):
                raise EmuBug("capability mask length differs from its body")
        self.config[offset] = cap_id
        self.config[offset + 1] = 0
        self.config[offset + 2:offset + length] = body
        if wmask is not None:
            self.wmask[offset + 2:offset + length] = wmask
        if w1cmask is not None:
            self.w1cmask[offset + 2:offset + length] = w1cmask
        if self.cap_list_newest_first:
            prev = regs.CAPABILITY_LIST
            self.config[offset + 1] = self.config[prev]
            self._defaults[offset + 1] = self.config[prev]
        else:
            prev = self.capabilities[-1].offset + 1 if self.capabilities else regs.CAPABILITY_LIST
        self.config[prev] = offset
        self._put(regs.STATUS, 2, self.pci_status | regs.STATUS_CAP_LIST)
        self._defaults[offset:offset + length] = self.config[offset:offset + length]
        self._defaults[prev] = offset
        self._defaults[regs.STATUS:regs.STATUS + 2] = self.config[regs.STATUS:regs.STATUS + 2]
        self.capabilities.append(Capability(cap_id, offset, length, on_read, on_write))
        self._cap_free = (offset + length + 3) & ~3
        return offset

    def add_mapping_listener(self, listener: MappingListener) -> None:
        """``listener(function, bar)`` runs when ``bar.address`` changes
        (guest moved it, or toggled its decode enable)."""
        self._listeners.append(listener)

    def add_reset_hook(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs on :meth:`reset` (for parts such as MSI-X)."""
        self._reset_hooks.append(hook)

    # -- plugging (called by the bus) ---------------------------------------------
    def plug(self, bus, bdf: int, lock: threading.RLock,
             intx_sink: Callable[[bool], None] | None,
             msi_sink: Callable[[int, int], bool] | None) -> None:
        if self.bus is not None:
            raise EmuBug(f"{self.name} is already plugged")
        self.bus, self.bdf, self.lock = bus, bdf, lock
        self._intx_sink, self._msi_sink = intx_sink, msi_sink

    def unplug(self) -> None:
        """Called by the bus when it lets go of the function: no interrupt,
        MSI or bus-master write reaches the platform any more."""
        with self.lock:
            self.bus = None
            self._intx_sink = self._msi_sink = None
            self._intx_out = False

    def set_multifunction(self) -> None:
        self.config[regs.HEADER_TYPE] |= regs.HEADER_TYPE_MULTI_FUNCTION
        self._defaults[regs.HEADER_TYPE] = self.config[regs.HEADER_TYPE]

    # -- config space (guest side) ------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        """A configuration read cycle.  Misaligned or out-of-range reads
        return all ones and are counted."""
        with self.lock:
            if not self._config_access_ok("read", offset, size):
                return all_ones(size) if size in (1, 2, 4) else 0xFFFFFFFF
            for cap in self.capabilities:
                if cap.on_read and _overlaps(offset, size, cap.offset, cap.length):
                    cap.on_read(offset - cap.offset, size)
            return self._get(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        """A configuration write cycle, through the write masks."""
        with self.lock:
            if not self._config_access_ok("write", offset, size):
                return
            value &= all_ones(size)
            old = self._get(offset, size)
            wm = int.from_bytes(self.wmask[offset:offset + size], "little")
            w1c = int.from_bytes(self.w1cmask[offset:offset + size], "little")
            # sizing probes of absent BARs and of the ROM BAR are normal
            if not (wm | w1c) and not _overlaps(
                    offset, size, regs.BASE_ADDRESS_0,
                    regs.BASE_ADDRESS_END - regs.BASE_ADDRESS_0) and not _overlaps(
                    offset, size, regs.ROM_ADDRESS, 4):
                self.errors.record("config-readonly",
                                   f"config write 0x{value:x} to read-only 0x{offset:03x}")
                return
            new = ((old & ~wm) | (value & wm)) & ~(value & w1c)
            self._put(offset, size, new)
            if _overlaps(offset, size, regs.COMMAND, 2):
                self._update_intx()
            if _overlaps(offset, size, regs.COMMAND, 2) or _overlaps(
                    offset, size, regs.BASE_ADDRESS_0,
                    regs.BASE_ADDRESS_END - regs.BASE_ADDRESS_0):
                self.update_mappings()
            for cap in self.capabilities:
                if cap.on_write and _overlaps(offset, size, cap.offset, cap.length):
                    cap.on_write(offset - cap.offset, size)

    def _config_access_ok(self, what: str, offset: int, size: int) -> bool:
        if size not in (1, 2, 4) or offset % size or not 0 <= offset <= len(self.config) - size:
            self.errors.record("config-bad-access",
                               f"config {what} of size {size} at 0x{offset:x}")
            return False
        return True

    # -- BARs ---------------------------------------------------------------------
    def _decoded_address(self, bar: Bar) -> int | None:
        """Where ``bar`` is decoded now, or None (QEMU's pci_bar_address):
        decode disabled, address 0, a range that wraps, a 32-bit BAR
        reaching 4 GiB, or an I/O BAR outside the 64 KiB port space."""
        off = regs.BASE_ADDRESS_0 + 4 * bar.index
        cmd = self.command
        if bar.is_io:
            if not cmd & regs.COMMAND_IO:
                return None
            addr = self._get(off, 4) & ~(bar.size - 1)
            limit = 0xFFFF
        else:
            if not cmd & regs.COMMAND_MEMORY:
                return None
            addr = self._get(off, 8 if bar.is_64 else 4) & ~(bar.size - 1)
            limit = (1 << 64) - 2 if bar.is_64 else 0xFFFFFFFE
        if addr == 0 or addr + bar.size - 1 > limit:
            return None
        return addr

    def update_mappings(self) -> None:
        """Recompute every BAR's decoded address; tell listeners of changes."""
        with self.lock:
            for bar in self.bars.values():
                new = self._decoded_address(bar)
                if new != bar.address:
                    bar.address = new
                    for listener in list(self._listeners):
                        listener(self, bar)

    def bar_read(self, index: int, offset: int, size: int) -> int:
        """A guest read of BAR ``index`` at ``offset`` (the bus calls this)."""
        with self.lock:
            bar = self.bars.get(index)
            try:
                if bar is None or offset < 0 or offset + size > bar.size:
                    raise GuestAccessError("bar-range", f"BAR{index} read at 0x{offset:x}")
                return bar.read(offset, size) & all_ones(size)
            except GuestAccessError as e:
                self.errors.record(e.kind, f"BAR{index}+0x{offset:x} read/{size}: {e}")
                return all_ones(size)

    def bar_write(self, index: int, offset: int, size: int, value: int) -> None:
        """A guest write of BAR ``index``: an ioeventfd, if one matches,
        takes it instead of the device model (no exit, as with KVM)."""
        with self.lock:
            value &= all_ones(size)
            bar = self.bars.get(index)
            try:
                if bar is None or offset < 0 or offset + size > bar.size:
                    raise GuestAccessError("bar-range", f"BAR{index} write at 0x{offset:x}")
                for ev in self.ioeventfds:
                    if ev.matches(index, offset, size, value):
                        _signal(ev.fd)
                        return
                bar.write(offset, size, value)
            except GuestAccessError as e:
                self.errors.record(e.kind, f"BAR{index}+0x{offset:x} write/{size} 0x{value:x}: {e}")

    # -- ioeventfd ------------------------------------------------------------------
    def add_ioeventfd(self, bar: int, offset: int, fd: int, size: int | None = None,
                      data: int | None = None) -> IoEventFd:
        """Bind ``fd`` (owned by the caller) to guest writes at ``bar``+``offset``."""
        with self.lock:
            b = self.bars.get(bar)
            if b is None or b.ops is None or not 0 <= offset < b.size:
                raise EmuBug(f"{self.name}: ioeventfd at BAR{bar}+0x{offset:x} "
                             f"is not in a register-backed BAR")
            ev = IoEventFd(bar, offset, fd, size, data)
            if any(e.bar == bar and e.offset == offset and e.data == data and e.size == size
                   for e in self.ioeventfds):
                raise EmuBug(f"{self.name}: duplicate ioeventfd at BAR{bar}+0x{offset:x}")
            self.ioeventfds.append(ev)
            return ev

    def remove_ioeventfd(self, ev: IoEventFd) -> None:
        with self.lock:
            self.ioeventfds.remove(ev)

    def ioeventfd_at(self, bar: int, offset: int, size: int, data: int | None = None) -> int | None:
        """The eventfd a write of ``size`` bytes (value ``data``) would signal."""
        with self.lock:
            for ev in self.ioeventfds:
                if ev.matches(bar, offset, size, data):
                    return ev.fd
            return None

    # -- interrupts (device side) ----------------------------------------------------
    def set_irq(self, level: bool) -> None:
        """Drive the function's INTx pin.  Status bit 3 shows the internal
        level; the pin reaches the interrupt controller only while the
        command register's INTx-disable bit is clear."""
        if not self.config[regs.INTERRUPT_PIN]:
            raise EmuBug(f"{self.name} has no INTx pin")
        with self.lock:
            self._intx_level = bool(level)
            st = self.pci_status
            st = (st | regs.STATUS_INTERRUPT) if level else (st & ~regs.STATUS_INTERRUPT)
            self._put(regs.STATUS, 2, st)
            self._update_intx()

    def _update_intx(self) -> None:
        out = self._intx_level and not self.command & regs.COMMAND_INTX_DISABLE
        if out != self._intx_out:
            self._intx_out = out
            if self._intx_sink is not None:
                self._intx_sink(out)

    def send_msi(self, address: int, data: int) -> bool:
        """Post an MSI write (device side).  Like any DMA it needs bus
        mastering; without it the message goes nowhere and is counted."""
        with self.lock:
            if not self.bus_master:
                self.errors.record("msi-without-bus-master",
                                   f"MSI 0x{address:x}/0x{data:x} with bus mastering off")
                return False
            return self._msi_sink is not None and self._msi_sink(address, data)

    def signal_error(self, status_bits: int) -> None:
        """Latch RW1C error bits in the status register (e.g. a master abort)."""
        with self.lock:
            self._put(regs.STATUS, 2, self.pci_status | (status_bits & regs.STATUS_W1C))

    # -- reset ---------------------------------------------------------------------
    def reset(self) -> None:
        """Back to power-on state: writable and RW1C bits take their
        power-on values, INTx deasserts, BARs stop decoding, ioeventfd
        bindings stay (they belong to the device model); then
        :meth:`reset_device` lets a subclass reset its own state."""
        with self.lock:
            mask = bytes(a | b for a, b in zip(self.wmask, self.w1cmask))
            m = int.from_bytes(mask, "little")
            cur = int.from_bytes(self.config, "little")
            dflt = int.from_bytes(self._defaults, "little")
            self.config[:] = ((cur & ~m) | (dflt & m)).to_bytes(len(self.config), "little")
            self._intx_level = False
            self._put(regs.STATUS, 2, self.pci_status & ~regs.STATUS_INTERRUPT)
            self._update_intx()
            self.update_mappings()
            for hook in self._reset_hooks:
                hook()
            self.reset_device()

    def reset_device(self) -> None:
        """Subclass hook: device-model state back to power-on."""

    def __repr__(self) -> str:
        where = f" {self.bdf >> 8:02x}:{(self.bdf >> 3) & 31:02x}.{self.bdf & 7}" \
            if self.bdf is not None else ""
        return f"<{type(self).__name__} {self.name}{where}>"
