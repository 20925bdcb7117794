"""emu-set-guest-app on a running VM1/VM2 pair: every bad app parameter is
refused at once with a GenericError and the QEMU-style text the command
line gives; nothing changes (same app, no guest error, traffic flows);
an app that fails to start is reported and the previous one runs again."""
from __future__ import annotations

import pytest

from emu.testing.launch import Pair, VMProcess, wait_until
from tests.guest_params import APP_CASES, DRIVER_CASES

APP_BAD = [(drv, app, key, value, msg) for (drv, app), cases in APP_CASES.items()
           for key, value, msg in cases]
DRIVER_BAD = [(drv, key, value, msg) for drv, cases in DRIVER_CASES.items()
              for key, value, msg in cases]


@pytest.fixture(scope="module")
def pair(emu_module_vm_factory) -> Pair:
    p = emu_module_vm_factory.pair(
        ram="64M", vm2_params={"mode": "interrupt"},
        vm1_params={"size": 64, "rate": "100k", "mode": "interrupt"})
    for vm in (p.vm1, p.vm2):       # the guest starts once the machine has (VM1: connected)
        wait_until(lambda: "guest" in vm.cmd("query-emu-stats"), 30, what=f"{vm.name}'s guest")
    return p


def vm_of(pair: Pair, driver: str) -> VMProcess:
    return pair.vm1 if driver == "virtio-net" else pair.vm2


def guest(vm: VMProcess) -> dict:
    return vm.cmd("query-emu-stats")["guest"]


def grows(vm: VMProcess, key: str, timeout: float = 20.0) -> None:
    start = guest(vm).get(key, 0)
    wait_until(lambda: guest(vm).get(key, 0) > start, timeout, what=f"{vm.name} {key} to grow")


def refused(vm: VMProcess, app: str, params: dict) -> str:
    r = vm.qmp("emu-set-guest-app", {"app": app, "params": params})
    assert set(r) == {"error"}, r
    assert r["error"]["class"] == "GenericError"
    return r["error"]["desc"]


def unchanged(vm: VMProcess, app: str) -> None:
    g = guest(vm)
    assert g["app"] == app and "error" not in g, g
    assert vm.cmd("query-status")["status"] == "running"


@pytest.mark.parametrize("driver, app, key, value, message", APP_BAD,
                         ids=[f"{d}-{a}-{k}={v}" for d, a, k, v, _ in APP_BAD])
def test_a_bad_app_parameter_is_refused_at_once(pair, driver, app, key, value, message):
    vm = vm_of(pair, driver)
    before = guest(vm)["app"]
    assert refused(vm, app, {key: value}) == message
    unchanged(vm, before)


@pytest.mark.parametrize("driver, key, value, message", DRIVER_BAD,
                         ids=[f"{d}-{k}={v}" for d, k, v, _ in DRIVER_BAD])
def test_a_driver_parameter_cannot_change_with_the_app(pair, driver, key, value, message):
    vm = vm_of(pair, driver)
    want = message if "Invalid parameter" in message else \
        f"Parameter '{key}' belongs to the {driver} driver: it cannot change with the app"
    assert refused(vm, "sink", {key: value}) == want
    unchanged(vm, guest(vm)["app"])


def test_json_values_of_the_wrong_type_are_refused(pair):
    vm2 = pair.vm2
    assert refused(vm2, "echo", {"burst": 1.5}) == (
        "Parameter 'burst' expects a non-negative integer (suffix k, m or g: times 10^3, 10^6 or 10^9)")
    assert refused(vm2, "echo", {"burst": True}).startswith("Parameter 'burst' expects")
    assert refused(vm2, "sink", {"verify": 1}) == "Parameter 'verify' expects 'on' or 'off'"
    assert refused(vm2, "sink", {"burst": {"x": 1}}) == \
        "Invalid parameter type for 'params.burst', expected: scalar"
    unchanged(vm2, "echo")


def test_forward_needs_two_devices_and_is_refused_on_one(pair):
    assert refused(pair.vm2, "forward", {"burst": 32}) == "app=forward needs two vhost-pci-net devices"
    unchanged(pair.vm2, "echo")


def test_the_data_path_is_intact_after_the_refusals(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    unchanged(vm1, "gen")
    unchanged(vm2, "echo")
    grows(vm1, "sent")
    grows(vm2, "echoed")
    grows(vm1, "received")          # VM1 -> VM2 -> VM1: the whole echo path


def test_a_refusal_after_a_good_switch_keeps_the_new_app(pair):
    vm1, vm2 = pair.vm1, pair.vm2
    assert vm2.cmd("emu-set-guest-app", app="sink", params={"burst": 32, "verify": "on"}) == {}
    unchanged(vm2, "sink")
    grows(vm2, "received")
    assert refused(vm2, "sink", {"burst": "abc"}).startswith("Parameter 'burst' expects")
    assert refused(vm2, "echo", {"burst": -1}).startswith("Parameter 'burst' expects")
    unchanged(vm2, "sink")
    grows(vm2, "received")          # the sink refused a switch and kept counting
    assert vm2.cmd("emu-set-guest-app", app="echo", params={"burst": "64"}) == {}
    unchanged(vm2, "echo")
    grows(vm1, "received")


def test_an_app_that_fails_to_start_leaves_the_previous_one_running(pair):
    vm1 = pair.vm1
    # values the registry accepts, that only the running driver can refuse
    desc = refused(vm1, "gen", {"size": 4000, "count": 0})
    assert desc == ("app gen did not start: gen: size 4000 does not fit a 2048-byte TX buffer "
                    "(set tx_buf_size) (app gen runs again)")
    unchanged(vm1, "gen")
    grows(vm1, "received")
    desc = refused(vm1, "pingpong", {"engine": "nope"})
    assert desc == ("app pingpong did not start: pingpong: unknown engine 'nope' (have python, c) "
                    "(app gen runs again)")
    unchanged(vm1, "gen")
    grows(vm1, "sent")
    grows(vm1, "received")


def test_the_vms_served_everything_without_a_guest_error(pair):
    for vm in (pair.vm1, pair.vm2):
        assert vm.is_running()
        assert "error" not in guest(vm)
    assert pair.vm1.stderr_text().count("did not start") == 2     # logged, as a warning
    assert "Traceback" not in pair.vm1.stderr_text() + pair.vm2.stderr_text()
