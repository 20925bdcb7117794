"""The machine's QOM tree over QMP and HMP -- qom-list, qom-get,
device-list-properties, qom-list-properties, info qom-tree, info qtree --
beside the reference QEMU 7.2 started on the same command line (a
virtio-net-pci with id net0 on q35, in -S): the same answers where emu has
the object or property, QEMU's error classes and texts where it has not."""
from __future__ import annotations

import re

import pytest

QEMU = ["qemu-system-x86_64"]
BARE = ["-S", "-display", "none", "-nodefaults", "-machine", "q35"]
NIC = ["-device", "virtio-net-pci,netdev=n0,id=net0,mac=52:54:00:00:00:07"]
#: properties emu's virtio-net-pci has and QEMU 7.2's has not
EMU_ONLY = {"in_order"}


def _emu_args(factory) -> list[str]:
    # a vhost-user netdev whose socket nobody connects to: the device exists,
    # and the socket file must be gone when emu quits (the factory checks)
    return BARE + ["-chardev", f"socket,id=c1,path={factory.path('vu.sock')},server=on,wait=off",
                   "-netdev", "vhost-user,id=n0,chardev=c1"] + NIC


def _answers(vm) -> dict:
    dev = "/machine/peripheral/net0"
    return {
        "peripheral": vm.cmd("qom-list", path="/machine/peripheral"),
        "device": vm.cmd("qom-list", path=dev),
        "mac": vm.qmp("qom-get", path=dev, property="mac"),
        "netdev": vm.qmp("qom-get", path="net0", property="netdev"),       # a partial path
        "type": vm.qmp("qom-get", path=dev, property="type"),
        "no-path": vm.qmp("qom-get", path="/machine/nope", property="type"),
        "no-property": vm.qmp("qom-get", path=dev, property="nope"),
        "list-no-path": vm.qmp("qom-list", path="nope"),
        "dlp": vm.cmd("device-list-properties", typename="virtio-net-pci"),
        "dlp-unknown": vm.qmp("device-list-properties", typename="nope"),
        "dlp-abstract": vm.qmp("device-list-properties", typename="pci-device"),
        "qlp": vm.cmd("qom-list-properties", typename="virtio-net-pci"),
        "qlp-unknown": vm.qmp("qom-list-properties", typename="nope"),
        "tree": vm.hmp("info qom-tree"),
        "subtree": vm.hmp("info qom-tree /machine/peripheral"),
        "tree-no-path": vm.hmp("info qom-tree /nope"),
        "qtree": vm.hmp("info qtree"),
    }


@pytest.fixture(scope="module")
def both():
    from emu.testing.launch import VMFactory
    with VMFactory(prefix="qom-emu-") as f:
        emu = _answers(f(_emu_args(f), name="emu"))
    with VMFactory(QEMU, prefix="qom-qemu-") as f:
        qemu = _answers(f(BARE + ["-accel", "tcg", "-netdev", "user,id=n0"] + NIC, name="qemu"))
    return emu, qemu


pytestmark = pytest.mark.usefixtures("no_fd_leak")


@pytest.mark.peers
def test_qom_list_and_get_answer_as_qemu(both):
    emu, qemu = both
    assert emu["peripheral"] == qemu["peripheral"] == [
        {"name": "type", "type": "string"}, {"name": "net0", "type": "child<virtio-net-pci>"}]
    for key in ("mac", "netdev", "type", "no-path", "no-property", "list-no-path"):
        assert emu[key] == qemu[key], key
    assert emu["mac"] == {"return": "52:54:00:00:00:07"}
    assert emu["no-path"]["error"]["class"] == "DeviceNotFound"
    # the device's properties: QEMU's names (and types) but emu's own few
    ours = {p["name"]: p["type"] for p in emu["device"]}
    theirs = {p["name"]: p["type"] for p in qemu["device"]}
    assert all(set(p) == {"name", "type"} for p in emu["device"])
    assert set(ours) - set(theirs) == EMU_ONLY
    assert {n: t for n, t in ours.items() if n in theirs} == {n: theirs[n] for n in ours if n in theirs}
    assert {"mac", "netdev", "addr", "vectors", "virtio-backend"} <= set(ours)


