"""emu VM1 (virtio-net-pci, guest gen) <-> emu VM2 (vhost-pci-net): every
packet accounted for and its bytes checked, across memory backends,
polling and interrupt modes, ring features and descriptor layouts; the
seed's feature dance; forwarding to a third VM; peer disconnect, re-map
and return while traffic runs."""
import asyncio

import pytest

from emu.testing import vms
from emu.spec import virtio as V, virtio_net as N


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _pair(tmp_path, vm1_params, vm2_app="echo", vm2_params=None, count=20000,
                backend1="memfd", backend2="shm", **nic):
    sock = str(tmp_path / "vp.sock")
    b = vms.vm2(sock, vm2_app, vm2_params, backend=backend2)
    await b.start()
    a = vms.vm1(sock, "gen", {"count": str(count), "verify": "on", **vm1_params},
                backend=backend1, **nic)
    ev = vms.Events(a, b)
    try:
        await a.start()
        await ev.wait("EMU_GUEST_APP_DONE", "vm1", timeout=30)
        if vm2_app == "echo":
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= count,
                               timeout=20, what="echoes")
        else:
            await vms.wait_for(lambda: vms.guest_stats(b).get("received", 0) >= count,
                               timeout=20, what="VM2 sink")
        return a.emu_stats(), b.emu_stats(), ev
    finally:
        await a.close()
        await b.close()


def _check_clean(s1, s2):
    for name, dev in list(s1.items()) + list(s2.items()):
        if name == "guest":
            assert "error" not in dev, dev
            continue
        for q, st in dev["queues"].items():
            assert st["errors"] == 0, (name, q, st)
            assert st.get("verify_fail", 0) == 0, (name, q, st)
            assert st.get("seq_gaps", 0) == 0, (name, q, st)
        assert dev["guest_errors"]["total"] == 0, dev["guest_errors"]


ECHO_CASES = [
    pytest.param({}, {}, "memfd", "shm", id="poll-shm-mrg-eventidx"),
    pytest.param({"mode": "interrupt", "mrg_rxbuf": "off", "event_idx": "off"},
                 {"mode": "interrupt"}, "memfd", "memfd", id="irq-memfd-nomrg-noeventidx"),
    pytest.param({"layout": "1", "mrg_rxbuf": "off"}, {}, "shm", "shm", id="poll-hdr+data-desc"),
    pytest.param({"layout": "2", "size": "1518", "mode": "interrupt"}, {"mode": "interrupt"},
                 "memfd", "shm", id="irq-indirect-1518"),
    pytest.param({"size": "9000", "buf_size": "4096", "tx_buf_size": "9216"}, {}, "memfd", "shm",
                 id="9000-mrg-spans-3-rx-buffers"),
]


@pytest.mark.parametrize("vm1_params,vm2_params,b1,b2", ECHO_CASES)
def test_gen_echo_every_packet_back_and_verified(tmp_path, vm1_params, vm2_params, b1, b2):
    count = 20000
    s1, s2, _ = run(_pair(tmp_path, vm1_params, "echo", vm2_params, count, b1, b2))
    g = s1["guest"]
    assert g["sent"] == count and g["received"] == count
    assert s1["net0"]["queues"]["tx0"]["packets"] == count
    assert s1["net0"]["queues"]["rx0"]["packets"] == count
    peer = s2["vp0"]["queues"]
    assert peer["peer1"]["packets"] == count      # VM1's TX, read by VM2
    assert peer["peer0"]["packets"] == count      # VM1's RX, filled by VM2
    assert peer["peer1"]["drops"] == 0
    _check_clean(s1, s2)


def test_sink_one_copy_into_vm2_memory(tmp_path):
    count = 30000
    s1, s2, _ = run(_pair(tmp_path, {"size": "256"}, "sink", {"verify": "on"}, count))
    assert s2["guest"]["received"] == count
    assert s2["vp0"]["queues"]["rx0"]["packets"] == count      # VM2's own RX ring
    assert s2["vp0"]["queues"]["rx0"]["bytes"] == count * 256
    assert s2["vp0"]["queues"]["peer1"]["packets"] == count
    _check_clean(s1, s2)


def test_vhost_pci_extension_negotiated_between_emus(tmp_path):
    s1, s2, ev = run(_pair(tmp_path, {}, "echo", {}, 1000))
    conn = [d for m, n, d in ev.items if m == "vm1" and n == "VHOST_USER_CONNECTED"][0]
    assert conn["vhost-pci"] is True
    assert s2["vp0"]["peer_state"] & 8        # PS_VHOST_PCI in the metadata


