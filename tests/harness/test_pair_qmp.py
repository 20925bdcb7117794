"""Every QMP command and event of the monitor, against a running VM1/VM2 pair.

One pair serves the module (VM1 generating without end at a modest rate,
VM2 echoing, both guests in interrupt mode so the pair does not take both
cores).  Each test starts and ends with traffic flowing, except the last
two, which end the VMs: VM2 by ``system_powerdown`` (VM1 sees its back-end
go), then VM1 by ``quit``.  (VM2's side of VM1 quitting is in
test_readme_pair.py and test_process.py.)
"""
from __future__ import annotations

import os
import time

import pytest

from emu.testing.launch import Pair, VMProcess, wait_until

# QEMU's qapi/pci.json: PciDeviceInfo and PciMemoryRegion members
PCI_DEVICE_KEYS = {"bus", "slot", "function", "class_info", "id", "qdev_id", "regions"}
PCI_DEVICE_OPTIONAL = {"irq", "irq_pin", "pci_bridge"}
PCI_REGION_KEYS = {"bar", "type", "address", "size"}
PCI_REGION_OPTIONAL = {"prefetch", "mem_type_64"}
EVENT_KEYS = {"timestamp", "event", "data"}


@pytest.fixture(scope="module")
def pair(emu_module_vm_factory) -> Pair:
    return emu_module_vm_factory.pair(
        ram="64M", vm2_params={"mode": "interrupt"},
        vm1_params={"size": 64, "rate": "200k", "mode": "interrupt"})


def guest(vm: VMProcess) -> dict:
    return vm.cmd("query-emu-stats").get("guest", {})


def grows(vm: VMProcess, key: str, timeout: float = 10.0) -> None:
    start = guest(vm).get(key, 0)
    wait_until(lambda: guest(vm).get(key, 0) > start, timeout, what=f"{vm.name} {key} to grow")


def frozen(vm: VMProcess, key: str, settle: float = 0.3, window: float = 0.5) -> int:
    """The counter no longer moves (after *settle* for packets in flight)."""
    time.sleep(settle)
    before = guest(vm)[key]
    time.sleep(window)
    assert guest(vm)[key] == before, f"{vm.name} {key} still moving"
    return before


def check_event(ev: dict, name: str | None = None, data: dict | None = None) -> None:
    assert (name is None or ev["event"] == name) and set(ev) <= EVENT_KEYS
    assert set(ev["timestamp"]) == {"seconds", "microseconds"}
    assert abs(ev["timestamp"]["seconds"] - time.time()) < 120
    if data is not None:
        assert ev["data"] == data


def pci_device(vm: VMProcess, vendor: int, device: int) -> dict:
    (bus,) = vm.cmd("query-pci")
    return next(d for d in bus["devices"] if (d["id"]["vendor"], d["id"]["device"]) == (vendor, device))


# -- start-up -----------------------------------------------------------------------------

