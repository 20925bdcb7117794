"""emu VM1 (virtio-net-pci) <-> emu VM2 (vhost-pci-net) with packed rings
on either side and both: VM1's rings packed (packed=on) or split, VM2's own
queues packed or split; every packet accounted for and its bytes checked,
sink (one copy into VM2's own RX ring), echo (VM1 TX -> VM1 RX) and a
GET_VRING_BASE at the end that carries the wrap counters."""
import asyncio

import pytest

from emu.spec import vhost_pci_net as S, virtio as V

from emu.testing import vms

from .test_vhost_pci_pair import _check_clean


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def _pair(tmp_path, vm1_packed: bool, vm2_packed: bool, app: str, count: int,
                vm1_params=None, vm2_params=None):
    sock = str(tmp_path / "vp.sock")
    b = vms.vm2(sock, app, vm2_params or {}, packed=vm2_packed)
    await b.start()
    a = vms.vm1(sock, "gen", {"count": str(count), "verify": "on", **(vm1_params or {})},
                packed=vm1_packed)
    ev = vms.Events(a, b)
    try:
        await a.start()
        await ev.wait("EMU_GUEST_APP_DONE", "vm1", timeout=30)
        if app == "echo":
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= count,
                               timeout=30, what="echoes")
        else:
            await vms.wait_for(lambda: vms.guest_stats(b).get("received", 0) >= count,
                               timeout=30, what="VM2 sink")
        formats = (a.guest.drivers[0].features, b.guest.drivers[0].features,
                   b.guest.drivers[0].peer)
        return a.emu_stats(), b.emu_stats(), formats
    finally:
        await a.close()
        await b.close()


FORMATS = [pytest.param(True, False, id="vm1-packed-vm2-split"),
           pytest.param(False, True, id="vm1-split-vm2-packed"),
           pytest.param(True, True, id="both-packed")]


@pytest.mark.parametrize("vm1_packed,vm2_packed", FORMATS)
def test_sink_one_copy_between_formats(tmp_path, vm1_packed, vm2_packed):
    count = 30000
    s1, s2, (f1, f2, peer) = run(_pair(tmp_path, vm1_packed, vm2_packed, "sink", count,
                                        {"size": "256"}, {"verify": "on"}))
    assert bool(f1 & V.F_RING_PACKED) == vm1_packed
    assert bool(f2 & V.F_RING_PACKED) == vm2_packed
    # the metadata says which format each peer vring uses
    assert [v.packed for v in peer.vrings[:2]] == [vm1_packed, vm1_packed]
    assert s2["guest"]["received"] == count
    q = s2["vp0"]["queues"]
    assert q["peer1"]["packets"] == q["rx0"]["packets"] == count
    assert q["rx0"]["bytes"] == count * 256
    assert s1["net0"]["queues"]["tx0"]["packets"] == count
    _check_clean(s1, s2)


@pytest.mark.parametrize("vm1_params", [{}, {"layout": "1", "mrg_rxbuf": "off"},
                                        {"layout": "2", "size": "1518", "mode": "interrupt"}],
                         ids=["one-desc", "hdr+data", "indirect-1518-irq"])
def test_packed_vm1_echo_through_vm2(tmp_path, vm1_params):
    count = 20000
    s1, s2, _ = run(_pair(tmp_path, True, False, "echo", count, vm1_params,
                          {"mode": vm1_params.get("mode", "poll")}))
    g = s1["guest"]
    assert g["sent"] == g["received"] == count
    peer = s2["vp0"]["queues"]
    assert peer["peer1"]["packets"] == peer["peer0"]["packets"] == count
    assert peer["peer1"]["drops"] == 0
    _check_clean(s1, s2)


