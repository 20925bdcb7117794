"""The emu process's life cycle as a harness sees it: ``-S``, ``-daemonize``
with ``-pidfile``, signals, and start-up errors that leave nothing behind."""
from __future__ import annotations

import glob
import os
import signal
import time

import pytest

from emu.testing.launch import LaunchError, vm1_args, vm2_args, wait_until

pytestmark = pytest.mark.usefixtures("no_fd_leak")

RAM = "64M"


def guest(vm) -> dict:
    return vm.cmd("query-emu-stats").get("guest", {})


def stays(vm, key: str, value: int, window: float = 0.5) -> None:
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert guest(vm).get(key, 0) == value, f"{vm.name} {key} moved"
        time.sleep(0.05)


def assert_nothing_left(vm, *paths: str) -> None:
    for path in paths:
        assert not os.path.lexists(path), f"{path} left behind"
    assert glob.glob(f"/dev/shm/emu-{vm.pid}-*") == []


def test_start_paused_devices_answer_but_data_paths_wait_for_cont(emu_vm_factory):
    pair = emu_vm_factory.pair(ram=RAM, vm2_extra=["-S"], vm1_extra=["-S"],
                               vm1_params={"size": 64, "rate": "100k"})
    vm1, vm2 = pair.vm1, pair.vm2
    # the vhost-user devices did their part: pair() saw VM2's CONNECTED
    assert vm1.event_wait("VHOST_USER_CONNECTED")["data"]["device"] == "net0"
    for vm in (vm1, vm2):
        assert vm.cmd("query-status")["status"] == "prelaunch"
    stays(vm1, "sent", 0)
    stays(vm2, "echoed", 0)

    assert vm1.cmd("cont") == {}
    vm1.event_wait("RESUME")
    wait_until(lambda: guest(vm1)["sent"] > 0, 10, what="VM1 sending")
    stays(vm1, "received", 0)                  # VM2's data path still waits
    assert vm2.cmd("cont") == {}
    vm2.event_wait("RESUME")
    wait_until(lambda: guest(vm1)["received"] > 0, 10, what="echoes")


def test_daemonize_and_pidfile(emu_vm_factory):
    f = emu_vm_factory
    sock, pidfile = f.path("vp.sock"), f.path("vm2.pid")
    vm2 = f(vm2_args(sock, ram=RAM) + ["-daemonize", "-pidfile", pidfile], name="vm2")
    # the parent exited 0 once the child was up: its device listens already
    assert vm2.parent_exitcode == 0
    assert os.path.exists(sock)
    with open(pidfile) as fp:
        assert int(fp.read()) == vm2.pid
    with open(f"/proc/{vm2.pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    assert int(fields[1]) != os.getpid() and int(fields[3]) == vm2.pid   # reparented; own session
    assert vm2.cmd("query-status")["running"] is True       # the monitor fd went with the child

    vm1 = f(vm1_args(sock, ram=RAM, params={"size": 64, "count": 10000}), name="vm1")
    wait_until(lambda: guest(vm1).get("received") == 10000, 30, what="echoes from the daemon")
    assert vm1.cmd("quit") == {}
    assert vm1.wait() == 0
    assert vm2.cmd("quit") == {}
    assert vm2.event_wait("SHUTDOWN")["data"]["reason"] == "host-qmp-quit"
    vm2.wait(30)
    assert_nothing_left(vm2, sock, pidfile)


def test_daemonize_start_up_error_is_the_parents_exit_status(emu_vm_factory):
    f = emu_vm_factory
    pidfile, missing = f.path("vm1.pid"), f.path("nobody.sock")
    with pytest.raises(LaunchError):
        f(vm1_args(missing, ram=RAM) + ["-daemonize", "-pidfile", pidfile], name="vm1", monitor=False)
    (vm1,) = f.vms
    assert vm1.parent_exitcode == 1
    assert vm1.stderr_text() == (f"emu: -chardev socket,id=c0,path={missing}: Failed to connect "
                                 f"to '{missing}': No such file or directory\n")
    assert not os.path.exists(pidfile)


@pytest.mark.emu_pair(ram=RAM, vm1_params={"size": 64, "rate": "100k"})
def test_sigterm_on_a_running_pair(emu_pair):
    pair = emu_pair
    vm1, vm2 = pair.vm1, pair.vm2
    wait_until(lambda: guest(vm1).get("received", 0) > 0, 10, what="traffic")
    vm1.send_signal(signal.SIGTERM)
    assert vm1.event_wait("SHUTDOWN")["data"] == {"guest": False, "reason": "host-signal"}
    assert vm1.wait() == 0
    vm2.event_wait("VHOST_USER_DISCONNECTED")
    vm2.send_signal(signal.SIGINT)
    assert vm2.event_wait("SHUTDOWN")["data"] == {"guest": False, "reason": "host-signal"}
    assert vm2.wait() == 0
    assert_nothing_left(vm2, pair.sock)
    assert vm1.stderr_text() == vm2.stderr_text() == ""


def vm2_with(device: str):
    return lambda d: ["-m", RAM, "-chardev", f"socket,id=c0,path={d}/vp.sock,server=on,wait=off",
                      "-device", device]


STARTUP_ERRORS = {
    "bad device property": (
        vm2_with("vhost-pci-net,chardev=c0,id=vp0,bogus=1"),
        "emu: -device vhost-pci-net,chardev=c0,id=vp0,bogus=1: "
        "Property 'vhost-pci-net.bogus' not found\n"),
    "unknown chardev": (
        vm2_with("vhost-pci-net,chardev=nope,id=vp0"),
        'emu: -device vhost-pci-net,chardev=nope,id=vp0: chardev "nope" not found\n'),
    "no vhost-user server and no reconnect": (
        lambda d: vm1_args(f"{d}/nobody.sock", ram=RAM),
        "emu: -chardev socket,id=c0,path={d}/nobody.sock: Failed to connect to "
        "'{d}/nobody.sock': No such file or directory\n"),
}


@pytest.mark.parametrize("case", STARTUP_ERRORS)
def test_start_up_error_exits_1_and_leaves_nothing(emu_vm_factory, case):
    f = emu_vm_factory
    make_args, message = STARTUP_ERRORS[case]
    qmp = f.path("qmp.sock")      # a monitor listens before the machine is built
    vm = f(make_args(f.dir) + ["-qmp", f"unix:{qmp},server=on,wait=off"], monitor=False)
    assert vm.wait(30) == 1
    assert vm.stderr_text() == message.format(d=f.dir)
    assert_nothing_left(vm, qmp, f.path("vp.sock"))
    assert sorted(os.listdir(f.dir)) == ["vm1.stderr", "vm1.stdout"]