def test_feature_dance_vm1_renegotiates_with_vm2s_subset(tmp_path):
    """VM2's driver drops MRG_RXBUF: VM2 pushes SET_FEATURES, VM1's device
    sets NEEDS_RESET, VM1's driver renegotiates without it, traffic goes on."""
    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        await b.start()
        a = vms.vm1(sock, "gen", {"count": "0", "rate": "200000", "verify": "on"})
        ev = vms.Events(a, b)
        try:
            await a.start()
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) > 2000, what="traffic")
            drv = a.guest.drivers[0]
            assert drv.features & N.F_MRG_RXBUF
            b.guest.request("reconfigure", {"mrg_rxbuf": "off"})
            await ev.wait("EMU_GUEST_RENEGOTIATED", "vm1", timeout=10)
            assert not drv.features & N.F_MRG_RXBUF
            assert drv.features & V.F_VERSION_1
            before = vms.guest_stats(a)["received"]
            await vms.wait_for(lambda: vms.guest_stats(a)["received"] > before + 2000,
                               what="traffic after renegotiation")
            assert a.devices["net0"].model.renegotiations == 1
            pushed = [d for m, n, d in ev.items if m == "vm1" and n == "VHOST_USER_FEATURES_CHANGED"]
            assert not pushed[-1]["features"] & N.F_MRG_RXBUF
            s1, s2 = a.emu_stats(), b.emu_stats()
            _check_clean(s1, s2)
        finally:
            await a.close()
            await b.close()
    run(body())


def test_forward_vm1_to_vm3_through_vm2_one_copy(tmp_path):
    async def body():
        s_a, s_b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
        hub = vms.vm2([s_a, s_b], "forward")
        await hub.start()
        count = 20000
        vm1 = vms.vm1(s_a, "gen", {"count": str(count), "verify": "on",
                                   "dst": "52:54:00:00:00:03"}, name="vm1")
        vm3 = vms.vm1(s_b, "sink", {"verify": "on"}, mac=vms.MAC3, name="vm3")
        try:
            await vm3.start()
            await vm1.start()
            await vms.wait_for(lambda: vms.guest_stats(vm3).get("received", 0) >= count,
                               timeout=30, what="VM3 receives all")
            s3, sh = vm3.emu_stats(), hub.emu_stats()
            assert s3["net0"]["queues"]["rx0"]["packets"] == count
            # one copy per packet: VM1's TX chains went straight into VM3's RX chains
            assert sh["vp0"]["queues"]["peer1"]["packets"] == count
            assert sh["vp1"]["queues"]["peer0"]["packets"] == count
            assert sh["guest"]["forwarded"] == count
            _check_clean(vm1.emu_stats(), s3)
            _check_clean(sh, {})
        finally:
            await vm1.close()
            await vm3.close()
            await hub.close()
    run(body())


def test_peer_remap_disconnect_and_return_while_traffic_runs(tmp_path):
    """A re-map (VM1 reset) and a disconnect (VM1 gone) while VM2 copies:
    VM2's driver lets go of the window before it is unmapped (no
    revocation), VM2 survives, and a new VM1 gets traffic through."""
    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        await b.start()
        ev = vms.Events(b)
        a = vms.vm1(sock, "gen", {"count": "0", "verify": "on"})
        await a.start()
        try:
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) > 20000, what="traffic")
            gen0 = b.emu_stats()["vp0"]["generation"]
            await a.system_reset()        # VM1 reboots: rings stop, memory re-sent
            await vms.wait_for(lambda: b.emu_stats()["vp0"]["generation"] > gen0 + 4,
                               what="re-map seen by VM2")
            n = vms.guest_stats(a)["received"]
            await vms.wait_for(lambda: vms.guest_stats(a)["received"] > n + 20000,
                               what="traffic after re-map")
        finally:
            await a.close()
        await ev.wait("VHOST_USER_DISCONNECTED", "vm2")
        st = b.emu_stats()["vp0"]
        assert st["peer_state"] == 0
        assert st["window_revocations"] == 0 and st["ack_timeouts"] == 0
        assert not b.devices["vp0"].model.window.mapped
        a2 = vms.vm1(sock, "gen", {"count": "5000", "verify": "on"})
        try:
            await a2.start()
            await vms.wait_for(lambda: vms.guest_stats(a2).get("received", 0) >= 5000,
                               what="second VM1 gets its echoes")
            _check_clean(a2.emu_stats(), b.emu_stats())
        finally:
            await a2.close()
            await b.close()
    run(body())


def test_disabled_peer_vring_carries_nothing_and_resumes_where_it_was(tmp_path):
    """SET_VRING_ENABLE 0 on VM1's TX ring: VM2's copy loop leaves it alone;
    enabled again, it carries on from the same place (nothing lost, nothing
    sent twice)."""
    from emu.vhost_user.messages import FrontendRequest as F, VringState

    async def body():
        sock = str(tmp_path / "vp.sock")
        b = vms.vm2(sock, "echo")
        await b.start()
        a = vms.vm1(sock, "gen", {"count": "0", "rate": "100000", "verify": "on"})
        try:
            await a.start()
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) > 2000, what="traffic")
            client = a.netdevs["n0"].client
            await client.call(F.SET_VRING_ENABLE, VringState(1, 0), need_reply=True)
            await asyncio.sleep(0.2)                  # VM2 rebuilds without the ring
            frozen = b.emu_stats()["vp0"]["queues"]["peer1"]["packets"]
            await asyncio.sleep(0.3)
            assert b.emu_stats()["vp0"]["queues"]["peer1"]["packets"] == frozen
            await client.call(F.SET_VRING_ENABLE, VringState(1, 1), need_reply=True)
            await vms.wait_for(
                lambda: b.emu_stats()["vp0"]["queues"]["peer1"]["packets"] > frozen + 2000,
                what="traffic after re-enable")
            s1, s2 = a.emu_stats(), b.emu_stats()
            _check_clean(s1, s2)               # no index jump: the position was kept
        finally:
            await a.close()
            await b.close()
    run(body())
