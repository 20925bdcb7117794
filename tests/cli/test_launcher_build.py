"""emu.launcher.build: a configuration becomes a Machine, or a StartupError
naming the option at fault -- and then nothing is left behind."""
from __future__ import annotations

import glob
import os

import pytest

from emu.cli import parse_args
from emu.config import GuestConfig, MachineConfig
from emu.launcher import StartupError, build_machine


def _shm() -> set[str]:
    return set(glob.glob(f"/dev/shm/emu-{os.getpid()}-*"))


def test_a_failure_half_way_releases_what_was_built(tmp_path, no_fd_leak):
    # the first capture opens its file; the second fails on the same queues
    first, second = tmp_path / "a.pcap", tmp_path / "b.pcap"
    cfg = parse_args(["-m", "16M", "-chardev", f"socket,id=c0,path={tmp_path / 'vu.sock'}",
                      "-netdev", "vhost-user,id=n0,chardev=c0", "-device", "virtio-net-pci,netdev=n0",
                      "-object", f"filter-dump,id=f0,netdev=n0,file={first}",
                      "-object", f"filter-dump,id=f1,netdev=n0,file={second},queue=rx"])
    shm = _shm()
    with pytest.raises(StartupError) as e:
        build_machine(cfg, lambda name, data: None)
    assert str(e.value) == (f"-object filter-dump,id=f1,netdev=n0,file={second},queue=rx: "
                            "filter-dump: 'n0' rx frames are already captured")
    # the capture file start-up created is removed again: a failed start leaves nothing
    assert not first.exists() and not second.exists()
    assert _shm() == shm                        # guest RAM unlinked; no_fd_leak: the pcap closed
    # a file that was there before is not ours to remove
    first.write_bytes(b"older")
    with pytest.raises(StartupError):
        build_machine(cfg, lambda name, data: None)
    assert first.exists() and not second.exists()


def test_a_guest_config_not_from_the_parser_is_checked_too(no_fd_leak):
    cfg = MachineConfig(ram_size=16 << 20,
                        guest=GuestConfig("virtio-net", "gen", {"burst": "-1"}, origin="-guest X"))
    shm = _shm()
    with pytest.raises(StartupError) as e:
        build_machine(cfg, lambda name, data: None)
    assert str(e.value) == ("-guest X: Parameter 'burst' expects a non-negative integer "
                            "(suffix k, m or g: times 10^3, 10^6 or 10^9)")
    assert _shm() == shm
    cfg.guest = GuestConfig("virtio-net", "gen", {}, origin="-guest Y")
    with pytest.raises(StartupError) as e:
        build_machine(cfg, lambda name, data: None)
    assert str(e.value) == "-guest Y: app=gen needs a virtio-net-pci device"


def test_a_good_config_builds_every_device(tmp_path):
    import asyncio
    cfg = parse_args(["-m", "16M", "-chardev", f"socket,id=c0,path={tmp_path / 'vu.sock'}",
                      "-netdev", "vhost-user,id=n0,chardev=c0",
                      "-device", "virtio-net-pci,netdev=n0,id=nic0,addr=5",
                      "-chardev", f"socket,id=c1,path={tmp_path / 'vp.sock'},server=on,wait=off",
                      "-device", "vhost-pci-net,chardev=c1,id=vp0,mac=52:54:00:00:00:09",
                      "-guest", "virtio-net,app=sink,burst=64"])
    m = build_machine(cfg, lambda name, data: None)
    try:
        assert {e.id: e.driver for e in m.devices.values()} == {"nic0": "virtio-net-pci",
                                                                "vp0": "vhost-pci-net"}
        assert m.devices["nic0"].bdf >> 3 == 5
        assert m.devices["vp0"].props["mac"] == bytes.fromhex("525400000009")
        assert m.guest_spec == ("virtio-net", "sink", {"burst": 64})
    finally:
        asyncio.run(m.close())