@pytest.mark.peers
@pytest.mark.parametrize("query", ["dlp", "qlp"])
def test_device_properties_are_described_as_qemu_describes_them(both, query):
    emu, qemu = both
    ours = {p["name"]: p for p in emu[query]}
    theirs = {p["name"]: p for p in qemu[query]}
    assert set(ours) - set(theirs) == EMU_ONLY
    assert "id" not in ours and "bus" not in ours          # -device options, not properties
    for name, p in ours.items():
        assert set(p) <= {"name", "type", "description", "default-value"}, p
        if name in theirs:
            assert p["type"] == theirs[name]["type"], name
            # a default emu states is QEMU's (emu states fewer)
            if "default-value" in p:
                assert p["default-value"] == theirs[name].get("default-value"), name
    for key in ("dlp-unknown", "dlp-abstract", "qlp-unknown"):
        assert emu[key] == qemu[key], key


@pytest.mark.peers
def test_info_qom_tree_prints_qemus_lines(both):
    emu, qemu = both
    row = re.compile(r"( {2})*/\S.* \([\w.-]+\)")
    lines = emu["tree"].split("\r\n")
    assert lines[0] == "/machine (pc-q35-7.2-machine)" and lines[-1] == ""
    assert all(row.fullmatch(ln) for ln in lines[:-1]), lines
    # every object emu shows is where QEMU has it (QEMU has many more:
    # memory regions, irqs, fw_cfg)
    assert set(lines) <= set(qemu["tree"].split("\r\n")), set(lines) - set(qemu["tree"].split("\r\n"))
    assert emu["subtree"].split("\r\n")[:3] == [
        "/peripheral (container)", "  /net0 (virtio-net-pci)", "    /virtio-backend (virtio-net-device)"]
    assert emu["tree-no-path"] == qemu["tree-no-path"] == "Path '/nope' could not be resolved.\r\n"


def _device_block(text: str, head: str) -> list[str]:
    lines = text.split("\r\n")
    start = lines.index(head)
    indent = len(head) - len(head.lstrip())
    block = [lines[start]]
    for ln in lines[start + 1:]:
        if len(ln) - len(ln.lstrip()) <= indent:
            break
        block.append(ln)
    return block


@pytest.mark.peers
def test_info_qtree_shows_the_device_on_its_buses_as_qemu(both):
    emu, qemu = both
    for text in (emu["qtree"], qemu["qtree"]):
        assert text.startswith("bus: main-system-bus\r\n  type System\r\n")
        assert "    bus: pcie.0\r\n      type PCIE\r\n" in text
    head = '      dev: virtio-net-pci, id "net0"'
    ours, theirs = _device_block(emu["qtree"], head), _device_block(qemu["qtree"], head)
    # the proxy's lines, then its virtio bus and the virtio device with its own properties
    tail = ["        bus: virtio-bus", "          type virtio-pci-bus",
            '          dev: virtio-net-device, id ""']
    for block in (ours, theirs):
        i = block.index(tail[0])
        assert block[i:i + 3] == tail
        assert any(re.fullmatch(r"        class Ethernet controller, addr 00:[0-9a-f]{2}\.0, "
                                r"pci id 1af4:(1000|1041) \(sub 1af4:00(01|40)\)", ln) for ln in block)
        # -S: the firmware has not assigned the BARs yet
        bars = [ln for ln in block if ln.startswith("        bar ")]
        assert bars and all(re.fullmatch(r"        bar \d: (mem|i/o) at 0xffffffffffffffff "
                                         r"\[0x[0-9a-f]+\]", ln) for ln in bars), bars
    # every property line emu prints is QEMU's, at the same level (slot aside)
    props = re.compile(r" +[\w-]+ = .*")
    mine = {ln for ln in ours if props.fullmatch(ln) and not ln.lstrip().startswith("addr = ")}
    assert mine and mine <= set(theirs), mine - set(theirs)
    assert '            mac = "52:54:00:00:00:07"' in mine
    assert '            netdev = "n0"' in mine


