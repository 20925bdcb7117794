"""system_reset: every device and function back to power-on (BARs, command
register, virtio status and queues), a vhost-user back-end told to stop
its rings before anything starts again, the guest program rebooting --
and the resets the guest asks for (0xCF9) and its ACPI soft-off; ACPI
hotplug driven by emu's guest program (it ejects what device_del asks)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from emu.machine import Machine
from emu.spec import pci as regs
from emu.vhost_user.messages import FrontendRequest as F
from tests.hostile.evil_backend import Listener
from tests.hostile.procs import Emu, vm1_args

COMMON_CFG = 0x0                     # virtio-net-pci's modern BAR4 (QEMU's layout): common config
MODERN_BAR = regs.BASE_ADDRESS_0 + 4 * 4
BAR_MEM64_PREFETCH = regs.BAR_MEM_TYPE_64 | regs.BAR_MEM_PREFETCH   # what an unassigned BAR4 reads
STATUS = COMMON_CFG + 0x14
Q_SELECT, Q_SIZE, Q_ENABLE, Q_DESC = 0x16, 0x18, 0x1C, 0x20


def run(coro):
    return asyncio.run(coro)


def test_every_function_is_back_to_power_on():
    """The state libqos leaves behind -- BARs, command, features, status,
    a queue -- is gone after the reset, in every function, chipset included."""
    async def body():
        m = Machine(name="r", ram_size=64 << 20, backend="memfd", machine_type="pc")
        m.add_virtio_net("net0", None, mac=m.nic_mac(None), addr="4.0")
        await m.start()
        p = m.system
        before = {bdf: bytes(f.config[:0x100]) for bdf, f in p.functions.items()}
        bdf = 0x20
        p.config_write(bdf, MODERN_BAR, 4, 0xE0000000)
        p.config_write(bdf, regs.COMMAND, 2, 0x7)
        p.config_write(0x08, 0x60, 4, 0x0B0B0A0A)                # PIRQ routing
        # ACPI PM base 0xC0, enabled (QEMU's reset rewrites only byte 0x40:
        # a base above 0xFF keeps its high byte, as the reference test checks)
        p.config_write(0x0B, 0x40, 4, 0xC1)
        p.config_write(0x0B, 0x80, 1, 1)
        p.pio_write(0xC2, 2, 0x0100)
        p.mmio_write(0xE0000000 + STATUS, 1, 1 | 2)
        p.mmio_write(0xE0000000 + Q_SELECT, 2, 0)
        p.mmio_write(0xE0000000 + Q_SIZE, 2, 64)
        p.mmio_write(0xE0000000 + Q_DESC, 4, 0x200000)
        assert p.mmio_read(0xE0000000 + STATUS, 1) == 3
        p.pio_write(0x510, 2, 0x19)
        p.pio_read(0x511, 1)
        await m.system_reset()
        after = {bdf: bytes(f.config[:0x100]) for bdf, f in p.functions.items()}
        assert after == before
        assert p.functions[bdf].bars[4].address is None
        assert p.pio_read(0xC2, 2) == 0xFFFF                     # the PM block went away
        fn = p.functions[bdf]
        assert fn.status == 0 and fn.queues[0].desc == 0 and fn.queues[0].size == 256
        p.pio_write(0x510, 2, 0)
        assert p.pio_read(0x511, 1) == ord("Q")
        await m.close()
    run(body())


def test_the_guest_resets_through_0xcf9_and_powers_off_through_acpi():
    async def body():
        m = Machine(name="g", ram_size=64 << 20, backend="memfd", machine_type="pc")
        events = []
        m.add_event_listener(lambda name, data: events.append((name, data)))
        await m.start()
        p = m.system
        p.config_write(0x08, 0x04, 2, 0x7)      # a register the reset takes back
        p.pio_write(0xCF9, 1, 0x02)             # the reset type alone: nothing happens
        assert p.pio_read(0xCF9, 1) == 0x02 and p.reset_requests == 0
        # (from another thread, as the guest's vCPU writes it)
        t = threading.Thread(target=p.pio_write, args=(0xCF9, 1, 0x06))
        t.start()
        t.join()
        for _ in range(200):
            if ("RESET", {"guest": True, "reason": "guest-reset"}) in events:
                break
            await asyncio.sleep(0.01)
        assert ("RESET", {"guest": True, "reason": "guest-reset"}) in events
        assert p.config_read(0x08, 0x04, 2) == 0 and p.pio_read(0xCF9, 1) == 0
        # ACPI soft-off: SLP_TYP 0 with SLP_EN in PM1a_CNT
        p.config_write(0x0B, 0x40, 4, 0x601)
        p.config_write(0x0B, 0x80, 1, 1)
        p.pio_write(0x604, 2, 0x2000)
        for _ in range(200):
            if any(n == "EMU_GUEST_POWEROFF" for n, _ in events):
                break
            await asyncio.sleep(0.01)
        assert ("EMU_GUEST_POWEROFF", {"reason": "acpi"}) in events
        await m.close()
    run(body())


@pytest.mark.peers
def test_reset_with_a_vhost_user_back_end_and_a_running_guest(tmp_path):
    """A VM1 process whose guest sends over vhost-user: system_reset stops
    both rings at the back-end (GET_VRING_BASE) before the rebooted guest
    starts them again (memory table, rings, DRIVER_OK), then RESET."""
    listener = Listener(str(tmp_path / "vu.sock"))
    vm = Emu("vm1", vm1_args(listener.path, guest="virtio-net,app=gen,size=64,rate=500"),
             str(tmp_path))
    try:
        e = listener.accept()
        e.serve_until_started()
        mark = len(e.seen)
        done = threading.Thread(target=vm.execute, args=("system_reset",), daemon=True)
        done.start()
        e.serve_until_started()
        done.join(15)
        assert not done.is_alive()
        seen = [m.request for m in e.seen[mark:]]
        stops = [i for i, r in enumerate(seen) if r == F.GET_VRING_BASE]
        table = seen.index(F.SET_MEM_TABLE)
        assert len(stops) == 2 and max(stops) < table, seen
        assert {e.seen[mark + i].payload.index for i in stops} == {0, 1}
        assert vm.events("RESET")[-1]["data"] == {"guest": False,
                                                   "reason": "host-qmp-system-reset"}
        vm.wait(lambda: vm.guest().get("sent", 0) > 0, 10, "the rebooted guest sending")
        assert vm.guest().get("error") is None
    finally:
        vm.kill()
        listener.close()


@pytest.mark.peers
def test_the_guest_program_ejects_what_device_del_asks(tmp_path):
    """device_add and device_del on a running guest: the guest's ACPI
    handling brings the new NIC up, and on device_del stops the driver of
    the slot and writes PCI_EJ -- the device goes with DEVICE_DELETED, the
    guest and its app carry on with what is left."""
    vm = Emu("hp", ["-M", "pc", "-device", "virtio-net-pci,id=n0,addr=03.0",
                    "-guest", "virtio-net,app=sink"], str(tmp_path))
    try:
        vm.wait(lambda: "app" in vm.guest(), 15, "the guest up")
        assert vm.execute("device_add", driver="virtio-net-pci", id="net1", addr="0x06") == {}
        vm.wait(lambda: any(d["id"] == "net1" for d in vm.stats()["devices"]), 10, "net1")
        assert vm.execute("device_del", id="net1") == {}
        vm.wait(lambda: len(vm.events("DEVICE_DELETED")) >= 2, 15, "net1 ejected by the guest")
        assert [e["data"] for e in vm.events("DEVICE_DELETED")] == [
            {"path": "/machine/peripheral/net1/virtio-backend"},
            {"device": "net1", "path": "/machine/peripheral/net1"}]
        assert not any(d["id"] == "net1" for d in vm.stats()["devices"])
        # the NIC the guest's app drives: the driver stops, the slot is ejected
        assert vm.execute("device_del", id="n0") == {}
        vm.wait(lambda: len(vm.events("DEVICE_DELETED")) >= 4, 15, "n0 ejected by the guest")
        assert vm.alive() and vm.execute("query-status")["status"] == "running"
        assert vm.guest().get("error") is None
    finally:
        vm.kill()


def test_system_reset_in_qtest_mode_as_libqos_sees_it():
    """The large_tx paths' second test starts with system_reset: RESET
    arrives, and the device libqos programmed is at power-on again (BARs,
    command, virtio status), ready to be set up from scratch."""
    from emu.testing.qtest import QtestMachine
    from tests.machine.qtest_pair import cfg_addr
    with QtestMachine(["-M", "pc", "-device", "virtio-net-pci,addr=04.0"]) as vm:
        q = vm.qtest
        q.outl(0xCF8, cfg_addr(0x20, MODERN_BAR))
        q.outl(0xCFC, 0xE0000000)
        q.outl(0xCF8, cfg_addr(0x20, regs.COMMAND))
        q.outw(0xCFC, 0x7)
        q.writeb(0xE0000000 + STATUS, 3)
        assert q.readb(0xE0000000 + STATUS) == 3
        assert vm.qmp.command("system_reset") == {}
        assert vm.qmp.wait_event("RESET")["data"] == {"guest": False,
                                                     "reason": "host-qmp-system-reset"}
        assert q.inw(0xCFC) == 0                                     # command
        q.outl(0xCF8, cfg_addr(0x20, MODERN_BAR))
        assert q.inl(0xCFC) == BAR_MEM64_PREFETCH                    # BAR4 unassigned
        q.outl(0xCFC, 0xE0000000)
        q.outl(0xCF8, cfg_addr(0x20, regs.COMMAND))
        q.outw(0xCFC, 0x7)
        assert q.readb(0xE0000000 + STATUS) == 0                     # virtio status
