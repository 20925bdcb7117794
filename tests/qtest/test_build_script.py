"""scripts/build-qemu-tests.sh gives tests what they need: a qos-test that
has every target path compiled in (vhost-user ones included), a reference
QEMU with the qtest accelerator, and the same paths again from the cache."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .qemu_build import BUILD_SCRIPT, BUILD_TIMEOUT

P = "/x86_64/pc/i440FX-pcihost/pci-bus-pc/pci-bus/virtio-net-pci"
TARGET_PATHS = [f"{P}/virtio-net-pci-tests/hotplug"] + [
    f"{P}/virtio-net/virtio-net-tests/{t}" for t in (
        "basic", "rx_stop_cont", "announce-self", "large_tx/uint_max", "large_tx/net_bufsize",
        "vhost-user/read-guest-mem/memfile", "vhost-user/read-guest-mem/memfd",
        "vhost-user/migrate", "vhost-user/reconnect", "vhost-user/connect-fail",
        "vhost-user/flags-mismatch", "vhost-user/multiqueue")]


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_cached_paths_are_printed_again(qemu_tests):
    out = subprocess.run([BUILD_SCRIPT, "--reference", "--print-path"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [f"QOS_TEST={qemu_tests['QOS_TEST']}",
                                       f"QEMU_REFERENCE={qemu_tests['QEMU_REFERENCE']}"]


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_qos_test_lists_every_target_path(qemu_tests):
    env = dict(os.environ, QTEST_QEMU_BINARY=qemu_tests["QEMU_REFERENCE"])
    env.pop("QTEST_LOG", None)
    out = subprocess.run([qemu_tests["QOS_TEST"], "-l"], capture_output=True, text=True,
                         timeout=120, env=env, check=True)
    listed = {line for line in out.stdout.splitlines() if line.startswith("/")}
    assert set(TARGET_PATHS) <= listed, sorted(set(TARGET_PATHS) - listed)


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_libqtest_drives_emus_qtest_adapter(qemu_tests, tmp_path):
    """QEMU's own libqtest (qos-test's probe: spawn, accept both sockets,
    ``endianness``, QMP, SIGTERM with exit status checked) against
    emu.qtest's adapter and session, with a stand-in for the rest of the
    binary (tests/qtest/libqtest_peer.py)."""
    binary = tmp_path / "emu-system-x86_64"       # libqtest takes the arch from the name
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libqtest_peer.py")
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} {peer} \"$@\"\n")
    binary.chmod(0o755)
    env = dict(os.environ, QTEST_QEMU_BINARY=str(binary), QTEST_LOG="1")
    out = subprocess.run([qemu_tests["QOS_TEST"], "-l"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    listed = {line for line in out.stdout.splitlines() if line.startswith("/")}
    # query-machines made x86_64/pc available, qom-list-types virtio-net-pci
    assert set(TARGET_PATHS) <= listed, sorted(set(TARGET_PATHS) - listed)
    # the qtest traffic (QTEST_LOG: -qtest-log /dev/fd/2, libqtest's stderr)
    assert "[R +" in out.stderr and "] endianness\n" in out.stderr
    assert "] OK little\n" in out.stderr
