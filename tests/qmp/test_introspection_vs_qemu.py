"""``query-machines`` and ``qom-list-types`` against the reference QEMU 7.2
(built with the qtest accelerator by scripts/build-qemu-tests.sh), both
started as qos-test's probe starts them (``-machine none -accel qtest``,
libqtest's sockets): every member emu sends is one QEMU sends, every
machine and type emu lists that QEMU has is described as QEMU describes it,
and every interface emu claims agrees with QEMU's ``implements``."""
from __future__ import annotations

import pytest

from emu.testing.qtest import QtestMachine
from tests.qtest.conftest import qemu_tests  # noqa: F401  (the fixture)
from tests.qtest.qemu_build import BUILD_TIMEOUT

pytestmark = [pytest.mark.peers, pytest.mark.timeout(BUILD_TIMEOUT)]

#: emu's own types: no QEMU counterpart (their parents must be QEMU's)
EMU_ONLY = {"vhost-pci-net", "vhost-pci-net-device", "memory-backend-shm"}
INTERFACES = ("conventional-pci-device", "pci-express-device", "hotplug-handler",
              "user-creatable")
QUERIES = {
    "machines": ("query-machines", {}),
    "devices": ("qom-list-types", {"implements": "device", "abstract": True}),
    "all": ("qom-list-types", {"abstract": True}),
    "concrete": ("qom-list-types", {}),
    **{iface: ("qom-list-types", {"implements": iface, "abstract": True})
       for iface in INTERFACES},
}


def answers(binary=None) -> dict:
    with QtestMachine(["-machine", "none"], binary=binary) as vm:
        return {k: vm.qmp.command(cmd, **args) for k, (cmd, args) in QUERIES.items()}


@pytest.fixture(scope="module")
def both(qemu_tests):  # noqa: F811
    return answers(), answers([qemu_tests["QEMU_REFERENCE"]])


def by_name(entries: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in entries}


def test_machine_info_members_and_values_are_qemus(both):
    emu, ref = (by_name(a["machines"]) for a in both)
    ref_members = set().union(*map(set, ref.values()))
    for name, info in emu.items():
        assert set(info) <= ref_members, (name, set(info) - ref_members)
        assert name in ref, name
        # emu's default machine is q35, QEMU's pc: is-default is emu's own
        mine = {k: v for k, v in info.items() if k != "is-default"}
        theirs = {k: v for k, v in ref[name].items() if k != "is-default"}
        assert mine == theirs
    assert sum(bool(i.get("is-default")) for i in emu.values()) == 1
    # what libqos looks for: a machine named or aliased pc
    assert any("pc" in (i["name"], i.get("alias")) for i in emu.values())


@pytest.mark.parametrize("query", ["devices", "all", "concrete"])
def test_object_type_infos_are_qemus(both, query):
    emu, ref = (by_name(a[query]) for a in both)
    ref_all = by_name(both[1]["all"])
    ref_members = set().union(*map(set, ref_all.values()))
    assert emu, "emu lists no type"
    for name, info in emu.items():
        assert set(info) <= ref_members
        if name in EMU_ONLY:
            assert name not in ref_all, f"{name} is QEMU's too: describe it as QEMU does"
            assert info["parent"] in ref_all
        else:
            assert ref.get(name) == info, (name, info, ref.get(name))


@pytest.mark.parametrize("iface", INTERFACES)
def test_interfaces_emu_claims_are_qemus(both, iface):
    emu_all = {e["name"] for e in both[0]["all"]} - EMU_ONLY
    emu_impl = {e["name"] for e in both[0][iface]} - EMU_ONLY
    ref_impl = {e["name"] for e in both[1][iface]}
    assert emu_impl == ref_impl & emu_all
