"""scripts/build-qemu-tests.sh gives tests what they need: a qos-test that
has every target path compiled in (vhost-user ones included), a reference
QEMU with the qtest accelerator, and the same paths again from the cache."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.qtest.conftest import BUILD_SCRIPT

P = "/x86_64/pc/i440FX-pcihost/pci-bus-pc/pci-bus/virtio-net-pci"
TARGET_PATHS = [f"{P}/virtio-net-pci-tests/hotplug"] + [
    f"{P}/virtio-net/virtio-net-tests/{t}" for t in (
        "basic", "rx_stop_cont", "announce-self", "large_tx/uint_max", "large_tx/net_bufsize",
        "vhost-user/read-guest-mem/memfile", "vhost-user/read-guest-mem/memfd",
        "vhost-user/migrate", "vhost-user/reconnect", "vhost-user/connect-fail",
        "vhost-user/flags-mismatch", "vhost-user/multiqueue")]


@pytest.mark.peers
def test_cached_paths_are_printed_again(qemu_tests):
    out = subprocess.run([BUILD_SCRIPT, "--reference", "--print-path"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [f"QOS_TEST={qemu_tests['QOS_TEST']}",
                                       f"QEMU_REFERENCE={qemu_tests['QEMU_REFERENCE']}"]


@pytest.mark.peers
def test_qos_test_lists_every_target_path(qemu_tests):
    env = dict(os.environ, QTEST_QEMU_BINARY=qemu_tests["QEMU_REFERENCE"])
    env.pop("QTEST_LOG", None)
    out = subprocess.run([qemu_tests["QOS_TEST"], "-l"], capture_output=True, text=True,
                         timeout=120, env=env, check=True)
    listed = {line for line in out.stdout.splitlines() if line.startswith("/")}
    assert set(TARGET_PATHS) <= listed, sorted(set(TARGET_PATHS) - listed)
