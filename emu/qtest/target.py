"""What the qtest protocol drives: the machine seen as a qtest client sees
it.  :class:`emu.qtest.machine_target.MachineTarget` implements
:class:`QtestTarget` over an emu machine; :mod:`emu.qtest.session` calls it.

Every access goes through the machine's address spaces, as QEMU's
``cpu_inb``/``address_space_read`` do: RAM and MMIO alike, unassigned I/O
ports and memory answering as the machine's platform does (QEMU: I/O reads
all ones, memory reads zero, writes dropped).  Values are little endian
(x86: the protocol's ``endianness`` answers ``little``).  A target refuses
an access by raising :class:`~emu.qtest.errors.TargetError` (or any
:class:`emu.errors.PeerError`, e.g. ``GuestMemoryError``): the command is
answered ``FAIL <reason>`` and the session goes on.

IRQs: after :meth:`QtestTarget.irq_intercept` the target reports each level
change of the device's unnamed GPIO lines by calling the ``notify`` it was
given, with (line number, level); the session turns a change into
``IRQ raise N`` / ``IRQ lower N`` (QEMU still forwards the level to the
original sink: interception only observes).  A device is found in the
machine's QOM tree (:mod:`emu.qom`); its model offers its GPIO lines as
``gpio_in``/``gpio_out`` (:mod:`emu.qom.gpio`: ``count``,
``observe(notify)``, ``set(line, level)``) -- the PC's ``ioapic`` is the
platform's I/O APIC (:class:`emu.machines.ioapic.IOAPIC`, through
:class:`emu.qom.gpio.IoapicInputs`): 24 inputs, each the OR of what drives
it (PIIX3/ICH9 PCI interrupt routing, the ACPI SCI, ``set_irq_in`` as one
more source).
"""
from __future__ import annotations

from typing import Callable, Hashable, Literal, Protocol

IrqNotify = Callable[[int, int], None]


class QtestTarget(Protocol):
    def io_read(self, port: int, size: int) -> int:
        """``in{b,w,l}``: one access of *size* (1, 2, 4) bytes at *port*."""

    def io_write(self, port: int, size: int, value: int) -> None:
        """``out{b,w,l}``: *value* already fits in *size* bytes."""

    def mem_read(self, addr: int, size: int) -> int:
        """``read{b,w,l,q}``: one *size*-byte (1, 2, 4, 8) little-endian access."""

    def mem_write(self, addr: int, size: int, value: int) -> None:
        """``write{b,w,l,q}``: one *size*-byte little-endian access."""

    def mem_read_bytes(self, addr: int, length: int) -> bytes:
        """``read``/``b64read``: *length* bytes.  Split as QEMU's dispatcher
        splits them: per region, the largest aligned access the region
        accepts -- libqos reads a 4-byte MMIO register with ``read ADDR 0x4``,
        which must reach the device as one 4-byte access."""

    def mem_write_bytes(self, addr: int, data: bytes) -> None:
        """``write``/``b64write``/``memset``; split as :meth:`mem_read_bytes`."""

    def clock_step(self, ns: int | None) -> int:
        """Advance the virtual clock by *ns* >= 0 nanoseconds, running the
        timers that fall due on the way; *ns* None: to the next timer
        deadline (no timer: no change).  Returns the clock in ns."""

    def clock_set(self, ns: int) -> int:
        """Advance the virtual clock to *ns* (nothing if it is already
        past).  Returns the clock in ns."""

    def resolve_device(self, path: str) -> Hashable | None:
        """The device at QOM *path* (absolute, or a unique partial path such
        as ``ioapic``), as a key that compares equal for the same device;
        None if there is none."""

    def irq_intercept(self, device: Hashable, direction: Literal["in", "out"],
                      notify: IrqNotify) -> None:
        """Observe the device's unnamed GPIO inputs (``in``) or outputs
        (``out``) from now on, calling ``notify(line, level)``."""

    def set_irq_in(self, device: Hashable, name: str | None, num: int, level: int) -> None:
        """Drive GPIO input *num* of the list *name* (None: unnamed) to
        *level*; raise TargetError if the device has no such input."""

    def module_load(self, prefix: str, name: str) -> bool:
        """Load a QEMU module.  emu has no loadable modules: everything is
        built in, and a QEMU built without CONFIG_MODULES answers that case
        ``OK`` (its module_load returns 2, "built in"), so a target answers
        True for the modules it has built in."""
