"""Introspection in QEMU's shapes: query-qmp-schema (generated from emu's
command table and events), query-cpus-fast, query-kvm, info mtree --
compared with the member names QEMU 7.2 itself reports, and every live
answer checked against emu's own schema."""
from __future__ import annotations

import re

import pytest

from emu.testing.launch import vm2_args

pytestmark = pytest.mark.usefixtures("no_fd_leak")

QEMU = ["qemu-system-x86_64"]
BARE = ["-S", "-display", "none", "-nodefaults"]


class Schema:
    def __init__(self, entries: list[dict]):
        self.by = {e["name"]: e for e in entries}
        self.entries = entries

    def members(self, tname: str, depth: int = 4):
        """A type's shape: member names (recursively), element shapes, enum values."""
        e = self.by[tname]
        mt = e["meta-type"]
        if mt == "builtin" or depth == 0:
            return e.get("json-type", mt)
        if mt == "array":
            return ["array", self.members(e["element-type"], depth - 1)]
        if mt == "enum":
            return ("enum",)
        if mt == "alternate":
            return ("alternate",)
        out = {m["name"]: self.members(m["type"], depth - 1) for m in e["members"]}
        return out

    def validate(self, value, tname: str, where: str = "answer") -> None:
        """A live answer against a type: no member the schema lacks, every
        required one present, the json types right."""
        e = self.by[tname]
        mt = e["meta-type"]
        if mt == "builtin":
            ok = {"string": str, "int": int, "boolean": bool, "number": (int, float),
                  "null": type(None)}.get(e["json-type"])
            assert ok is None or isinstance(value, ok), f"{where}: {value!r} is not {e['json-type']}"
        elif mt == "enum":
            assert value in e["values"], f"{where}: {value!r} not in {e['values']}"
        elif mt == "array":
            assert isinstance(value, list), where
            for i, v in enumerate(value):
                self.validate(v, e["element-type"], f"{where}[{i}]")
        elif mt == "object":
            assert isinstance(value, dict), where
            members = {m["name"]: m for m in e["members"]}
            if "tag" in e:          # a flat union: the tag's case brings more members
                case = next(v["type"] for v in e["variants"] if v["case"] == value.get(e["tag"]))
                members.update({m["name"]: m for m in self.by[case]["members"]})
            assert set(value) <= set(members), f"{where}: undeclared {set(value) - set(members)}"
            for name, m in members.items():
                if "default" not in m:
                    assert name in value, f"{where}: required {name} missing"
                if name in value:
                    self.validate(value[name], m["type"], f"{where}.{name}")


@pytest.fixture(scope="module")
def qemu_schema(tmp_path_factory):
    from emu.testing.launch import VMFactory
    with VMFactory(QEMU, prefix="qemu-schema-") as f:
        vm = f(BARE + ["-machine", "none"], name="qemu")
        return Schema(vm.cmd("query-qmp-schema"))


@pytest.fixture
def emu_vm(emu_vm_factory):
    return emu_vm_factory(vm2_args(emu_vm_factory.path("vp.sock"), ram="64M")
                          + ["-serial", "null", "-uuid", "c7a5fdbd-edaf-9455-926a-d65c16db1809"])


@pytest.mark.peers
def test_the_schema_describes_emus_commands_in_qemus_shapes(emu_vm, qemu_schema):
    schema = Schema(emu_vm.cmd("query-qmp-schema"))
    commands = {e["name"] for e in schema.entries if e["meta-type"] == "command"}
    assert commands == {c["name"] for c in emu_vm.cmd("query-commands")}
    # every entry has the keys QEMU's entries of its meta-type have
    keys = {}
    for e in qemu_schema.entries:
        keys.setdefault(e["meta-type"], set()).update(e)
    for e in schema.entries:
        assert set(e) <= keys[e["meta-type"]], e
        assert {"name", "meta-type"} <= set(e)
    assert schema.by["0"] == {"name": "0", "meta-type": "object", "members": []}
    assert all(schema.by[n]["meta-type"] == "builtin" for n in ("str", "int", "bool"))
    # the commands QEMU has too: the same arguments and returns, member for member
    shared = sorted(commands & {e["name"] for e in qemu_schema.entries if e["meta-type"] == "command"})
    assert {"query-status", "query-pci", "query-cpus-fast", "query-kvm", "query-uuid",
            "human-monitor-command", "qmp_capabilities", "query-qmp-schema"} <= set(shared)
    for name in shared:
        for key in ("arg-type", "ret-type"):
            ours, theirs = schema.by[name][key], qemu_schema.by[name][key]
            if schema.by[ours]["meta-type"] == "builtin" and ours == "any":
                continue                    # emu declares no more than "any" for this one
            assert schema.members(ours) == _without_any(qemu_schema.members(theirs), schema.members(ours)), \
                (name, key)
    # the events QEMU has too: the same data members
    events = {e["name"] for e in schema.entries if e["meta-type"] == "event"}
    assert {"STOP", "RESUME", "RESET", "SHUTDOWN", "POWERDOWN", "NIC_RX_FILTER_CHANGED"} <= events
    for name in events & {e["name"] for e in qemu_schema.entries if e["meta-type"] == "event"}:
        assert schema.members(schema.by[name]["arg-type"]) == \
            qemu_schema.members(qemu_schema.by[name]["arg-type"]), name


