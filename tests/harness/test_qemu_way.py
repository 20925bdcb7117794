"""One test body, QEMUMachine's way, against emu and against QEMU 7.2.

The plugin's launcher is written as QEMUMachine (QEMU >= 8) works: the
monitor is a socketpair passed as ``-chardev socket,id=mon,fd=N -mon
chardev=mon,mode=control``, the legacy client negotiates, ``quit`` is
followed by ``event_wait('SHUTDOWN')``.  Every assertion here holds for
both programs; that is the point of emu's QEMU-shaped interface.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from emu.testing.launch import monitor_client

pytestmark = pytest.mark.usefixtures("no_fd_leak")

QEMU = ["qemu-system-x86_64"]
MACHINES = {
    "none": ["-machine", "none"],
    "q35": ["-machine", "q35", "-accel", "tcg"],
}
# What both answer (QEMU has ~200 more commands).
COMMON_COMMANDS = {"qmp_capabilities", "query-status", "stop", "cont", "system_reset",
                   "system_powerdown", "quit", "query-version", "query-commands", "query-name",
                   "query-pci", "query-chardev", "human-monitor-command"}


@pytest.fixture(params=["emu", pytest.param("qemu", marks=pytest.mark.peers)])
def binary(request, emu_binary):
    return emu_binary if request.param == "emu" else QEMU


def check_timestamp(ev: dict) -> None:
    ts = ev["timestamp"]
    assert set(ts) == {"seconds", "microseconds"}
    assert 0 <= ts["microseconds"] < 1_000_000
    assert abs(ts["seconds"] + ts["microseconds"] / 1e6 - time.time()) < 60


@pytest.mark.parametrize("machine", MACHINES)
def test_qemumachine_session(emu_vm_factory, binary, machine):
    vm = emu_vm_factory(["-S", "-display", "none", "-nodefaults", "-name", "h"] + MACHINES[machine],
                        binary=binary)
    assert vm.argv[-4] == "-chardev" and re.fullmatch(rf"socket,id={vm.name}-mon,fd=\d+", vm.argv[-3])
    assert vm.argv[-2:] == ["-mon", f"chardev={vm.name}-mon,mode=control"]
    version = vm.greeting["QMP"]["version"]
    assert (version["qemu"]["major"], version["qemu"]["minor"]) == (7, 2)

    assert vm.cmd("query-status") == {"status": "prelaunch", "singlestep": False, "running": False}
    assert vm.cmd("query-name") == {"name": "h"}
    assert vm.cmd("query-version") == version
    assert COMMON_COMMANDS <= {c["name"] for c in vm.cmd("query-commands")}
    chardevs = vm.cmd("query-chardev")
    assert {"label": f"{vm.name}-mon", "frontend-open": True} \
        .items() <= next(c for c in chardevs if c["label"] == f"{vm.name}-mon").items()
    assert vm.hmp("info status") == "VM status: paused (prelaunch)\r\n"
    buses = vm.cmd("query-pci")
    if machine == "none":
        assert buses == []                        # no PCI bus
    else:
        assert buses[0]["bus"] == 0 and isinstance(buses[0]["devices"], list)

    # run-state changes and their events
    assert vm.cmd("stop") == {}                   # prelaunch: no STOP, as QEMU
    assert vm.cmd("cont") == {}
    check_timestamp(vm.event_wait("RESUME"))
    assert vm.cmd("query-status")["status"] == "running"
    assert vm.cmd("stop") == {}
    check_timestamp(vm.event_wait("STOP"))
    assert vm.hmp("info status") == "VM status: paused\r\n"
    assert vm.cmd("system_reset") == {}
    reset = vm.event_wait("RESET")
    assert reset["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    # QEMU's main loop: a reset of a VM that is not running leaves it in prelaunch
    assert vm.cmd("query-status")["status"] == "prelaunch"
    assert vm.hmp("c") == ""
    vm.event_wait("RESUME")

    err = vm.qmp("no-such-command")
    assert err["error"]["class"] == "CommandNotFound"

    assert vm.cmd("quit") == {}
    shutdown = vm.event_wait("SHUTDOWN")
    check_timestamp(shutdown)
    assert shutdown["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert vm.wait() == 0
    assert [e["event"] for e in vm.get_qmp_events()] == []


def test_sigterm_is_shutdown_host_signal(emu_vm_factory, binary):
    vm = emu_vm_factory(["-display", "none", "-nodefaults", "-machine", "none"], binary=binary)
    vm.send_signal(15)
    assert vm.event_wait("SHUTDOWN")["data"] == {"guest": False, "reason": "host-signal"}
    assert vm.wait() == 0


def test_two_monitors_at_once(emu_vm_factory):
    """A ``-qmp unix:`` socket besides the launcher's fd monitor: each
    negotiates on its own and both get every event."""
    path = emu_vm_factory.path("extra.qmp")
    vm = emu_vm_factory(["-display", "none", "-nodefaults", "-machine", "none",
                         "-qmp", f"unix:{path},server=on,wait=off"])
    with monitor_client(path) as qmp:
        qmp.connect()
        labels = [c["label"] for c in qmp.cmd("query-chardev")]
        assert sorted(labels) == ["compat_monitor0", f"{vm.name}-mon"]
        assert qmp.cmd("stop") == {}
        assert vm.event_wait("STOP")["event"] == "STOP"
        assert qmp.pull_event(wait=10.0)["event"] == "STOP"
        assert vm.cmd("cont") == {}
        assert qmp.pull_event(wait=10.0)["event"] == "RESUME"
        assert vm.event_wait("RESUME")["event"] == "RESUME"
        assert f"compat_monitor0: filename=unix:{path},server=on" in vm.hmp("info chardev")
    assert vm.cmd("quit") == {}
    vm.event_wait("SHUTDOWN")
    assert vm.wait() == 0
    assert not os.path.exists(path)
