"""The interrupt controller: MSI messages and INTx lines as eventfds."""
from __future__ import annotations

import pytest

from emu.pci import InterruptController

from .helpers import eventfd_count


@pytest.fixture
def irq():
    c = InterruptController()
    yield c
    c.close()


def test_msi_message_signals_its_vector(irq):
    fd = irq.eventfd(0x31)
    assert irq.eventfd(0x31) == fd                           # one fd per vector
    assert irq.deliver_msi(0xFEE00000, 0x31)
    assert irq.deliver_msi(0xFEE0F00C, 0x4031)               # dest/mode bits are ignored
    assert eventfd_count(fd) == 2 and irq.delivered[0x31] == 2
    assert irq.deliver_msi(0xFEE00000, 0x40)                 # fd made on first delivery
    assert eventfd_count(irq.eventfd(0x40)) == 1


@pytest.mark.parametrize("address,data", [(0, 0x31), (0xFED00000, 0x31), (0xFEF00000, 0x31),
                                          (0x1_FEE0_0000, 0x31), (0xFEE00000, 0x0F),
                                          (0xFEE00000, 0x100)])
def test_invalid_msi_messages_are_dropped_and_counted(irq, address, data):
    assert not irq.deliver_msi(address, data)
    assert irq.invalid_messages == 1 and irq.last_invalid == (address, data)
    assert not irq.delivered


@pytest.mark.parametrize("vector", [-1, 0, 15, 256])
def test_eventfd_of_a_reserved_vector_is_refused(irq, vector):
    with pytest.raises(ValueError):
        irq.eventfd(vector)


def test_intx_line_signals_on_assertion_edges_only(irq):
    fd = irq.intx_eventfd(17)
    a, b = object(), object()
    irq.set_intx(17, a, True)
    irq.set_intx(17, b, True)                                # already asserted: no edge
    irq.set_intx(17, a, True)
    assert eventfd_count(fd) == 1 and irq.intx_level(17)
    irq.set_intx(17, a, False)
    assert irq.intx_level(17)
    irq.set_intx(17, b, False)
    assert not irq.intx_level(17)
    irq.set_intx(17, b, True)
    assert eventfd_count(fd) == 1 and irq.intx_assertions[17] == 2


def test_close_releases_every_eventfd(no_fd_leak):
    c = InterruptController()
    c.eventfd(0x30)
    c.intx_eventfd(16)
    c.deliver_msi(0xFEE00000, 0x50)
    c.close()
    assert not c.deliver_msi(0xFEE00000, 0x30)
    with pytest.raises(ValueError):
        c.eventfd(0x30)
