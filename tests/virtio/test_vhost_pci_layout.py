"""docs/vhost-pci-device.md against the code: the document's tables are
parsed and compared with ``emu.spec.vhost_pci_net`` (the one definition
the device model and the driver import) and with a real device: its
config space, capabilities, BARs, offered features and which device
configuration fields accept writes.  A change on either side that the
other does not follow fails here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from emu.pci.errors import GuestAccessError
from emu.spec import vhost_pci_net as S, virtio as V, virtio_net as N
from emu.spec import virtio_pci as vpci
from emu.virtio.vhost_pci_net import VhostPciNetDevice, VhostPciNetFunction

DOC = Path(__file__).resolve().parents[2] / "docs" / "vhost-pci-device.md"
SIZES = {"u8": 1, "le16": 2, "u16": 2, "le32": 4, "u32": 4, "le64": 8, "u64": 8}
PEER_VQS = 6


def section(title: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"no section '## {title}' in {DOC.name}"
    return m.group(1)


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of ``text``: rows of cells, header and rule dropped."""
    out, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            out.append([r for r in rows[2:]])
            rows = []
    return out


def table_after(text: str, marker: str) -> list[list[str]]:
    return tables(text[text.index(marker):])[0]


def num(cell: str) -> int:
    return int(re.match(r"\s*(0x[0-9a-fA-F]+|\d+)", cell).group(1), 0)


def kib(cell: str) -> int:
    n, unit = re.match(r"(\d+)\s*(KiB|GiB)", cell).groups()
    return int(n) << (10 if unit == "KiB" else 30)


def type_size(t: str) -> int:
    m = re.fullmatch(r"(u8|le16|u16|le32|u32|le64|u64)(?:\[(\d+)\])?", t)
    assert m, f"unknown type {t!r} in the document"
    return SIZES[m.group(1)] * int(m.group(2) or 1)


def name_of(cell: str) -> str:
    return re.search(r"`([^`]+)`", cell).group(1)


def record_fields(cell: str) -> list[tuple[str, int]]:
    """``{u64 `gpa`, le16 `num` (...), u64 reserved}`` -> [(name, size)]."""
    body = re.search(r"\{(.*)\}", cell).group(1)
    return [(name.strip("`"), SIZES[t])
            for t, name in re.findall(r"\b(u8|le16|u16|le32|u32|le64|u64)\s+(`\w+`|\w+)", body)]


def assert_record(record: S.Record, fields: list[tuple[str, int]], what: str) -> None:
    offset, want = 0, []
    for name, size in fields:
        want.append((name, offset, size))
        offset += size
    have = [(f.name, f.offset, f.size) for f in record.fields]
    assert have == want, f"{what}: code {have} != document {want}"
    assert record.size == offset


@pytest.fixture
def fn():
    dev = VhostPciNetDevice(mac=bytes.fromhex("525400000002"), peer_vq_max=PEER_VQS,
                            window_size=1 << 24)
    f = VhostPciNetFunction(dev)
    yield f
    f.close()
    dev.close()


def cfg(fn, offset: int, size: int) -> int:
    return fn.config_read(offset, size)


def capabilities(fn) -> list[int]:
    at, out = cfg(fn, 0x34, 1), []
    while at:
        out.append(at)
        at = cfg(fn, at + 1, 1)
    return out


def test_identity(fn):
    rows = {r[0]: r[1] for r in tables(section("1. Identity"))[0]}
    assert num(rows["device"]) == S.PCI_DEVICE_ID == cfg(fn, 0x02, 2)
    assert num(rows["vendor"]) == cfg(fn, 0x00, 2)
    assert num(rows["revision"]) == cfg(fn, 0x08, 1)
    assert num(rows["class"]) == S.PCI_CLASS == cfg(fn, 0x08, 4) >> 8
    sv, sid = (num(x) for x in rows["subsystem vendor / id"].split("/"))
    assert (sv, sid) == (cfg(fn, 0x2C, 2), cfg(fn, 0x2E, 2))
    assert f"device type {S.VIRTIO_ID_VHOST_PCI_NET}" in rows["device"]


