"""QEMU 7.2's unmodified qos-test drives emu (``QTEST_QEMU_BINARY`` =
``emu-system-x86_64``): its probe makes every virtio-net-pci path
available, and each path of the issue passes -- a ``# SKIP`` is a failure.

The six paths need the whole of emu's QEMU-facing work: the qtest
accelerator (this branch), the pc machine (chipset, hotplug, system_reset)
and virtio-net-pci's internal data path (socket/hubport netdevs,
announce-self).  docs/qtest.md has the table of every path, from
scripts/qos-table.py."""
from __future__ import annotations

import pytest

from emu.testing.qos import FAIL, PASS, SKIP, list_paths, parse, run_path
from emu.testing.qtest import emu_binary
from .qemu_build import BUILD_TIMEOUT
from .test_build_script import TARGET_PATHS

P = "/x86_64/pc/i440FX-pcihost/pci-bus-pc/pci-bus/virtio-net-pci"
ISSUE_PATHS = [f"{P}/virtio-net-pci-tests/hotplug"] + [
    f"{P}/virtio-net/virtio-net-tests/{t}"
    for t in ("basic", "rx_stop_cont", "announce-self", "large_tx/uint_max",
              "large_tx/net_bufsize")]


def emu_system_x86_64() -> str:
    binary = emu_binary()
    assert len(binary) == 1, "the emu-system-x86_64 console script is not installed"
    return binary[0]


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_qos_tests_probe_of_emu_makes_every_target_path_available(qemu_tests, tmp_path):
    listed = set(list_paths(qemu_tests["QOS_TEST"], emu_system_x86_64(), cwd=str(tmp_path)))
    assert set(TARGET_PATHS) <= listed, sorted(set(TARGET_PATHS) - listed)
    # nothing of a device emu does not have
    assert all(p.startswith(f"{P}/") for p in listed), sorted(listed)


# vhost-user paths whose test server offers no VERSION_1: the device is legacy-only
# (QEMU drops the modern interface), as libqos then drives it; the control queue
# exists whatever the features (libqos sets up 2 * pairs + 1 queues)
LEGACY_VHOST_USER_PATHS = [f"{P}/virtio-net/virtio-net-tests/vhost-user/{t}"
                           for t in ("read-guest-mem/memfd", "read-guest-mem/memfile",
                                     "multiqueue")]


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("path", ISSUE_PATHS + LEGACY_VHOST_USER_PATHS,
                         ids=lambda p: p.split("virtio-net-pci/", 1)[1])
def test_qos_test_path_passes_against_emu(qemu_tests, tmp_path, path):
    """The path run alone, as CI runs it; a SKIP is a failure."""
    r = run_path(qemu_tests["QOS_TEST"], emu_system_x86_64(), path, cwd=str(tmp_path))
    assert r.status == PASS, r.summary()


# -- reading qos-test's output ---------------------------------------------------------------

PATH = f"{P}/virtio-net/virtio-net-tests/basic"
HEAD = "# random seed: R02S\n# Start of x86_64 tests\n"


def test_a_pass_is_an_ok_line_for_the_path_and_status_0():
    r = parse(PATH, 0, f"{HEAD}ok 1 {PATH}\n# End of x86_64 tests\n1..1\n", "")
    assert (r.status, r.reason) == (PASS, "")


def test_a_skip_is_never_a_pass():
    r = parse(PATH, 0, f"{HEAD}ok 1 {PATH} # SKIP no memfd\n1..1\n", "")
    assert (r.status, r.reason) == (SKIP, "no memfd")
    assert parse(PATH, 0, f"{HEAD}ok 1 {PATH} # SKIP\n1..1\n", "").status == SKIP


def test_failures_say_why():
    stderr = ("emu: -netdev hubport,hubid=0,id=hs0: Parameter 'type' does not accept value "
              "'hubport'\nsocket_accept failed: Resource temporarily unavailable\n")
    bail = ("Bail out! ERROR:../src/tests/qtest/libqtest.c:436:qtest_init_without_qmp_handshake:"
            " assertion failed: (s->fd >= 0 && s->qmp_fd >= 0)")
    r = parse(PATH, -6, f"{HEAD}{bail}\n", stderr)
    assert r.status == FAIL and r.reason.startswith("-netdev hubport,hubid=0,id=hs0: Parameter")
    r = parse(PATH, -6, f"{HEAD}{bail}\n", "")
    assert r.status == FAIL and r.reason.startswith("ERROR:../src/tests/qtest/libqtest.c")
    # a subprocess test: the child's assertion, not the parent's report of it
    child = ("ERROR:../src/tests/qtest/libqos/virtio-net.c:160:virtio_net_pci_create: assertion "
             "failed (interface->vdev->device_type == VIRTIO_ID_NET): (0x00001af4 == 0x00000001)")
    parent = ("ERROR:../src/tests/qtest/qos-test.c:191:subprocess_run_one_test: child process "
              f"({PATH}/subprocess [1]) failed unexpectedly")
    r = parse(PATH, 134, f"{HEAD}Bail out! {parent}\n", f"**\n{child}\n**\n{parent}\n")
    assert r.reason == child
    assert parse(PATH, 1, f"{HEAD}not ok 1 {PATH}\n", "").status == FAIL
    assert parse(PATH, 0, f"{HEAD}1..0\n", "").reason.startswith("no result for the path")
    assert parse(PATH, None, HEAD, "").reason.startswith("no result within")
    # an ok line for another path does not count
    assert parse(PATH, 0, f"{HEAD}ok 1 {PATH}/other\n", "").status == FAIL
    # exit status non-zero after an ok line (libqtest's kill_qemu check at exit)
    assert parse(PATH, 134, f"{HEAD}ok 1 {PATH}\n", "kill_qemu() tried to terminate").status == FAIL
