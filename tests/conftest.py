"""Shared fixtures: fd leak checks, the PCI bus the device and guest tests
plug their functions into, a register-file function on it."""
import os

import pytest

from emu.machines.platform import Platform
from emu.pci import PCIFunction


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak():
    """Fails the test if it leaves fds open."""
    before = open_fds()
    yield
    leaked = open_fds() - before
    assert not leaked, f"leaked fds: {[os.readlink(f'/proc/self/fd/{f}') for f in leaked if os.path.exists(f'/proc/self/fd/{f}')]}"


@pytest.fixture
def bus():
    """A platform with a PCI root bus and no RAM (no machine around it):
    what a guest driver reaches (emu.guest.pci.BusAPI)."""
    b = Platform()
    yield b
    for f in b.functions.values():
        if hasattr(f, "close"):
            f.close()
    b.close()


@pytest.fixture
def regfile_fn(bus):
    """A plain function with a 4 KiB register BAR0 at device 2."""
    from tests.pci.helpers import RegFile
    fn = PCIFunction(0x1234, 0x5678, 0x0580, revision=3, subsystem_vendor_id=0x1af4,
                     subsystem_id=0x1100, name="regfile")
    regs = RegFile(0x1000, readonly={0x10})
    fn.add_bar(0, 0x1000, "mem32", ops=regs)
    bus.plug(fn, 2)
    fn.regs = regs
    return fn


# emu's own pytest plugin (emu/testing/pytest_plugin.py; also a pytest11
# entry point of the same name, so this is a no-op once emu is installed)
pytest_plugins = ["emu.testing.pytest_plugin"]