def test_bars(fn):
    rows = {r[0]: r for r in tables(section("2. BARs"))[0]}
    bars = fn.bars
    assert (bars[0].kind, bars[0].size) == ("mem32", kib(rows["0"][2]))
    assert (bars[1].kind, bars[1].size) == ("mem32", kib(rows["1"][2]))
    window = rows[f"{S.WINDOW_BAR}/{S.WINDOW_BAR + 1}"]
    assert "64-bit prefetchable" in window[1] and "`window`" in window[2]
    assert bars[S.WINDOW_BAR].kind == "mem64" and bars[S.WINDOW_BAR].prefetchable
    assert bars[S.WINDOW_BAR].ram is not None
    assert kib(window[2][window[2].index("default"):].split()[1] + " GiB") == S.DEFAULT_WINDOW_SIZE
    md = rows[str(S.METADATA_BAR)]
    assert "read-only" in md[1] and bars[S.METADATA_BAR].ram.readonly
    assert (bars[S.METADATA_BAR].kind, bars[S.METADATA_BAR].size) == \
        ("mem32", kib(md[2])) == ("mem32", S.METADATA_SIZE)
    # MSI-X table and PBA in BAR1 at the offsets the document gives
    msix = next(c for c in capabilities(fn) if cfg(fn, c, 1) == 0x11)
    table, pba = cfg(fn, msix + 4, 4), cfg(fn, msix + 8, 4)
    offs = [int(x, 16) for x in re.findall(r"offset (0x[0-9a-f]+|0)", rows["1"][3])]
    assert (table & 7, pba & 7) == (1, 1) and [table & ~7, pba & ~7] == offs


def test_bar0_layout(fn):
    rows = table_after(section("2. BARs"), "### BAR0 layout")
    kinds = {"VIRTIO_PCI_CAP_COMMON_CFG": vpci.CAP_COMMON_CFG, "VIRTIO_PCI_CAP_ISR_CFG":
             vpci.CAP_ISR_CFG, "VIRTIO_PCI_CAP_DEVICE_CFG": vpci.CAP_DEVICE_CFG,
             "VIRTIO_PCI_CAP_NOTIFY_CFG": vpci.CAP_NOTIFY_CFG}
    caps = {}
    for c in capabilities(fn):
        if cfg(fn, c, 1) == 0x09 and cfg(fn, c + 4, 1) == 0:    # virtio capability in BAR0
            caps[cfg(fn, c + 3, 1)] = (cfg(fn, c + 8, 4), cfg(fn, c + 12, 4), c)
    seen = set()
    for offset, size, what in rows:
        m = re.search(r"`(VIRTIO_PCI_CAP_\w+)`", what)
        if m:
            have = caps[kinds[m.group(1)]]
            assert (num(offset), num(size)) == have[:2], f"{m.group(1)}: device has {have[:2]}"
            seen.add(m.group(1))
            if m.group(1) == "VIRTIO_PCI_CAP_NOTIFY_CFG":
                mult = re.search(r"`notify_off_multiplier` (\d+)", what).group(1)
                assert cfg(fn, have[2] + 16, 4) == int(mult)
        else:
            assert "doorbells" in what and num(offset) == S.DOORBELL_OFFSET
            assert size == "4 × `peer_vq_max`" and S.DOORBELL_STRIDE == 4
            assert S.doorbell(PEER_VQS - 1) + 4 <= fn.bars[0].size
    assert seen == set(kinds)