def test_start_up_events_on_both_sides(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    check_event(vm2.event_wait("VHOST_USER_CONNECTED"), "VHOST_USER_CONNECTED",
                {"device": "vp0", "chardev": "c0"})
    feat2 = vm2.event_wait("VHOST_USER_FEATURES_CHANGED")       # VM1's, as VM2 got them
    check_event(feat2)
    assert {k: feat2["data"][k] for k in ("device", "chardev")} == {"device": "vp0", "chardev": "c0"}
    assert feat2["data"]["features"] & (1 << 32)              # VIRTIO_F_VERSION_1
    conn1 = vm1.event_wait("VHOST_USER_CONNECTED", match={"data": {"device": "net0", "chardev": "c0"}})
    check_event(conn1)
    check_event(vm1.event_wait("VHOST_USER_FEATURES_CHANGED", match={"data": {"device": "net0"}}))
    check_event(vm1.event_wait("NIC_RX_FILTER_CHANGED"),
                "NIC_RX_FILTER_CHANGED",
                {"name": "net0", "path": "/machine/peripheral/net0/virtio-backend"})
    grows(vm1, "received")


def test_query_status_name_version_commands(pair):
    for vm in (pair.vm1, pair.vm2):
        assert vm.cmd("query-status") == {"status": "running", "singlestep": False, "running": True}
        assert vm.cmd("query-name") == {"name": vm.name}
        version = vm.cmd("query-version")
        assert version["qemu"] == {"major": 7, "minor": 2, "micro": 0}
        assert version["package"].startswith("emu ")
        names = {c["name"] for c in vm.cmd("query-commands")}
        assert names == {"qmp_capabilities", "query-status", "stop", "cont", "system_reset",
                         "system_powerdown", "quit", "query-version", "query-commands",
                         "query-name", "query-pci", "query-chardev", "human-monitor-command",
                         "query-emu-stats", "emu-set-guest-app", "query-uuid", "query-qmp-schema",
                         "query-cpus-fast", "query-kvm", "query-machines", "qom-list-types",
                         "qom-list", "qom-get", "qom-list-properties", "device-list-properties",
                         "device_add", "device_del", "announce-self"}


def test_query_pci_has_qemus_schema_and_the_devices(pair):
    for vm in (pair.vm1, pair.vm2):
        (bus,) = vm.cmd("query-pci")
        assert bus["bus"] == 0
        for d in bus["devices"]:
            assert PCI_DEVICE_KEYS <= set(d) <= PCI_DEVICE_KEYS | PCI_DEVICE_OPTIONAL
            assert set(d["id"]) == {"vendor", "device", "subsystem", "subsystem-vendor"}
            assert set(d["class_info"]) == {"class", "desc"}
            for r in d["regions"]:
                assert PCI_REGION_KEYS <= set(r) <= PCI_REGION_KEYS | PCI_REGION_OPTIONAL

    vp = pci_device(pair.vm2, 0x1AF4, 0x1055)
    assert vp["qdev_id"] == "vp0"
    assert vp["class_info"] == {"class": 0x0200, "desc": "Ethernet controller"}
    bars = {r["bar"]: r for r in vp["regions"]}
    assert sorted(bars) == [0, 1, 2, 4]
    assert (bars[0]["size"], bars[1]["size"], bars[4]["size"]) == (16 << 10, 4 << 10, 8 << 10)
    window = bars[2]
    assert (window["size"], window["prefetch"], window["mem_type_64"]) == (4 << 30, True, True)
    assert window["address"] % window["size"] == 0          # naturally aligned, programmed

    # QEMU's transitional virtio-net-pci: legacy I/O BAR0, MSI-X BAR1, modern BAR4
    net = pci_device(pair.vm1, 0x1AF4, 0x1000)
    assert net["qdev_id"] == "net0" and net["class_info"]["class"] == 0x0200
    assert net["id"]["subsystem"] == 1
    bars = {r["bar"]: r for r in net["regions"]}
    assert sorted(bars) == [0, 1, 4]
    assert (bars[0]["type"], bars[0]["size"]) == ("io", 32)
    assert (bars[4]["size"], bars[4]["prefetch"], bars[4]["mem_type_64"]) == (16 << 10, True, True)
    assert all(r["address"] != 2**64 - 1 for r in net["regions"])

    text = pair.vm2.hmp("info pci")
    assert "Ethernet controller: PCI device 1af4:1055" in text
    assert f"BAR2: 64 bit prefetchable memory at 0x{window['address']:08x}" in text
    assert 'id "vp0"' in text
    assert "PCI device 1af4:1000" in pair.vm1.hmp("info pci")


@pytest.mark.peers
def test_query_pci_keys_are_the_ones_qemu_gives(pair, emu_vm_factory):
    # on q35's root bus too QEMU's virtio-net-pci is transitional (disable-legacy=auto
    # is on only behind a PCIe port); emu has no option ROM (romfile=)
    qemu = emu_vm_factory(["-S", "-machine", "q35", "-accel", "tcg", "-display", "none",
                           "-nodefaults", "-device", "virtio-net-pci,id=n,romfile="],
                          binary=["qemu-system-x86_64"], name="qemu")
    theirs = pci_device(qemu, 0x1AF4, 0x1000)
    ours = pci_device(pair.vm1, 0x1AF4, 0x1000)
    assert set(ours) == set(theirs)
    assert ours["class_info"] == theirs["class_info"]
    assert ours["id"] == theirs["id"]
    assert {frozenset(r) for r in ours["regions"]} <= {frozenset(r) for r in theirs["regions"]}
    shape = lambda d: {(r["bar"], r["type"], r["size"], r.get("prefetch"), r.get("mem_type_64"))
                       for r in d["regions"]}                                  # noqa: E731
    assert shape(ours) == shape(theirs)


def test_query_chardev_and_info_network(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    c2 = {c["label"]: c for c in vm2.cmd("query-chardev")}
    assert c2["c0"] == {"label": "c0", "filename": f"unix:{pair.sock},server=on", "frontend-open": True}
    assert c2["vm2-mon"]["frontend-open"] is True
    c1 = {c["label"]: c for c in vm1.cmd("query-chardev")}
    assert c1["c0"] == {"label": "c0", "filename": f"unix:{pair.sock}", "frontend-open": True}
    assert vm1.hmp("info network").splitlines() == [
        "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:00:00:01",
        " \\ n0: index=0,type=vhost-user,vhost-user to c0 (connected)"]
    lines = vm2.hmp("info network").splitlines()
    assert lines[0].startswith("vp0: index=0,type=nic,model=vhost-pci-net,macaddr=")
    assert lines[1] == " \\ c0: vhost-user back-end (peer connected)"


def test_query_emu_stats_counts_balance(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    s1 = vm1.cmd("query-emu-stats", device="net0")
    assert [d["id"] for d in s1["devices"]] == ["net0"]
    q1 = {q["name"]: q for q in s1["devices"][0]["queues"]}
    assert set(q1) == {"rx0", "tx0", "ctrl"}         # the control queue exists, as QEMU's
    for q in q1.values():
        assert {"index", "packets", "bytes", "drops", "errors", "kicks", "calls"} <= set(q)
        assert q["errors"] == q["drops"] == 0
    # every frame VM1 sent came back or is in flight (a TX and an RX ring's worth)
    sent, received = s1["guest"]["sent"], s1["guest"]["received"]
    assert 0 < received <= sent <= received + 2 * 256 + 64
    s2 = vm2.cmd("query-emu-stats")
    q2 = {q["name"]: q for q in s2["devices"][0]["queues"]}
    assert q2["peer0"]["errors"] == q2["peer1"]["errors"] == 0
    header, *rows = vm1.hmp("info emu-stats").splitlines()
    assert header.split()[:3] == ["device", "queue", "packets"]
    assert [r.split()[:2] for r in rows] == [["net0", "ctrl"], ["net0", "rx0"], ["net0", "tx0"]]


# -- run state --------------------------------------------------------------------------------

def test_stop_freezes_the_data_path_and_cont_resumes_it(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    assert vm2.cmd("stop") == {}
    check_event(vm2.event_wait("STOP"), "STOP")
    assert vm2.cmd("query-status")["status"] == "paused"
    # stop answers once the data path is paused: no settling time needed
    assert guest(vm2)["paused"] is True
    echoed = frozen(vm2, "echoed", settle=0)
    frozen(vm1, "received")
    assert vm2.cmd("cont") == {}
    check_event(vm2.event_wait("RESUME"), "RESUME")
    grows(vm2, "echoed")
    assert guest(vm2)["echoed"] > echoed

    assert vm1.cmd("stop") == {}
    vm1.event_wait("STOP")
    frozen(vm1, "sent")
    assert vm1.hmp("info status") == "VM status: paused\r\n"
    assert vm1.hmp("cont") == ""
    vm1.event_wait("RESUME")
    grows(vm1, "received")


def test_system_reset_and_traffic_resumes(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    assert vm1.cmd("system_reset") == {}
    check_event(vm1.event_wait("RESET"), "RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    # the guest driver starts over: the device is re-enabled towards the back-end
    vm1.event_wait("NIC_RX_FILTER_CHANGED")
    grows(vm1, "received")
    assert vm1.cmd("query-status")["status"] == "running"

    assert vm2.cmd("system_reset") == {}
    check_event(vm2.event_wait("RESET"), "RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    grows(vm2, "echoed")
    grows(vm1, "received")


def test_set_guest_app_switches_vm2_from_echo_to_sink(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    assert vm2.cmd("emu-set-guest-app", app="sink") == {}
    assert guest(vm2)["app"] == "sink"      # the command answers once the app runs
    frozen(vm1, "received")                 # nothing comes back any more...
    grows(vm1, "sent")                      # ...though VM1 keeps sending
    grows(vm2, "received")                  # and VM2's sink counts it
    err = vm2.qmp("emu-set-guest-app", app="bogus")["error"]
    assert err["class"] == "GenericError" and "bogus" in err["desc"]
    assert vm2.cmd("emu-set-guest-app", {"app": "echo", "params": {"burst": 32}}) == {}
    assert guest(vm2)["app"] == "echo"
    grows(vm1, "received")


def test_hmp_commands(pair):
    vm2 = pair.vm2
    assert vm2.hmp("info status") == "VM status: running\r\n"
    assert vm2.hmp("info name") == "vm2\r\n"
    # QEMUMachine's keyword convention: command_line= is sent as command-line
    assert vm2.qmp("human-monitor-command", command_line="info name") == {"return": "vm2\r\n"}
    assert vm2.hmp("info version").startswith("7.2.0 (emu ")
    assert vm2.hmp("bogus") == "unknown command: 'bogus'\r\n"
    assert vm2.hmp("stop") == ""
    vm2.event_wait("STOP")
    assert vm2.hmp("c") == ""
    vm2.event_wait("RESUME")


# -- the end: VM2 powers down, VM1 quits ----------------------------------------------------------

def test_system_powerdown_vm2_is_a_guest_shutdown_and_vm1_sees_it(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    assert vm2.cmd("system_powerdown") == {}
    check_event(vm2.event_wait("POWERDOWN"), "POWERDOWN")
    check_event(vm2.event_wait("SHUTDOWN"), "SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
    assert vm2.wait() == 0
    assert not os.path.exists(pair.sock)

    gone = vm1.event_wait("VHOST_USER_DISCONNECTED")
    check_event(gone)
    assert {k: gone["data"][k] for k in ("device", "chardev")} == {"device": "net0", "chardev": "c0"}
    assert vm1.cmd("query-status")["running"] is True       # VM1 keeps serving
    c0 = next(c for c in vm1.cmd("query-chardev") if c["label"] == "c0")
    assert c0["frontend-open"] is False
    assert vm1.hmp("info network").splitlines()[1].endswith("(disconnected)")


def test_quit_vm1(pair):
    vm1 = pair.vm1
    assert vm1.cmd("quit") == {}
    check_event(vm1.event_wait("SHUTDOWN"), "SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    assert vm1.wait() == 0
    assert vm1.stderr_text() == "" and pair.vm2.stderr_text() == ""
