"""virtio-net-pci with its data path inside emu, end to end: emu's guest
driver (over the modern and the legacy interface) on a machine whose NIC
has a ``-netdev socket`` to a peer *process* (tests/peers/net_peer.py,
frames built and checked with dpkt) -- inherited fd, listen=, connect= --
or a ``-netdev hubport`` to another NIC; stop/cont and reset under
traffic; the peer's end of the stream going away."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from emu.machine import Machine
from emu.spec import virtio as V, virtio_net as N

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAC = bytes.fromhex("525400000001")


def wait_until(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Peer:
    """tests/peers/net_peer.py in its own process."""

    def __init__(self, mode: str, *args: str, fd: int | None = None):
        where = ["--fd", str(fd)] if fd is not None else []
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.peers.net_peer", mode,
                                      *where, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     pass_fds=(fd,) if fd is not None else (), text=True)
        self.lines: list[dict] = []
        self.line("started")

    def line(self, key: str, timeout: float = 30.0) -> dict:
        while not any(key in d for d in self.lines):
            self.lines.append(json.loads(self.proc.stdout.readline() or '{"eof": 1}'))
            if "eof" in self.lines[-1]:
                raise AssertionError(f"the peer ended without '{key}': {self.lines}")
        return next(d for d in self.lines if key in d)[key]

    def report(self) -> dict:
        return self.line("report")

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rep = self.report()
        self.proc.wait(10)
        self.proc.stdout.close()
        return rep


class Vm:
    """A machine on an event loop thread (as in the emu process)."""

    def __init__(self, **kw):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.m = Machine(name="vm", ram_size=64 << 20, backend="memfd", machine_type="pc", **kw)

    def run(self, coro_or_fn, timeout: float = 30.0):
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(timeout)

        async def call():
            out = coro_or_fn()
            return await out if inspect.isawaitable(out) else out
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def start(self, driver_app: tuple | None = None):
        if driver_app is not None:
            self.m.set_guest("virtio-net", *driver_app)
        self.run(self.m.start())

    def guest(self) -> dict:
        return self.m.emu_stats().get("guest", {})

    def net(self, dev: str = "net0") -> dict:
        return self.m.emu_stats()[dev]

    def close(self) -> None:
        self.run(self.m.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def vm(no_fd_leak):
    v = Vm()
    yield v
    v.close()


def socket_vm(vm: Vm, peer_mode: str, *peer_args: str, app=("gen", {}), **device):
    ours, theirs = socket.socketpair()
    peer = Peer(peer_mode, *peer_args, fd=theirs.fileno())
    theirs.close()
    vm.m.add_netdev_socket("n0", fd=ours.detach())
    vm.m.add_virtio_net("net0", "n0", mac=MAC, addr=4, **device)
    vm.start(app)
    return peer


@pytest.mark.parametrize("legacy,packed", [(False, False), (True, False), (False, True)],
                         ids=["modern", "legacy", "modern-packed"])
def test_guest_frames_echoed_by_a_peer_process(vm, legacy, packed):
    params = {"count": "3000", "size": "128", "verify": "on", "mode": "interrupt"}
    if legacy:
        params["legacy"] = "on"
    peer = socket_vm(vm, "echo", app=("gen", params), packed=packed)
    wait_until(lambda: vm.guest().get("received", 0) >= 3000, what="the echoes")
    fn = vm.m.devices["net0"].function
    assert fn.device_id == 0x1000
    f = fn.guest_features
    assert bool(f & (1 << 32)) != legacy                 # VERSION_1 only through the modern one
    assert bool(f & V.F_RING_PACKED) == packed           # packed=on: the rings are packed
    st = vm.net()["netdev"]
    assert (st["tx_frames"], st["rx_frames"], st["link"]) == (3000, 3000, "up")
    rx = vm.net()["queues"]["rx0"]
    assert rx["verify_fail"] == 0 and rx["seq_gaps"] == 0     # every frame intact, in order
    vm.m.devices["net0"].netdev.port.pause_rings()
    assert peer.stop()["frames"] == 3000


def test_a_legacy_only_device_and_the_guest_driver(vm):
    peer = socket_vm(vm, "echo", app=("gen", {"count": "500", "verify": "on"}),
                     disable_modern=True)
    wait_until(lambda: vm.guest().get("received", 0) >= 500, what="the echoes")
    fn = vm.m.devices["net0"].function
    assert fn.interfaces.modern is False and not fn.guest_features & (1 << 32)
    peer.stop()


def test_peer_frames_reach_the_guest_sink_and_stop_cont_loses_nothing(vm):
    """The peer sends emu generator frames in paced bursts; the machine is
    stopped under that traffic (nothing delivered while stopped, the
    counters frozen), then continued: every frame arrives, in order."""
    n = 20000
    peer = socket_vm(vm, "gen", "--count", str(n), "--size", "200", "--pace", "500",
                     "--pause-ms", "5", app=("sink", {"verify": "on", "mode": "interrupt"}))
    wait_until(lambda: vm.guest().get("received", 0) > 1000, what="traffic")
    vm.run(vm.m.stop)
    time.sleep(0.2)                         # frames in flight settle
    frozen = vm.guest()["received"]
    frames_then = vm.net()["netdev"]["rx_frames"]
    time.sleep(0.5)                         # the peer keeps sending meanwhile
    assert vm.guest()["received"] == frozen
    assert vm.net()["netdev"]["rx_frames"] == frames_then      # nothing into the rings
    assert frozen < n
    vm.run(vm.m.cont)
    peer.line("sent")
    wait_until(lambda: vm.guest().get("received", 0) >= n, what="every frame after cont")
    rx = vm.net()["queues"]["rx0"]
    assert vm.guest()["received"] == n
    assert rx["verify_fail"] == 0 and rx["seq_gaps"] == 0
    assert vm.net()["netdev"]["rx_dropped"] == 0
    peer.stop()


def test_reset_under_traffic_then_traffic_again(vm):
    peer = socket_vm(vm, "echo", app=("gen", {"rate": "20000", "mode": "interrupt"}))
    wait_until(lambda: vm.guest().get("received", 0) > 500, what="traffic")
    before = vm.net()["netdev"]["rx_frames"]
    boots = vm.m.guest.boots
    vm.run(vm.m.system_reset())                # the driver resets its device and starts over
    assert vm.m.guest.boots == boots + 1       # the guest booted again over the reset machine
    wait_until(lambda: vm.net()["netdev"]["rx_frames"] > before + 2000, what="more echoes")
    st = vm.net()["netdev"]
    assert st["rx_oversize"] == 0 and st["link"] == "up"       # the stream stayed in step
    peer.stop()


def test_the_peer_going_away_takes_the_link_down(vm):
    peer = socket_vm(vm, "echo", app=("gen", {"count": "100", "mode": "interrupt"}))
    wait_until(lambda: vm.guest().get("received", 0) >= 100, what="the echoes")
    fn = vm.m.devices["net0"].function
    gen = fn.config_generation
    peer.stop()                                # SIGTERM: its end of the stream closes
    wait_until(lambda: not vm.m.devices["net0"].model.link_up, what="link down")
    st = vm.net()["netdev"]
    assert st["link"] == "eof" and st["eof"] == 1
    assert fn.config_generation != gen                    # a config interrupt went
    cfg = fn.device.config_read(N.CFG_STATUS, 2)
    assert not cfg & N.S_LINK_UP


def test_listen_takes_peers_one_after_another(vm):
    nd = vm.m.add_netdev_socket("n0", listen="127.0.0.1:0")
    vm.m.add_virtio_net("net0", "n0", mac=MAC, addr=4)
    vm.start(("gen", {"rate": "2000", "mode": "interrupt"}))
    for k in range(2):
        peer = Peer("sink", "--connect", str(nd.listen_port))
        wait_until(lambda: vm.net()["netdev"]["link"] == "up" and nd.connects == k + 1,
                   what=f"peer {k} accepted")
        wait_until(lambda: vm.net()["netdev"]["tx_frames"] > 100 * (k + 1), what="frames out")
        rep = peer.stop()
        assert rep["frames"] > 0
        wait_until(lambda: vm.net()["netdev"]["link"] != "up", what="the peer gone")
        assert not vm.m.devices["net0"].model.link_up


def test_connect_to_a_listening_peer(vm):
    peer = Peer("echo", "--listen", "0")
    port = peer.line("ready")
    vm.m.add_netdev_socket("n0", connect=f"127.0.0.1:{port}")
    vm.m.add_virtio_net("net0", "n0", mac=MAC, addr=4)
    vm.start(("gen", {"count": "200", "verify": "on"}))
    wait_until(lambda: vm.guest().get("received", 0) >= 200, what="the echoes")
    peer.stop()


def test_connect_refused_is_a_clear_start_up_error(vm):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nobody listens there
    vm.m.add_netdev_socket("n0", connect=f"127.0.0.1:{port}")
    vm.m.add_virtio_net("net0", "n0", mac=MAC, addr=4)
    with pytest.raises(Exception, match="can't connect socket"):
        vm.run(vm.m.start())


def test_a_datagram_fd_is_refused(vm):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(Exception, match="not a stream socket"):
            vm.m.add_netdev_socket("n0", fd=a.fileno())
    finally:
        a.close()
        b.close()


def test_a_hub_between_two_nics_of_one_machine(vm):
    vm.m.add_netdev_hubport("h0", 0)
    vm.m.add_netdev_hubport("h1", 0)
    vm.m.add_virtio_net("net0", "h0", mac=MAC, addr=4)
    vm.m.add_virtio_net("net1", "h1", mac=bytes.fromhex("525400000002"), addr=5)
    # both NICs send 200: fewer than the other's posted RX buffers, so the
    # hub (which drops for a full port, as QEMU's does past its queue) drops none
    vm.start(("gen", {"count": "200", "verify": "on"}))
    wait_until(lambda: vm.guest().get("received", 0) >= 400, what="each NIC's frames")
    for dev in ("net0", "net1"):
        st = vm.net(dev)["netdev"]
        assert st["tx_frames"] == 200 and st["rx_frames"] == 200 and st["rx_dropped"] == 0


def test_a_hub_between_a_packed_and_a_split_nic(vm):
    """The hub's job moves frames between rings of either format: many
    laps of each ring (packed: every wrap counter flip), none dropped."""
    vm.m.add_netdev_hubport("h0", 0)
    vm.m.add_netdev_hubport("h1", 0)
    vm.m.add_virtio_net("net0", "h0", mac=MAC, addr=4, packed=True)
    vm.m.add_virtio_net("net1", "h1", mac=bytes.fromhex("525400000002"), addr=5)
    # paced below what the other NIC's driver takes back: the hub drops none
    vm.start(("gen", {"count": "3000", "rate": "20000", "verify": "on"}))
    wait_until(lambda: vm.guest().get("received", 0) >= 6000, what="each NIC's frames")
    feats = [vm.m.devices[d].function.guest_features & V.F_RING_PACKED for d in ("net0", "net1")]
    assert [bool(f) for f in feats] == [True, False]
    for dev in ("net0", "net1"):
        st = vm.net(dev)["netdev"]
        assert st["tx_frames"] == 3000 and st["rx_frames"] == 3000 and st["rx_dropped"] == 0
        rx = vm.net(dev)["queues"]["rx0"]
        assert rx["verify_fail"] == 0 and rx["seq_gaps"] == 0


@pytest.mark.parametrize("ring", [{}, {"queue_size": "128", "layout": "1"}],
                         ids=["256-one-desc", "128-hdr+data"])
def test_a_packed_nic_sinks_a_peers_stream_across_a_stop(vm, ring):
    """A packed RX ring fed by the peer lap after lap, the machine stopped
    and continued under that traffic: every frame arrives, in order (the
    ring's position and wrap counter kept while the job left it).  With
    two-descriptor chains on a 128 ring one burst of 64 frames is a whole
    lap: the position is back where it was, and the batch must still be
    published."""
    n = 20000
    peer = socket_vm(vm, "gen", "--count", str(n), "--size", "200", "--pace", "500",
                     "--pause-ms", "5",
                     app=("sink", {"verify": "on", "mode": "interrupt", **ring}), packed=True)
    wait_until(lambda: vm.guest().get("received", 0) > 1000, what="traffic")
    vm.run(vm.m.stop)
    vm.run(vm.m.cont)
    peer.line("sent")
    wait_until(lambda: vm.guest().get("received", 0) >= n, what="every frame after cont")
    assert vm.m.devices["net0"].function.guest_features & V.F_RING_PACKED
    rx = vm.net()["queues"]["rx0"]
    assert vm.guest()["received"] == n
    assert rx["verify_fail"] == 0 and rx["seq_gaps"] == 0
    assert vm.net()["netdev"]["rx_dropped"] == 0
    peer.stop()


def test_a_lone_hubport_drops_what_the_guest_sends(vm):
    vm.m.add_netdev_hubport("h0", 0)
    vm.m.add_virtio_net("net0", "h0", mac=MAC, addr=4)
    vm.start(("gen", {"count": "300"}))
    wait_until(lambda: vm.net()["netdev"]["tx_dropped"] >= 300, what="the drops")
    assert vm.guest()["sent"] == 300 and vm.net()["link_up"]


def test_the_monitor_views_name_the_netdevs(vm):
    from emu.launcher import views
    vm.m.add_netdev_hubport("h0", 3)
    vm.m.add_virtio_net("net1", "h0", mac=bytes.fromhex("525400000002"), addr=5)
    peer = socket_vm(vm, "echo", app=("gen", {"count": "10"}))
    text = views.info_network(vm.m)
    assert f" \\ n0: index=0,type=socket,socket: fd={vm.m.netdevs['n0'].fd}" in text
    assert " \\ h0: index=0,type=hubport,hub 3 (1 ports)" in text
    assert all(c["label"] != "n0" for c in views.query_chardev(vm.m))   # no chardev of its own
    stats = views.emu_stats(vm.m)
    net0 = next(d for d in stats["devices"] if d["id"] == "net0")
    assert net0["netdev"]["link"] == "up" and "tx_frames" in net0["netdev"]
    peer.stop()
