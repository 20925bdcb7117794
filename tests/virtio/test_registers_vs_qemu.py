"""emu's virtio-net-pci read the same way as the reference QEMU 7.2's
(``-M pc -accel qtest``, the device at 00:04.0 on a hubport netdev): the
whole configuration space, the BAR sizing answers, the legacy I/O
registers (without and with MSI-X), the modern common configuration of
every queue, the device configuration -- for the transitional device and
for disable-legacy=on, disable-modern=on, vectors=0 and mq=on.

Where emu differs from QEMU on purpose, the bits are masked here and named:

* VIRTIO_F_RING_RESET (bit 40): QEMU 7.2 offers per-queue reset; emu resets
  whole devices only, so it does not offer it;
* VIRTIO_NET_F_GSO (bit 6) and VIRTIO_F_NOTIFY_ON_EMPTY (bit 24) in the
  legacy features: QEMU shows both to a legacy driver; emu's engine has no
  GSO and does not interrupt on an empty ring, so it does not offer them.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from emu.machine import Machine
from emu.spec import virtio_net as N, virtio_pci as VP
from emu.spec.virtio import F_NOTIFY_ON_EMPTY, F_RING_RESET

from tests.peers.qemu_qtest import EmuPlatform, QtestQemu

BDF = 0x20                                   # 00:04.0
MAC = "52:54:00:12:34:56"
IO_BASE, MSIX_BASE, MODERN_BASE = 0xC000, 0xE0004000, 0xE0000000
LEGACY_ONLY_BITS = N.F_GSO | F_NOTIFY_ON_EMPTY         # QEMU's, not offered by emu
MODERN_MASK = ~F_RING_RESET & ((1 << 64) - 1)

VARIANTS = ["", "disable-legacy=on", "disable-modern=on", "vectors=0", "mq=on"]


class EmuMachine(EmuPlatform):
    def __init__(self, extra: str):
        props = dict(kv.split("=") for kv in extra.split(",") if kv)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.m = Machine(name="emu", ram_size=128 << 20, backend="memfd", machine_type="pc")
        self.m.add_netdev_hubport("hs0", 0)
        self.m.add_virtio_net("net0", "hs0", mac=bytes.fromhex(MAC.replace(":", "")), addr=4,
                              disable_legacy=props.get("disable-legacy", "auto"),
                              disable_modern=props.get("disable-modern") == "on",
                              vectors=int(props["vectors"]) if "vectors" in props else None,
                              mq=props.get("mq") == "on")
        self.run(self.m.start())
        super().__init__(self.m.system)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.run(self.m.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=VARIANTS, ids=lambda v: v or "transitional")
def pair(request):
    dev = "virtio-net-pci,netdev=hs0,addr=04.0,romfile=,mac=" + MAC + \
        ("," + request.param if request.param else "")
    qemu = QtestQemu(["-M", "pc", "-netdev", "hubport,hubid=0,id=hs0", "-device", dev])
    emu = EmuMachine(request.param)
    try:
        yield qemu, emu, request.param
    finally:
        emu.close()
        qemu.close()


def config_space(bus) -> bytes:
    return b"".join(bus.cfg_read(BDF, off, 4).to_bytes(4, "little") for off in range(0, 256, 4))


def bar_sizing(bus) -> list[int]:
    out = []
    for i in range(6):
        off = 0x10 + 4 * i
        bus.cfg_write(BDF, off, 4, 0xFFFFFFFF)
        out.append(bus.cfg_read(BDF, off, 4))
        bus.cfg_write(BDF, off, 4, 0)
    return out


def program(bus) -> tuple[bool, bool]:
    """Map the BARs where libqos maps them; -> (legacy BAR, modern BAR)."""
    sizes = bar_sizing(bus)
    legacy, modern = bool(sizes[0]), bool(sizes[4])
    if legacy:
        bus.cfg_write(BDF, 0x10, 4, IO_BASE | 1)
    if sizes[1]:
        bus.cfg_write(BDF, 0x14, 4, MSIX_BASE)
    if modern:
        bus.cfg_write(BDF, 0x20, 4, MODERN_BASE)
    bus.cfg_write(BDF, 0x04, 2, 0x7)
    return legacy, modern


def legacy_bytes(bus, n: int) -> bytes:
    return bytes(bus.inp(IO_BASE + i, 1) for i in range(n))


def without_legacy_only_bits(regs: bytes) -> bytes:
    features = int.from_bytes(regs[0:4], "little") & ~LEGACY_ONLY_BITS
    return features.to_bytes(4, "little") + regs[4:]


def common_view(bus) -> dict:
    c = MODERN_BASE
    out = {}
    for sel in (0, 1):
        bus.mwrite(c + VP.COMMON_DFSELECT, 4, sel)
        out[f"df{sel}"] = bus.mread(c + VP.COMMON_DF, 4)
    out["features"] = (out.pop("df0") | out.pop("df1") << 32) & MODERN_MASK
    for name, off, size in (("msix", VP.COMMON_MSIX, 2), ("numq", VP.COMMON_NUMQ, 2),
                            ("status", VP.COMMON_STATUS, 1), ("gen", VP.COMMON_CFGGENERATION, 1)):
        out[name] = bus.mread(c + off, size)
    for q in range(4):
        bus.mwrite(c + VP.COMMON_Q_SELECT, 2, q)
        out[q] = tuple(bus.mread(c + off, size) for off, size in (
            (VP.COMMON_Q_SIZE, 2), (VP.COMMON_Q_MSIX, 2), (VP.COMMON_Q_ENABLE, 2),
            (VP.COMMON_Q_NOFF, 2), (VP.COMMON_Q_DESC, 4), (VP.COMMON_Q_USED, 4)))
    out["device"] = bytes(bus.mread(c + 0x2000 + i, 1) for i in range(12))
    out["isr"] = bus.mread(c + 0x1000, 1)
    return out


def test_config_space_and_bars_read_as_qemus(pair):
    qemu, emu, variant = pair
    assert config_space(emu) == config_space(qemu)
    assert bar_sizing(emu) == bar_sizing(qemu)


def test_the_legacy_registers_read_as_qemus(pair):
    qemu, emu, variant = pair
    legacy, _ = program(qemu)
    assert program(emu)[0] == legacy
    if not legacy:
        assert all(b == 0xFF for b in legacy_bytes(emu, 0x20))    # nothing decodes there
        return
    size = 64 if variant == "mq=on" else 32
    assert without_legacy_only_bits(legacy_bytes(emu, size)) == \
        without_legacy_only_bits(legacy_bytes(qemu, size))
    assert emu.inp(IO_BASE, 4) & LEGACY_ONLY_BITS == 0
    for q in range(4):                                   # the queue registers of each queue
        for bus in (qemu, emu):
            bus.out(IO_BASE + VP.QUEUE_SEL, 2, q)
        assert [emu.inp(IO_BASE + r, s) for r, s in ((VP.QUEUE_NUM, 2), (VP.QUEUE_PFN, 4))] == \
            [qemu.inp(IO_BASE + r, s) for r, s in ((VP.QUEUE_NUM, 2), (VP.QUEUE_PFN, 4))]
    if variant == "vectors=0":
        return
    msix_cap = 0x98 if variant != "disable-modern=on" else 0x40
    for bus in (qemu, emu):
        bus.cfg_write(BDF, msix_cap + 2, 2, 0x8000)         # MSI-X on: the config moves
    assert without_legacy_only_bits(legacy_bytes(emu, size)) == \
        without_legacy_only_bits(legacy_bytes(qemu, size))
    for bus in (qemu, emu):
        bus.out(IO_BASE + VP.MSI_CONFIG_VECTOR, 2, 1)
        bus.out(IO_BASE + VP.QUEUE_SEL, 2, 0)
        bus.out(IO_BASE + VP.MSI_QUEUE_VECTOR, 2, 0x7FF)     # beyond the table
    assert [emu.inp(IO_BASE + r, 2) for r in (VP.MSI_CONFIG_VECTOR, VP.MSI_QUEUE_VECTOR)] == \
        [qemu.inp(IO_BASE + r, 2) for r in (VP.MSI_CONFIG_VECTOR, VP.MSI_QUEUE_VECTOR)] == \
        [1, 0xFFFF]


def test_the_modern_registers_read_as_qemus(pair):
    qemu, emu, variant = pair
    _, modern = program(qemu)
    assert program(emu)[1] == modern
    if not modern:
        return
    assert common_view(emu) == common_view(qemu)