def test_features(fn):
    rows = table_after(section("3. Own virtqueues and features"), "Offered device features")
    bits = sum(1 << int(r[0]) for r in rows)
    assert bits == S.FEATURES == fn.device.device_features()
    for r in rows:
        full = name_of(r[1])
        if full.startswith("VHOST_PCI_NET_"):
            spec, name = S, full[len("VHOST_PCI_NET_"):]
        elif full.startswith("VIRTIO_NET_"):
            spec, name = N, full[len("VIRTIO_NET_"):]
        else:
            spec, name = V, re.sub(r"^VIRTIO_(RING_)?", "", full)
        assert getattr(spec, name) == 1 << int(r[0]), r
    # packed=on adds RING_PACKED, for the device's own queues
    assert re.search(r"bit 34,\s+`VIRTIO_F_RING_PACKED`", section("3. Own virtqueues and features"))


def test_device_configuration(fn):
    rows = tables(section("4. Device configuration (BAR0 + 0x2000)"))[0]
    assert [(f.name, f.offset, f.size) for f in S.CONFIG.fields] == \
        [(name_of(r[3]), num(r[0]), type_size(r[1])) for r in rows]
    assert fn.device.config_size == S.CONFIG.size
    writable = tuple(name_of(r[3]) for r in rows if r[2] == "RW")
    assert writable == S.CONFIG_WRITABLE
    assert all(r[2] in ("R", "RW") for r in rows)
    dev = fn.device
    for f in S.CONFIG.fields:                         # the device enforces the access column
        value = 0xFFFF if f.name == "peer_vq_msix_vector" else 0
        if f.name in writable:
            dev.config_write(f.offset, f.size, value)
        else:
            with pytest.raises(GuestAccessError):
                dev.config_write(f.offset, f.size, value)
    status = next(r for r in rows if name_of(r[3]) == "status")[3]
    assert re.search(r"bit (\d+) `LINK_UP`", status).group(1) == str(S.S_LINK_UP.bit_length() - 1)


def test_metadata(fn):
    rows = tables(section("5. Metadata (BAR4), little endian"))[0]
    header = [r for r in rows if re.fullmatch(r"u8\[\d+\]|le16|u32|u64", r[1])]
    assert [(name_of(r[2]), num(r[0]), type_size(r[1])) for r in header] == \
        [(f.name, f.offset, f.size) for f in S.HEADER.fields]
    field = {name_of(r[2]): r[2] for r in header}
    assert num(field["magic"].split("=")[1]) == S.MAGIC
    assert num(field["version"].split("=")[1]) == S.VERSION
    state_bits = dict((name, int(bit)) for bit, name in
                      re.findall(r"(\d+) ([A-Z_]+)", field["peer_state"]))
    assert {k: 1 << v for k, v in state_bits.items()} == {
        "CONNECTED": S.PS_CONNECTED, "MEM_READY": S.PS_MEM_READY,
        "FEATURES_SET": S.PS_FEATURES_SET, "VHOST_PCI": S.PS_VHOST_PCI}
    region = next(r for r in rows if "`region[i]`" in r[2])
    assert num(region[0]) == S.M_REGIONS and region[1] == f"{S.MAX_REGIONS} × region"
    assert_record(S.REGION, record_fields(region[2]), "region")
    vring = next(r for r in rows if "`vring[i]`" in r[2])
    assert num(vring[0]) == S.M_VRINGS and vring[1] == "`peer_vq_max` × vring"
    assert_record(S.VRING, record_fields(vring[2]), "vring")
    assert f"({S.VRING.size} B)" in vring[2]
    # the device's page: magic, version and window size where the document says
    page = fn.device.metadata.mm
    assert S.HEADER.unpack_field(page, 0, "magic") == S.MAGIC
    assert S.HEADER.unpack_field(page, 0, "window_size") == fn.device.window.size
    assert S.vring_at(S.MAX_PEER_VQS) <= S.METADATA_SIZE < S.vring_at(S.MAX_PEER_VQS + 1)


def test_doorbells_section():
    text = section("6. Doorbells")
    m = re.search(r"BAR0 \+ (0x[0-9a-f]+) \+ (\d+)·i", text)
    assert (int(m.group(1), 16), int(m.group(2))) == (S.DOORBELL_OFFSET, S.DOORBELL_STRIDE)