def test_packed_vring_base_carries_the_wrap_counter(tmp_path):
    """VM1 resets its NIC while traffic ran: the device stops the back-end's
    rings (GET_VRING_BASE), and VM2's answer is where its driver left each
    packed ring -- position and wrap counter, both halves."""
    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        await b.start()
        a = vms.vm1(sock, "gen", {"count": "1000", "verify": "on"}, packed=True)
        ev = vms.Events(a, b)
        try:
            await a.start()
            await ev.wait("EMU_GUEST_APP_DONE", "vm1", timeout=30)
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= 1000,
                               what="echoes")
            nic = a.devices["net0"].model
            bases = await nic.netdev.client.stop()
            nic.started = False
            return bases
        finally:
            await a.close()
            await b.close()
    bases = run(body())
    # 1000 single-descriptor chains on 256-descriptor rings: position 1000 % 256,
    # wrap counter 1 ^ (1000 // 256 odd) -- TX; RX as many completions
    pos, wrap = 1000 % 256, (1 + 1000 // 256) & 1
    half = pos | wrap << 15
    assert bases[1] == half | half << 16


def test_vhost_pci_driver_reports_packed_positions_through_the_config(tmp_path):
    """peer_vq_base (docs/vhost-pci-device.md §4): the device reads back
    what the driver wrote for the selected vring."""
    from emu.virtio.vhost_pci_net import VhostPciNetDevice
    dev = VhostPciNetDevice(mac=bytes(6), peer_vq_max=4, window_size=1 << 24)
    try:
        for i, base in ((1, 0x8005), (3, 0x0007)):
            dev.config_write(S.CFG_VQ_SELECT, 2, i)
            dev.config_write(S.CFG_VQ_BASE, 4, base)
        dev.config_write(S.CFG_VQ_SELECT, 2, 1)
        assert dev.config_read(S.CFG_VQ_BASE, 4) == 0x8005
        assert dev.peer.driver_bases == [None, 0x8005, None, 0x0007]
    finally:
        dev.close()


def test_vm2_reboot_resumes_packed_peer_rings_where_its_driver_left_them(tmp_path):
    """VM2 reboots (system_reset) while VM1's packed rings stay up: a packed
    ring keeps no index in memory, so VM2's driver leaves its positions with
    the device (peer_vq_base) before the reset and the rebooted driver takes
    the rings up there -- not at the vring's base, where it would wait on
    descriptors VM1 made available laps ago."""
    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        await b.start()
        # 1000 chains on 256-descriptor rings: position 232 in wrap 0, far
        # from the base (position 0 in wrap 1)
        a = vms.vm1(sock, "gen", {"count": "1000", "verify": "on"}, packed=True)
        ev = vms.Events(a, b)
        rx = lambda: a.emu_stats()["net0"]["queues"]["rx0"]["packets"]   # noqa: E731
        try:
            await a.start()
            await ev.wait("EMU_GUEST_APP_DONE", "vm1", timeout=30)
            await vms.wait_for(lambda: rx() >= 1000, timeout=30, what="echoes")
            await b.system_reset()
            peer = b.guest.drivers[0].peer
            assert [v.packed for v in peer.vrings[:2]] == [True, True]
            done = asyncio.get_running_loop().create_future()
            again = a.guest.check_app("gen", {"count": "1000", "verify": "on"})
            a.guest.request("set_app", "gen", again,
                            lambda e: done.get_loop().call_soon_threadsafe(done.set_result, e))
            assert await asyncio.wait_for(done, 30) is None
            await vms.wait_for(lambda: rx() >= 2000, timeout=30,
                               what="echoes after VM2's reboot")
            bases = [q.last_avail_idx for _, q in (b.guest.drivers[0].live_peer[i]
                                                   for i in (0, 1))]
            return a.emu_stats(), b.emu_stats(), bases
        finally:
            await a.close()
            await b.close()
    s1, s2, bases = run(body())
    q1 = s1["net0"]["queues"]
    assert q1["tx0"]["packets"] == q1["rx0"]["packets"] == 2000
    # 2000 chains: position 2000 % 256 in wrap 1 ^ (2000 // 256 odd), both rings
    assert bases == [2000 % 256 | ((1 + 2000 // 256) & 1) << 15] * 2
    _check_clean(s1, s2)


@pytest.mark.parametrize("vm1_packed,vm3_packed", FORMATS)
def test_forward_vm1_to_vm3_through_vm2_between_formats(tmp_path, vm1_packed, vm3_packed):
    """VM2's forward app: VM1's TX chains straight into VM3's RX chains, one
    copy, whatever format each peer's rings are."""
    async def body():
        s_a, s_b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
        hub = vms.vm2([s_a, s_b], "forward")
        await hub.start()
        count = 20000
        vm1 = vms.vm1(s_a, "gen", {"count": str(count), "verify": "on",
                                   "dst": "52:54:00:00:00:03"}, name="vm1", packed=vm1_packed)
        vm3 = vms.vm1(s_b, "sink", {"verify": "on"}, mac=vms.MAC3, name="vm3",
                      packed=vm3_packed)
        try:
            await vm3.start()
            await vm1.start()
            await vms.wait_for(lambda: vms.guest_stats(vm3).get("received", 0) >= count,
                               timeout=30, what="VM3 receives all")
            f1, f3 = (vm.guest.drivers[0].features & V.F_RING_PACKED for vm in (vm1, vm3))
            return vm1.emu_stats(), vm3.emu_stats(), hub.emu_stats(), bool(f1), bool(f3)
        finally:
            await vm1.close()
            await vm3.close()
            await hub.close()
    s1, s3, sh, f1, f3 = run(body())
    assert (f1, f3) == (vm1_packed, vm3_packed)
    assert s3["guest"]["received"] == s3["net0"]["queues"]["rx0"]["packets"] == 20000
    assert sh["vp0"]["queues"]["peer1"]["packets"] == 20000
    assert sh["vp1"]["queues"]["peer0"]["packets"] == 20000
    assert sh["guest"]["forwarded"] == 20000
    _check_clean(s1, s3)
    _check_clean(sh, {})


def test_packed_control_queue_enables_both_pairs(tmp_path):
    """mq=on with packed=on: the guest's VQ_PAIRS_SET goes through a packed
    control queue, which the device model serves itself (as QEMU); then
    both pairs carry traffic, each packet back on the pair it left by."""
    from emu.machine import Machine
    from emu.netdev import SocketSpec
    from emu.spec import virtio_net as N

    async def body():
        sock = str(tmp_path / "vp.sock")
        b = Machine(name="vm2", ram_size=64 << 20, backend="shm")
        b.add_chardev(SocketSpec("c0", path=sock, server=True, wait=False))
        b.add_vhost_pci_net("vp0", "c0", mac=vms.MAC2, queue_pairs=2)
        b.set_guest("vhost-pci-net", "echo", {})
        a = Machine(name="vm1", ram_size=64 << 20, backend="memfd")
        a.add_chardev(SocketSpec("c0", path=sock))
        a.add_netdev_vhost_user("n0", "c0", queues=2)
        a.add_virtio_net("net0", "n0", mac=vms.MAC1, mq=True, packed=True)
        a.set_guest("virtio-net", "gen", {"count": "20000", "verify": "on"})
        await b.start()
        try:
            await a.start()
            try:
                await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= 20000,
                                   timeout=30, what="echoes on every pair")
                return (a.emu_stats(), b.emu_stats(), a.guest.drivers[0].features,
                        a.devices["net0"].function.errors.total)
            finally:
                await a.close()
        finally:
            await b.close()
    s1, s2, features, guest_errors = run(body())
    assert features & V.F_RING_PACKED and features & N.F_MQ and features & N.F_CTRL_VQ
    assert guest_errors == 0
    q1, q2 = s1["net0"]["queues"], s2["vp0"]["queues"]
    for k in range(2):
        sent = q1[f"tx{k}"]["packets"]
        assert sent == 10000 and q1[f"rx{k}"]["packets"] == sent, (k, q1)
        assert q2[f"peer{2 * k + 1}"]["packets"] == q2[f"peer{2 * k}"]["packets"] == sent
