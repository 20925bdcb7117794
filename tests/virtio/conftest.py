"""Fixtures for the virtio-pci transport tests: a toy virtio device on the
shared bus (tests/conftest.py), driven the way a guest driver drives it."""
from __future__ import annotations

import pytest

from emu.virtio import VirtioPCIFunction
from tests.pci.helpers import ToyNet


@pytest.fixture
def vnet(bus):
    """ToyNet behind the virtio-pci transport at 00:04.0."""
    dev = ToyNet()
    fn = VirtioPCIFunction(dev, name="vnet")
    bus.plug(fn, 4)
    return fn
