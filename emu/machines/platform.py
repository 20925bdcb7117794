"""A machine's platform: the system memory and I/O port address spaces,
the interrupt controller, the PCI root bus (if the type has one) and the
fixed platform devices -- everything below the device models.

A :class:`Platform` is the whole interface an initiator outside the
device models uses: emu's guest program drives its devices through it (the
methods of :class:`emu.guest.pci.BusAPI`), and so can an outside driver
(a qtest client): every access -- a configuration cycle, an MMIO or port
access, RAM -- goes through the same address-space dispatch, bounds checks
and device models.

Layers (highest priority first): the reset control register at 0xCF9
(on top of CONFIG_ADDRESS), platform devices (the APIC's MSI window, the
I/O APIC, the host bridge's CF8/CFC, the chipset's ports, fw_cfg), PCI
BARs, guest RAM.  RAM sits below the BARs: a BAR the guest places over RAM
wins, as in QEMU.

The PC types (:mod:`emu.machines.x86`) add their chipset: ``ioapic``
(:class:`emu.machines.ioapic.IOAPIC`), ``fw_cfg``
(:class:`emu.machines.fw_cfg.FwCfg`), the chipset functions on the bus,
and on pc ``hotplug`` (:class:`emu.machines.hotplug.PciHotplug`).

Requests the guest makes of the machine through the chipset (reset via
0xCF9, ACPI soft-off) call :attr:`Platform.on_reset_request` /
:attr:`Platform.on_power_off` on the guest's thread with the machine lock
held: the machine must only schedule them.

``clock``: the machine clock in ns (the ACPI PM timer's source); wall
time from the platform's creation unless the machine sets another (the
qtest virtual clock).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

from emu.address_space import AddressSpace, Region
from emu.pci.bar import RamBacking
from emu.pci.bus import PCIBus
from emu.pci.host import ConfigMechanism
from emu.pci.irq import InterruptController

MEMORY_SIZE, MEMORY_SIZES = 1 << 64, (1, 2, 4, 8)
IO_SIZE, IO_SIZES = 1 << 16, (1, 2, 4)
OVERLAP_PRIORITY, PLATFORM_PRIORITY, PCI_PRIORITY, RAM_PRIORITY = 30, 20, 10, 0
CONFIG_SIZES = (1, 2, 4)


def _wall_clock() -> Callable[[], int]:
    start = time.monotonic_ns()
    return lambda: time.monotonic_ns() - start


class _RamTarget:
    """Guest RAM as an address-space target."""

    def __init__(self, ram: RamBacking):
        self.ram = ram

    def read(self, offset: int, size: int) -> int:
        return self.ram.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.ram.write(offset, size, value)


class Platform:
    def __init__(self, machine_type=None, *, lock: threading.RLock | None = None,
                 pci: bool = True, ram=None):
        self.machine_type = machine_type
        self.lock = lock if lock is not None else threading.RLock()
        # (QEMU: unassigned memory reads 0, unassigned I/O ports all ones)
        self.memory = AddressSpace("mmio", MEMORY_SIZE, MEMORY_SIZES, self.lock,
                                   unassigned_ones=False)
        self.io = AddressSpace("pio", IO_SIZE, IO_SIZES, self.lock)
        self.irq = InterruptController()
        self.memory.set_layer("apic", [self.irq.msi_window().region()], PLATFORM_PRIORITY)
        self.pci: PCIBus | None = None
        self.config_mechanism: ConfigMechanism | None = None
        self._unclaimed: Counter[str] = Counter()
        self.clock: Callable[[], int] = _wall_clock()
        self.ioapic = None
        self.fw_cfg = None
        self.hotplug = None
        self.chipset: dict[str, object] = {}        # name -> chipset piece (monitor, tests)
        self.ram_layout = None
        self.on_reset_request: Callable[[], None] | None = None
        self.on_power_off: Callable[[], None] | None = None
        self.reset_requests = 0
        self._reset_hooks: list[Callable[[], None]] = []
        if pci:
            self.pci = PCIBus(self.memory, self.io, self.irq, self.lock, priority=PCI_PRIORITY)
            self.config_mechanism = ConfigMechanism(self.pci)
            self.io.set_layer("host-bridge", self.config_mechanism.regions(), PLATFORM_PRIORITY)
        if ram is not None:
            self.map_guest_ram(ram)

    def now(self) -> int:
        """The machine clock (ns); follows :attr:`clock` if it is replaced."""
        return self.clock()

    # -- what the chipset asks of the machine ------------------------------------------------
    def request_reset(self) -> None:
        """The guest asked for a reset (0xCF9); the machine schedules it."""
        self.reset_requests += 1
        if self.on_reset_request is not None:
            self.on_reset_request()

    def request_power_off(self) -> None:
        """The guest entered ACPI soft-off; the machine schedules the shutdown."""
        if self.on_power_off is not None:
            self.on_power_off()

    def add_reset_hook(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs on :meth:`reset`, after the PCI functions."""
        self._reset_hooks.append(hook)

    def reset(self) -> None:
        """System reset: every PCI function back to power-on (BARs, command,
        the device's own state: a virtio device resets, its back-end is told),
        then the platform devices (I/O APIC, fw_cfg, ...).  RAM is kept."""
        with self.lock:
            for bdf, f in sorted(self.functions.items()):
                if self.functions.get(bdf) is f:     # a reset may eject (pending removals)
                    f.reset()
            if self.ioapic is not None:
                self.ioapic.reset()
            if self.fw_cfg is not None:
                self.fw_cfg.reset()
            for hook in self._reset_hooks:
                hook()

    def map_guest_ram(self, ram) -> None:
        """Put ``ram`` (an :class:`emu.memory.GuestMemory`) into the memory
        space at its guest-physical addresses."""
        self.memory.set_layer("ram", [
            Region(r.gpa, r.gpa_end, _RamTarget(RamBacking(r.host_addr, r.size, keepalive=r)),
                   name=f"ram@0x{r.gpa:x}")
            for r in ram.regions], RAM_PRIORITY)

    # -- building ------------------------------------------------------------------------
    def plug(self, function, device: int, fn: int = 0) -> int:
        return self._bus().plug(function, device, fn)

    @property
    def functions(self) -> dict:
        return self.pci.functions if self.pci is not None else {}

    def _bus(self) -> PCIBus:
        if self.pci is None:
            from emu.errors import EmuBug
            raise EmuBug("this machine has no PCI bus")
        return self.pci

    # -- what an initiator reaches (emu.guest.pci.BusAPI) ------------------------------------
    def config_read(self, bdf: int, offset: int, size: int) -> int:
        if self.pci is None:
            self._unclaimed["config_read"] += 1
            return (1 << (8 * size)) - 1 if size in CONFIG_SIZES else 0xFFFFFFFF
        return self.pci.config_read(bdf, offset, size)

    def config_write(self, bdf: int, offset: int, size: int, value: int) -> None:
        if self.pci is None:
            self._unclaimed["config_write"] += 1
            return
        self.pci.config_write(bdf, offset, size, value)

    def mmio_read(self, addr: int, size: int) -> int:
        return self.memory.read(addr, size)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self.memory.write(addr, size, value)

    def pio_read(self, port: int, size: int) -> int:
        return self.io.read(port, size)

    def pio_write(self, port: int, size: int, value: int) -> None:
        self.io.write(port, size, value)

    def map_ram(self, addr: int, length: int):
        return self._bus().map_ram(addr, length)

    def ioeventfd_for(self, addr: int, size: int, data: int | None = None) -> int | None:
        return self.pci.ioeventfd_for(addr, size, data) if self.pci is not None else None

    def pio_ioeventfd_for(self, port: int, size: int, data: int | None = None) -> int | None:
        """The eventfd a write of ``size`` bytes (value ``data``) at I/O
        ``port`` would signal (a legacy virtio notify register)."""
        return self.pci.ioeventfd_for(port, size, data, io=True) if self.pci is not None else None

    def interrupt_eventfd(self, vector: int) -> int:
        """The eventfd MSI ``vector`` signals (the guest's IDT entry)."""
        return self.irq.eventfd(vector)

    def intx_eventfd(self, line: int) -> int:
        return self.irq.intx_eventfd(line)

    def intx_route(self, bdf: int, pin: int | None = None) -> int | None:
        return self.pci.intx_route(bdf, pin) if self.pci is not None else None

    # -- monitor ---------------------------------------------------------------------------
    @property
    def unclaimed(self) -> Counter[str]:
        """Every unclaimed access, by kind (a merged snapshot)."""
        with self.lock:
            c = Counter(self._unclaimed)
            c.update(self.memory.unclaimed)
            c.update(self.io.unclaimed)
            if self.pci is not None:
                c.update(self.pci.unclaimed)
            return c

    def stats(self) -> dict:
        with self.lock:
            out = {"unclaimed": dict(self.unclaimed), "irq": self.irq.stats(), "functions": {}}
            if self.pci is not None:
                out["functions"] = self.pci.stats()["functions"]
            if self.ioapic is not None:
                out["ioapic"] = self.ioapic.stats()
            for name, piece in self.chipset.items():
                if hasattr(piece, "stats"):
                    out.setdefault("chipset", {})[name] = piece.stats()
            return out

    def close(self) -> None:
        """Release the interrupt eventfds; RAM leaves the memory space (its
        mappings are about to go)."""
        self.memory.set_layer("ram", [], RAM_PRIORITY)
        self.irq.close()