def _without_any(theirs, ours):
    """QEMU's shape, with what emu declares as 'any' (a member it never
    details, e.g. pci_bridge) cut to the same."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return {k: ("value" if ours.get(k) == "value" else _without_any(v, ours.get(k)))
                for k, v in theirs.items()}
    if isinstance(theirs, list) and isinstance(ours, list):
        return [theirs[0], _without_any(theirs[1], ours[1])]
    return theirs


def test_every_answer_matches_emus_own_schema(emu_vm):
    schema = Schema(emu_vm.cmd("query-qmp-schema"))
    for name in ("query-status", "query-version", "query-name", "query-uuid", "query-commands",
                 "query-pci", "query-chardev", "query-cpus-fast", "query-kvm", "query-emu-stats",
                 "query-qmp-schema"):
        schema.validate(emu_vm.cmd(name), schema.by[name]["ret-type"], name)
    assert emu_vm.cmd("query-uuid") == {"UUID": "c7a5fdbd-edaf-9455-926a-d65c16db1809"}
    schema.validate(emu_vm.hmp("info status"), schema.by["human-monitor-command"]["ret-type"])
    # events as they come, against their declared data
    emu_vm.cmd("stop")
    ev = emu_vm.event_wait("STOP")
    schema.validate(ev.get("data", {}), schema.by["STOP"]["arg-type"], "STOP")


@pytest.mark.peers
@pytest.mark.parametrize("machine", ["q35", "none"])
def test_cpus_and_kvm_as_qemu_reports_them(emu_vm_factory, machine):
    args = BARE + ["-machine", machine]
    emu = emu_vm_factory(args, name="emu")
    qemu = emu_vm_factory(args + ["-accel", "tcg"], name="qemu", binary=QEMU)
    ours, theirs = emu.cmd("query-cpus-fast"), qemu.cmd("query-cpus-fast")
    assert len(ours) == len(theirs)             # none: no CPU; q35: one
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) and set(a["props"]) == set(b["props"])
        assert (a["cpu-index"], a["qom-path"], a["target"]) == (b["cpu-index"], b["qom-path"], b["target"])
    assert set(emu.cmd("query-kvm")) == set(qemu.cmd("query-kvm"))
    assert emu.cmd("query-kvm") == {"enabled": False, "present": False}    # emu runs no KVM
    if ours:
        assert re.fullmatch(r"\* CPU #0: thread_id=\d+\r\n", emu.hmp("info cpus"))
        assert re.fullmatch(r"\* CPU #0: thread_id=\d+\r\n", qemu.hmp("info cpus"))


def test_info_mtree_shows_the_platforms_address_spaces(emu_vm):
    # the guest has enumerated and assigned the BARs once its app runs
    from emu.testing.launch import wait_until
    wait_until(lambda: emu_vm.cmd("query-emu-stats").get("guest", {}).get("app") == "echo", timeout=30)
    text = emu_vm.hmp("info mtree")
    lines = text.split("\r\n")
    assert lines[0] == "address-space: memory"
    assert lines[1] == "  0000000000000000-ffffffffffffffff (prio 0, i/o): system"
    assert "address-space: I/O" in lines
    row = re.compile(r"    [0-9a-f]{16}-[0-9a-f]{16} \(prio -?\d+, (i/o|ram)\): \S.*")
    body = [ln for ln in lines if ln.startswith("    ")]
    assert body and all(row.fullmatch(ln) for ln in body), body
    assert "    0000000000000000-0000000003ffffff (prio 0, ram): ram@0x0" in lines
    assert any(ln.endswith("(prio 20, i/o): serial@0x3f8") for ln in lines)
    assert any(ln.endswith("(prio 20, i/o): pci-conf-idx") for ln in lines)
    # the BARs as programmed, the same addresses query-pci reports
    dev = emu_vm.cmd("query-pci")[0]["devices"][0]
    for r in dev["regions"]:
        assert f"{r['address']:016x}-{r['address'] + r['size'] - 1:016x}" in text
