"""The options that shape the machine: -m, -smp, -numa, -object
memory-backend-* (QEMU's trailing comma), -machine max-ram-below-4g, -set,
-global; errors as QEMU 7.2 prints them (checked against the reference
binary where it has the option)."""
from __future__ import annotations

import subprocess

import pytest

from emu.cli import CommandLineError, parse_args
from emu.config import VirtioNetPCI
from tests.qtest.conftest import qemu_tests  # noqa: F401  (the fixture)
from tests.qtest.qemu_build import BUILD_TIMEOUT

VU = ["-chardev", "socket,id=c0,path=/tmp/vu.sock", "-netdev", "vhost-user,id=hs0,chardev=c0"]
M = 1 << 20


def parse(argv: list[str]):
    return parse_args(argv)


def error(argv: list[str]) -> str:
    with pytest.raises(CommandLineError) as e:
        parse(argv)
    return str(e.value)


def test_the_vhost_user_tests_command_line():
    """What QEMU's vhost-user-test passes (REQUIREMENTS 1.4), trailing comma included."""
    cfg = parse(["-M", "pc", "-device", "virtio-net-pci,netdev=hs0,addr=04.0,mq=on", "-m", "256",
                 "-object", "memory-backend-memfd,id=mem,size=256M,", "-numa", "node,memdev=mem",
                 *VU, "-set", "netdev.hs0.queues=2", "-global", "virtio-net-pci.vectors=6"])
    assert cfg.machine_type == "pc" and cfg.ram_size == 256 * M
    assert cfg.ram.qom_type == "memory-backend-memfd" and cfg.ram.size == 256 * M and cfg.ram.share
    assert cfg.numa_memdevs == ["mem"]
    assert cfg.netdev("hs0").queues == 2
    dev = cfg.devices[0]
    assert isinstance(dev, VirtioNetPCI) and dev.vectors == 6 and dev.mq is True
    assert dev.addr.slot == 4


def test_file_backend_as_the_memfile_test_passes_it(tmp_path):
    cfg = parse(["-m", "256", "-object",
                 f"memory-backend-file,id=mem,size=256M,mem-path={tmp_path},share=on",
                 "-numa", "node,memdev=mem"])
    assert cfg.ram.backend == "file" and cfg.ram.mem_path == str(tmp_path) and cfg.ram.share


def test_smp_topology():
    cfg = parse(["-smp", "4"])
    assert (cfg.smp, cfg.max_cpus) == (4, 4)
    cfg = parse(["-smp", "cpus=2,maxcpus=8"])
    assert (cfg.smp, cfg.max_cpus) == (2, 8)
    cfg = parse(["-smp", "sockets=2,cores=2,threads=2"])
    assert (cfg.smp, cfg.max_cpus) == (8, 8)
    assert parse([]).smp == 1


def test_set_changes_an_option_given_before_it():
    cfg = parse([*VU, "-device", "virtio-net-pci,id=n1,netdev=hs0", "-device",
                 "virtio-net-pci,id=n2", "-set", "device.n1.mac=52:54:00:aa:bb:cc",
                 "-set", "device.n1.mq=on"])
    assert [d.id for d in cfg.devices] == ["n1", "n2"]           # keeps its place
    assert cfg.devices[0].mac == "52:54:00:aa:bb:cc" and cfg.devices[0].mq is True
    assert cfg.devices[0].netdev == "hs0"
    assert cfg.devices[0].origin == ("-device virtio-net-pci,id=n1,netdev=hs0,"
                                     "mac=52:54:00:aa:bb:cc,mq=on")


def test_set_checks_what_it_sets():
    err = error([*VU, "-set", "netdev.hs0.queues=x"])
    assert err.startswith("-set netdev.hs0.queues=x: Parameter 'queues'")


def test_global_applies_to_every_device_of_its_driver_even_given_later():
    cfg = parse(["-device", "virtio-net-pci,id=a", "-global", "virtio-net-pci.vectors=6",
                 "-device", "virtio-net-pci,id=b,vectors=2",
                 "-global", "driver=virtio-net-pci,property=mrg_rxbuf,value=off"])
    assert [d.vectors for d in cfg.devices] == [6, 2]            # an explicit one wins
    assert [d.mrg_rxbuf for d in cfg.devices] == [False, False]
    # a driver emu does not have: accepted, nothing to apply it to
    assert parse(["-global", "kvm-pit.lost_tick_policy=discard"]).globals[0].driver == "kvm-pit"


def test_max_ram_below_4g():
    assert parse(["-M", "pc,max-ram-below-4g=2G"]).max_ram_below_4g == 2 << 30


def test_netdev_without_nic_warns_as_qemu():
    assert parse(VU).messages == ["warning: netdev hs0 has no peer"]


# QEMU 7.2's own texts (emu prints them after "emu: ", QEMU after its name)
ERRORS = [
    (["-smp", "4,maxcpus=2"], "Invalid CPU topology: maxcpus must be equal to or greater "
     "than smp: sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)"),
    (["-smp", "300"], "Invalid SMP CPUs 300. The max CPUs supported by machine "
     "'pc-i440fx-7.2' is 255"),
    (["-M", "q35", "-smp", "300"], "Invalid SMP CPUs 300. The max CPUs supported by machine "
     "'pc-q35-7.2' is 288"),
    (["-smp", "2,sockets=2,cores=2"], "Invalid CPU topology: product of the hierarchy must "
     "match maxcpus: sockets (2) * dies (1) * cores (2) * threads (0) != maxcpus (2)"),
    (["-set", "netdev.hs0.queues=2"], '-set netdev.hs0.queues=2: there is no netdev "hs0" defined'),
    (["-set", "foo"], '-set foo: can\'t parse: "foo"'),
    (["-set", "device.x.y=1"], '-set device.x.y=1: there is no device "x" defined'),
    (["-global", "virtio-net-pci.foo=1", "-device", "virtio-net-pci"],
     "can't apply global virtio-net-pci.foo=1: Property 'virtio-net-pci.foo' not found"),
    (["-global", "virtio-net-pci=1"], "-global virtio-net-pci=1: Invalid parameter "
     "'virtio-net-pci'"),
    (["-M", "pc,max-ram-below-4g=5G"], "Machine option 'max-ram-below-4g=5368709120' expects "
     "size less than or equal to 4G"),
    (["-numa", "node,memdev=m", "-object", "memory-backend-memfd,id=m,size=64M"],
     "total memory for NUMA nodes (0x4000000) should equal RAM size (0x8000000)"),
    (["-numa", "node,memdev=m", "-object", "memory-backend-memfd,id=m,size=64M", "-m", "128M"],
     "total memory for NUMA nodes (0x4000000) should equal RAM size (0x8000000)"),
]


@pytest.mark.parametrize("argv,text", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_errors_are_qemus(argv, text):
    assert error(argv).endswith(text)


@pytest.mark.peers
@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("argv,text", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_the_reference_says_the_same(qemu_tests, argv, text):  # noqa: F811
    out = subprocess.run([qemu_tests["QEMU_REFERENCE"], "-M", "pc", "-display", "none",
                          "-accel", "qtest", "-nodefaults", *argv], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and text in out.stderr, out.stderr