def test_emus_own_device_and_an_ambiguous_path(emu_vm_factory):
    # vhost-pci-net is emu's: its -device properties, with this VM's values
    vp = emu_vm_factory.path("vp.sock")
    vm = emu_vm_factory(_emu_args(emu_vm_factory) + [
        "-chardev", f"socket,id=c0,path={vp},server=on,wait=off",
        "-device", "vhost-pci-net,chardev=c0,id=vp0,window=64M,peer-vqs=4"], name="emu")
    dev = "/machine/peripheral/vp0"
    assert vm.cmd("qom-get", path=dev, property="type") == "vhost-pci-net"
    assert vm.cmd("qom-get", path=dev, property="chardev") == "c0"
    assert vm.cmd("qom-get", path=dev, property="window") == 64 << 20
    assert vm.cmd("qom-get", path=dev, property="peer-vqs") == 4
    assert vm.cmd("qom-get", path=dev, property="max-regions") == 8       # the default
    names = {p["name"]: p for p in vm.cmd("device-list-properties", typename="vhost-pci-net")}
    assert names["window"] == {"name": "window", "type": "size", "default-value": 4 << 30,
                               "description": names["window"]["description"]}
    assert names["vhost-pci"]["type"] == "str" and names["vhost-pci"]["default-value"] == "auto"
    assert {"chardev", "queues", "ack-timeout", "max-connections"} <= set(names)
    # both devices have a virtio-backend child: a partial path names neither
    assert vm.qmp("qom-get", path="virtio-backend", property="type")["error"] == {
        "class": "GenericError", "desc": "Path 'virtio-backend' is ambiguous"}
    assert vm.cmd("qom-get", path="vp0/virtio-backend", property="type") == "vhost-pci-net-device"
    qtree = vm.hmp("info qtree").split("\r\n")
    block = _device_block("\r\n".join(qtree), '      dev: vhost-pci-net, id "vp0"')
    assert '          dev: vhost-pci-net-device, id ""' in block
    assert "            window = 67108864 (0x4000000)" in block
    assert "            peer-vqs = 4 (0x4)" in block
    assert any(ln.startswith("        bar 2: mem at ") for ln in block)      # the peer window
    tree = vm.hmp("info qom-tree /machine/peripheral").split("\r\n")
    assert "  /vp0 (vhost-pci-net)" in tree and "    /virtio-backend (vhost-pci-net-device)" in tree


@pytest.mark.peers
def test_packed_is_the_virtio_devices_bool_as_in_qemu(emu_vm_factory):
    """packed=on|off (VIRTIO_F_RING_PACKED): a bool of the virtio device
    (virtio-net-device, not the PCI proxy), off by default, on the same
    command line as QEMU 7.2's."""
    packed_nic = ["-device", "virtio-net-pci,netdev=n0,id=net0,mac=52:54:00:00:00:07,packed=on"]

    def answers(vm) -> tuple:
        dlp = {p["name"]: p for p in vm.cmd("device-list-properties", typename="virtio-net-pci")}
        block = _device_block(vm.hmp("info qtree"), '      dev: virtio-net-pci, id "net0"')
        device = block.index('          dev: virtio-net-device, id ""')
        return (dlp["packed"]["type"], dlp["packed"]["default-value"],
                vm.cmd("qom-get", path="/machine/peripheral/net0", property="packed"),
                [i > device for i, ln in enumerate(block) if ln.strip() == "packed = true"])

    ours = answers(emu_vm_factory(_emu_args(emu_vm_factory)[:-2] + packed_nic, name="emu"))
    from emu.testing.launch import VMFactory
    with VMFactory(QEMU, prefix="qom-qemu-") as f:
        theirs = answers(f(BARE + ["-accel", "tcg", "-netdev", "user,id=n0"] + packed_nic,
                           name="qemu"))
    assert ours == theirs == ("bool", False, True, [True])
