"""docs/harness.md's qtest example is real: the file below is the page's
code block, and it brings a virtio-net-pci up register by register in an
emu started in qtest mode, its vhost-user back-end an emu vhost-pci-net VM."""
from __future__ import annotations

import os
import re

from emu.testing.launch import wait_for_path
from .qtest_virtio_net_example import bring_up_virtio_net

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "..", "docs", "harness.md")
EXAMPLE = os.path.join(HERE, "qtest_virtio_net_example.py")


def test_the_page_shows_the_example_as_it_is_tested():
    with open(DOC) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    with open(EXAMPLE) as f:
        assert f.read() in blocks


def test_virtio_net_pci_brought_up_by_hand_in_qtest_mode(emu_vm_factory):
    sock = emu_vm_factory.path("vp.sock")
    vm2 = emu_vm_factory(["-m", "64M", "-chardev", f"socket,id=c0,path={sock},server=on,wait=off",
                          "-device", "vhost-pci-net,chardev=c0,id=vp0"], name="vm2")
    wait_for_path(sock, vm2)
    mac = bring_up_virtio_net(["-chardev", f"socket,id=c0,path={sock}",
                               "-netdev", "vhost-user,id=n0,chardev=c0",
                               "-device", "virtio-net-pci,netdev=n0,addr=04.0,"
                                          "mac=52:54:00:aa:bb:cc"])
    assert mac == bytes.fromhex("525400aabbcc")
    # the qtest VM's vhost-user front-end reached VM2's back-end
    assert vm2.event_wait("VHOST_USER_CONNECTED", timeout=30)["data"]["device"] == "vp0"
