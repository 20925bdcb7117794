"""GPIO lines of a QOM object, as qtest reaches them (``irq_intercept_in``,
``irq_intercept_out``, ``set_irq_in``).

An object's model (``Object.impl``) offers its unnamed lists as the
attributes ``gpio_in`` / ``gpio_out`` and named ones as
``gpio_in_named`` / ``gpio_out_named`` (dicts of name -> list), each a
:class:`GpioLines`: ``count`` lines, ``observe(notify)`` to be told
``notify(line, level)`` on every level change (interception observes; the
lines keep driving what they drive, as QEMU's ``qtest_irq_handler``
forwards to the original handler), and, for inputs, ``set(line, level)``.

:class:`IoapicInputs` presents an I/O APIC model's 24 inputs (one with
``intercept(notify)`` and ``set_irq(pin, level, source)``) as the ioapic's
unnamed inputs; a platform without one has :class:`IrqLineInputs`, its
interrupt controller's lines (the GSIs PCI INTx is routed to).
"""
from __future__ import annotations

from typing import Callable, Protocol

Notify = Callable[[int, int], None]

IOAPIC_NUM_PINS = 24          # (hw/intc/ioapic: IOAPIC_NUM_PINS)


class GpioLines(Protocol):
    count: int

    def observe(self, notify: Notify) -> None: ...

    def set(self, line: int, level: int) -> None: ...


class IrqLineInputs:
    """Inputs 0..count-1 of an interrupt controller
    (:class:`emu.pci.irq.InterruptController`) as GPIO lines."""

    def __init__(self, irq, count: int = IOAPIC_NUM_PINS):
        self.irq = irq
        self.count = count

    def observe(self, notify: Notify) -> None:
        count = self.count
        self.irq.add_line_observer(lambda line, level: notify(line, level)
                                   if 0 <= line < count else None)

    def set(self, line: int, level: int) -> None:
        # driven like a device's INTx: this object is one more source on the line
        self.irq.set_intx(line, self, bool(level))


class IoapicInputs:
    """The inputs of an I/O APIC model: ``intercept(notify)`` reports every
    level change, ``set_irq(pin, level, source)`` drives a pin (the line is
    the OR of its sources; a qtest client is one more source)."""

    def __init__(self, ioapic, count: int = IOAPIC_NUM_PINS):
        self.ioapic = ioapic
        self.count = count

    def observe(self, notify: Notify) -> None:
        self.ioapic.intercept(notify)

    def set(self, line: int, level: int) -> None:
        self.ioapic.set_irq(line, bool(level), source=self)
