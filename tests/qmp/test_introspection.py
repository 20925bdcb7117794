"""query-machines and qom-list-types over a real QMP socket: answered before
any machine is attached (qos-test's probe asks at once), arguments checked
as QEMU checks them, QEMU's members only."""
from __future__ import annotations

import asyncio
import functools

import pytest

from emu.launcher.introspection import EmuIntrospection, machine_info
from emu.machines.types import MACHINE_TYPES, default, find
from emu.qmp import MonitorEndpoint, QmpServer

from .qmp_helpers import client

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def async_test(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))
    return wrapper


async def answers(path: str, requests: list[dict], introspection=True) -> list[dict]:
    server = QmpServer(introspection=EmuIntrospection() if introspection else None)
    await server.add_monitor(MonitorEndpoint("m", path=path, server=True))
    try:
        async with client(path) as c:           # no machine attached, ever
            return [await c.execute(r["execute"], r.get("arguments")) for r in requests]
    finally:
        await server.close()


@async_test
async def test_the_probe_is_answered_without_a_machine(tmp_path):
    machines, devices, nothing, concrete = await answers(str(tmp_path / "q.sock"), [
        {"execute": "query-machines"},
        {"execute": "qom-list-types", "arguments": {"implements": "device", "abstract": True}},
        {"execute": "qom-list-types", "arguments": {"implements": "no-such-type"}},
        {"execute": "qom-list-types", "arguments": {"implements": "virtio-pci"}},
    ])
    assert {m["name"]: m.get("alias") for m in machines["return"]} == {
        "pc-i440fx-7.2": "pc", "pc-q35-7.2": "q35", "none": None}
    assert {"name": "device", "abstract": True, "parent": "object"} in devices["return"]
    assert {"name": "virtio-net-pci", "parent": "virtio-net-pci-base"} in devices["return"]
    assert nothing == {"return": []}
    assert sorted(t["name"] for t in concrete["return"]) == ["vhost-pci-net", "virtio-net-pci"]


@async_test
async def test_arguments_are_checked_as_qemus(tmp_path):
    r = await answers(str(tmp_path / "q.sock"), [
        {"execute": "qom-list-types", "arguments": {"implements": 5}},
        {"execute": "qom-list-types", "arguments": {"abstract": "yes"}},
        {"execute": "qom-list-types", "arguments": {"typename": "device"}},
        {"execute": "query-machines", "arguments": {"compat-props": True}},
        {"execute": "query-machines"},
    ])
    assert [x["error"]["desc"] for x in r[:4]] == [
        "Invalid parameter type for 'implements', expected: string",
        "Invalid parameter type for 'abstract', expected: boolean",
        "Parameter 'typename' is unexpected", "Parameter 'compat-props' is unexpected"]
    assert len(r[4]["return"]) == 3            # still serving


@async_test
async def test_a_server_without_introspection_has_no_such_commands(tmp_path):
    (r,) = await answers(str(tmp_path / "q.sock"), [{"execute": "query-machines"}],
                         introspection=False)
    assert r["error"] == {"class": "CommandNotFound",
                          "desc": "The command query-machines has not been found"}


def test_machine_info_members():
    pc = machine_info(find("pc"))
    assert pc.pop("is-default", False) is find("pc").default
    assert pc == {
        "name": "pc-i440fx-7.2", "alias": "pc", "cpu-max": 255, "hotpluggable-cpus": True,
        "numa-mem-supported": False, "deprecated": False,
        "default-cpu-type": "qemu64-x86_64-cpu", "default-ram-id": "pc.ram"}
    assert machine_info(default())["is-default"] is True
    assert [t.name for t in MACHINE_TYPES if "is-default" in machine_info(t)] == [default().name]
    assert machine_info(find("none")) == {
        "name": "none", "cpu-max": 1, "hotpluggable-cpus": False, "numa-mem-supported": False,
        "deprecated": False, "default-ram-id": "ram"}
