"""filter-dump as docs/harness.md has it: on a vhost-pci-net device's id
too, and a VM that does not start leaves no capture file behind."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from emu.testing.launch import vm1_args, vm2_args, wait_for_path, wait_until

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def pcap_records(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    magic, _, _, _, _, snaplen, link = struct.unpack_from("<IHHiIII", data)
    assert (magic, link) == (0xA1B2C3D4, 1)
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, off)
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


def test_filter_dump_on_a_vhost_pci_net_device(emu_vm_factory):
    sock, pcap = emu_vm_factory.path("vp.sock"), emu_vm_factory.path("vp0.pcap")
    vm2 = emu_vm_factory(vm2_args(sock, ram="64M")
                         + ["-object", f"filter-dump,id=f0,netdev=vp0,file={pcap},queue=rx"],
                         name="vm2")
    wait_for_path(sock, vm2)
    emu_vm_factory(vm1_args(sock, ram="64M", params={"size": 128, "count": 500}), name="vm1")

    def captured():
        caps = next(d for d in vm2.cmd("query-emu-stats")["devices"] if d["id"] == "vp0")["captures"]
        return caps[0]["frames"] >= 500 and caps[0]
    cap = wait_until(captured, timeout=60, what="500 frames captured")
    assert cap["file"] == pcap and cap["errors"] == 0
    frames = pcap_records(pcap)
    assert len(frames) >= 500 and {len(f) for f in frames} == {128}


def test_a_vm_that_does_not_start_leaves_no_capture(emu_binary, tmp_path):
    pcap = tmp_path / "n0.pcap"
    # the netdev's back-end is not there: start-up fails after the capture was opened
    r = subprocess.run([*emu_binary, "-m", "64M", "-display", "none",
                        "-chardev", f"socket,id=c0,path={tmp_path / 'nobody.sock'}",
                        "-netdev", "vhost-user,id=n0,chardev=c0",
                        "-device", "virtio-net-pci,netdev=n0",
                        "-object", f"filter-dump,id=f0,netdev=n0,file={pcap}"],
                       capture_output=True, text=True, timeout=120)
    # (the -chardev the socket error is about, in QEMU's words)
    assert r.returncode == 1 and r.stderr.startswith(
        f"emu: -chardev socket,id=c0,path={tmp_path / 'nobody.sock'}: Failed to connect to "), r.stderr
    assert not pcap.exists(), os.listdir(tmp_path)
    assert os.listdir(tmp_path) == []
