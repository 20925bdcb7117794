"""Shared fixtures: fd and /dev/shm leak checks."""
import os

import pytest


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak():
    """Fails the test if it leaves fds open."""
    before = open_fds()
    yield
    leaked = open_fds() - before
    assert not leaked, f"leaked fds: {[os.readlink(f'/proc/self/fd/{f}') for f in leaked if os.path.exists(f'/proc/self/fd/{f}')]}"


# emu's own pytest plugin (emu/testing/pytest_plugin.py; also a pytest11
# entry point of the same name, so this is a no-op once emu is installed)
pytest_plugins = ["emu.testing.pytest_plugin"]
