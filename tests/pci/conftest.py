"""Fixtures for the PCI and virtio-pci transport tests: a bus and small
device models on it, driven the way a guest driver drives them."""
from __future__ import annotations

import pytest

from emu.pci import PCIBus, PCIFunction
from emu.virtio import VirtioPCIFunction

from .helpers import RegFile, ToyNet


@pytest.fixture
def bus():
    b = PCIBus()
    yield b
    for f in b.functions.values():
        if hasattr(f, "close"):
            f.close()
    b.close()


@pytest.fixture
def regfile_fn(bus):
    """A plain function with a 4 KiB register BAR0 at device 2."""
    fn = PCIFunction(0x1234, 0x5678, 0x0580, revision=3, subsystem_vendor_id=0x1af4,
                     subsystem_id=0x1100, name="regfile")
    regs = RegFile(0x1000, readonly={0x10})
    fn.add_bar(0, 0x1000, "mem32", ops=regs)
    bus.plug(fn, 2)
    fn.regs = regs
    return fn


@pytest.fixture
def vnet(bus):
    """ToyNet behind the virtio-pci transport at 00:04.0."""
    dev = ToyNet()
    fn = VirtioPCIFunction(dev, name="vnet")
    bus.plug(fn, 4)
    return fn

