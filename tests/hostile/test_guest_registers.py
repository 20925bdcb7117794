"""A malicious guest driver against every register of emu's two devices:
virtio-net-pci (VM1) and vhost-pci-net (VM2), connected to each other and
running on a live event loop, as in the emu process.

Each bad access must be answered as hardware would (all ones, dropped
write, a register that reads back refused) and counted under its kind in
the function's guest errors -- which is what query-emu-stats shows
(``MachineAdapter.emu_stats``, the QMP command's body) -- and logged.
After all of it, the real guest drivers bring both devices up on the same
buses and VM1 <-> VM2 traffic flows: no bad write left a device unusable.
The window-safety half: a guest that stops acknowledging has the peer's
memory revoked, reads zeros afterwards, and emu goes on.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
import types
from dataclasses import dataclass

import pytest

from emu.guest.pci import probe
from emu.guest.program import GuestProgram
from emu.guest.virtio_pci import find_virtio_caps
from emu.launcher import MachineAdapter
from emu.machine import Machine
from emu.netdev import SocketSpec
from emu.pci.errors import BusError
from emu.spec import virtio as V, virtio_net as N, virtio_pci as VP
from emu.spec.vhost_pci_net import (CFG_DRIVER_ACK, CFG_VQ_SELECT, CFG_VQ_VECTOR, DOORBELL_OFFSET,
                                    PS_MEM_READY, VRING, vring_at)

MAC1, MAC2 = bytes.fromhex("525400000001"), bytes.fromhex("525400000002")
COMMON, ISR, DEVCFG, NOTIFY = 0x0, 0x1000, 0x2000, 0x3000
STATUS, DFSEL, DF, GFSEL, GF, MSIX_CFG, NUMQ = 0x14, 0x0, 0x4, 0x8, 0xC, 0x10, 0x12
QSEL, QSIZE, QMSIX, QENABLE = 0x16, 0x18, 0x1A, 0x1C
QDESC, QAVAIL, QUSED, QRESET = 0x20, 0x28, 0x30, 0x3A
ACK, DRV, FOK, DOK = 1, 2, 8, 4
RAM = 32 << 20


class Machines:
    """VM2 (vhost-pci-net) and VM1 (virtio-net-pci, 2 queue pairs with a
    control queue) on one event loop thread; no guest program: the test
    is the guest."""

    def __init__(self, sock: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.vm2 = Machine(name="vm2", ram_size=RAM, backend="memfd")
        self.vm2.add_chardev(SocketSpec("c0", path=sock, server=True, wait=False))
        self.vm2.add_vhost_pci_net("vp0", "c0", mac=MAC2, ack_timeout=0.3)
        self.vm1 = Machine(name="vm1", ram_size=RAM, backend="memfd")
        self.vm1.add_chardev(SocketSpec("c0", path=sock))
        self.vm1.add_netdev_vhost_user("n0", "c0", queues=2)
        self.vm1.add_virtio_net("net0", "n0", mac=MAC1, mq=True)
        self.run(self.vm2.start())
        self.run(self.vm1.start())

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        for m in (self.vm1, self.vm2):
            self.run(m.close())
        self.run(_cancel_the_rest())               # what asyncio.run does at the end
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def qmp_view(m: Machine, dev_id: str) -> dict:
    """What query-emu-stats returns for one device."""
    cfg = types.SimpleNamespace(start_paused=False, no_shutdown=False, name=m.name)
    stats = MachineAdapter(m, cfg, lambda *a: None, lambda: None).emu_stats()
    return next(d for d in stats["devices"] if d["id"] == dev_id)


class Guest:
    """The malicious guest: firmware-assigned BARs, then raw accesses."""

    def __init__(self, machine: Machine, dev_id: str):
        self.m = machine
        self.fn = machine.devices[dev_id].function
        self.dev = next(d for d in probe(machine.system) if d.bdf == machine.devices[dev_id].bdf)
        self.dev_id = dev_id
        # the BAR of the modern structures: QEMU's BAR4 for virtio-net-pci,
        # emu's BAR0 for vhost-pci-net
        self.mb = next(d.bar for d in find_virtio_caps(self.dev).values())

    def w(self, bar: int, off: int, size: int, value: int) -> None:
        self.dev.bar_write(bar, off, size, value)

    def r(self, bar: int, off: int, size: int) -> int:
        return self.dev.bar_read(bar, off, size)

    def status(self, value: int | None = None) -> int:
        if value is not None:
            self.w(self.mb, STATUS, 1, value)
        return self.r(self.mb, STATUS, 1)

    def reset(self) -> None:
        """Write 0 and wait for it to read 0 (a vhost-user back-end stops first)."""
        self.status(0)
        deadline = time.monotonic() + 5
        while self.status() != 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def features_ok(self, features: int) -> None:
        self.reset()
        self.status(ACK)
        self.status(ACK | DRV)
        for sel in (0, 1):
            self.w(self.mb, GFSEL, 4, sel)
            self.w(self.mb, GF, 4, (features >> (32 * sel)) & 0xFFFFFFFF)
        self.status(ACK | DRV | FOK)

    def errors(self) -> dict:
        return qmp_view(self.m, self.dev_id)["guest_errors"]["by_kind"]


@dataclass
class Case:
    id: str
    device: str                 # "net0" (VM1) or "vp0" (VM2)
    kind: str                   # guest-error kind that must be counted
    act: object                 # act(guest) -> None; may assert read-backs


def _queue_sel(g: Guest, q: int) -> None:
    g.w(g.mb, QSEL, 2, q)


def ctrl_queue_outside_ram(g: Guest) -> None:
    """The control queue's rings programmed outside guest RAM, then kicked:
    the device must not fault (nor raise into the guest)."""
    g.features_ok(V.F_VERSION_1 | N.F_MQ | N.F_CTRL_VQ)
    _queue_sel(g, 4)
    for reg, addr in ((QDESC, 1 << 40), (QAVAIL, (1 << 40) + 0x1000), (QUSED, (1 << 40) + 0x2000)):
        g.w(g.mb, reg, 4, addr & 0xFFFFFFFF)
        g.w(g.mb, reg + 4, 4, addr >> 32)
    g.w(g.mb, QENABLE, 2, 1)
    g.status(ACK | DRV | FOK | DOK)
    g.w(g.mb, NOTIFY + 4 * 4, 2, 4)


def ctrl_chain_outside_ram(g: Guest) -> None:
    """A control queue inside RAM whose command descriptors point outside it."""
    g.features_ok(V.F_VERSION_1 | N.F_MQ | N.F_CTRL_VQ)
    base = 0x10000
    _queue_sel(g, 4)
    for reg, addr in ((QDESC, base), (QAVAIL, base + 0x1000), (QUSED, base + 0x2000)):
        g.w(g.mb, reg, 4, addr)
        g.w(g.mb, reg + 4, 4, 0)
    g.w(g.mb, QENABLE, 2, 1)
    g.status(ACK | DRV | FOK | DOK)
    ram = g.m.ram
    ram.write(base, struct.pack("<QIHH", 1 << 44, 2, 1, 1) + struct.pack("<QIHH", 1 << 45, 1, 2, 0))
    ram.write(base + 0x1000, struct.pack("<HHH", 0, 1, 0))
    g.w(g.mb, NOTIFY + 4 * 4, 2, 4)
    assert struct.unpack("<H", ram.read(base + 0x2002, 2))[0] == 1, "command not completed"


def vector_refused(reg: int, queue: int | None = None):
    def act(g: Guest):
        if queue is not None:
            _queue_sel(g, queue)
        g.w(g.mb, reg, 2, 0x7FF)
        assert g.r(g.mb, reg, 2) == 0xFFFF           # refused: reads back NO_VECTOR
    return act


def queue_write(reg: int, size: int, value: int, *, select: int = 0, after_ok: bool = False,
                enable_first: bool = False):
    def act(g: Guest):
        if after_ok or enable_first:
            g.features_ok(V.F_VERSION_1)
        _queue_sel(g, select)
        if enable_first:
            for r, a in ((QDESC, 0x20000), (QAVAIL, 0x21000), (QUSED, 0x22000)):
                g.w(g.mb, r, 4, a)
            g.w(g.mb, QENABLE, 2, 1)
            before = g.r(g.mb, QSIZE, 2)
            g.w(g.mb, reg, size, value)
            assert g.r(g.mb, QSIZE, 2) == before       # frozen
            return
        g.w(g.mb, reg, size, value)
    return act


def misaligned_enable(g: Guest) -> None:
    g.features_ok(V.F_VERSION_1)
    _queue_sel(g, 0)
    g.w(g.mb, QDESC, 4, 0x20008)                     # descriptor table needs 16-byte alignment
    g.w(g.mb, QENABLE, 2, 1)
    assert g.r(g.mb, QENABLE, 2) == 0


LEGACY = 0                      # virtio-net-pci's BAR0: the legacy I/O registers


def legacy_pfn_twice(g: Guest) -> None:
    g.reset()
    g.w(LEGACY, VP.STATUS, 1, ACK)
    g.w(LEGACY, VP.STATUS, 1, ACK | DRV)
    g.w(LEGACY, VP.QUEUE_SEL, 2, 0)
    g.w(LEGACY, VP.QUEUE_PFN, 4, 0x20)
    g.w(LEGACY, VP.QUEUE_PFN, 4, 0x40)                   # rewritten while enabled
    assert g.r(LEGACY, VP.QUEUE_PFN, 4) == 0x20
    g.status(0)


def vp_config(off: int, size: int, value: int, readback: tuple | None = None):
    def act(g: Guest):
        g.w(g.mb, DEVCFG + off, size, value)
        if readback:
            assert g.r(g.mb, DEVCFG + readback[0], readback[1]) == readback[2]
    return act


def window_hole(write: bool):
    def act(g: Guest):
        size = g.dev.bars[2].size
        if write:
            g.w(2, size - 8, 8, 0x4141414141414141)
        else:
            assert g.r(2, size - 8, 8) == (1 << 64) - 1      # a hole reads all ones
    return act


CASES = [
    # virtio-net-pci: common configuration
    Case("common-wrong-size", "net0", "common-bad-access", lambda g: g.w(g.mb, DFSEL, 2, 1)),
    Case("common-misaligned", "net0", "common-bad-access", lambda g: g.r(g.mb, 0x15 + 0x1, 1)),
    Case("common-read-only-num-queues", "net0", "common-readonly", lambda g: g.w(g.mb, NUMQ, 2, 99)),
    Case("status-reserved-bits", "net0", "status-reserved", lambda g: g.status(ACK | 0x20)),
    Case("status-out-of-order", "net0", "status-order", lambda g: g.status(0) or g.status(DOK)),
    Case("features-not-offered", "net0", "features-unoffered",
         lambda g: g.features_ok(V.F_VERSION_1 | 1 << 63)),
    Case("features-without-version-1", "net0", "features-no-version-1",
         lambda g: g.features_ok(N.F_MAC)),
    Case("features-written-after-features-ok", "net0", "features-after-ok",
         lambda g: (g.features_ok(V.F_VERSION_1), g.w(g.mb, GF, 4, 0))),
    Case("msix-config-vector-beyond-the-table", "net0", "vector-refused", vector_refused(MSIX_CFG)),
    Case("queue-vector-beyond-the-table", "net0", "vector-refused", vector_refused(QMSIX, 0)),
    Case("queue-select-beyond-num-queues", "net0", "queue-select",
         queue_write(QSIZE, 2, 64, select=77)),
    Case("queue-size-not-a-power-of-two", "net0", "queue-size", queue_write(QSIZE, 2, 100)),
    Case("queue-size-above-the-maximum", "net0", "queue-size", queue_write(QSIZE, 2, 1 << 15)),
    Case("queue-enable-before-features-ok", "net0", "queue-enable",
         lambda g: (g.status(0), _queue_sel(g, 0), g.w(g.mb, QENABLE, 2, 1))),
    Case("queue-enable-value-2", "net0", "queue-enable", queue_write(QENABLE, 2, 2, after_ok=True)),
    Case("queue-rings-misaligned", "net0", "queue-enable", misaligned_enable),
    Case("queue-size-written-while-enabled", "net0", "queue-frozen",
         queue_write(QSIZE, 2, 16, enable_first=True)),
    Case("queue-reset-not-offered", "net0", "queue-reset", queue_write(QRESET, 2, 1)),
    Case("notify-of-a-disabled-queue", "net0", "notify-queue",
         lambda g: (g.status(0), g.w(g.mb, NOTIFY + 4 * 3, 2, 3))),
    Case("notify-of-one-byte", "net0", "notify-bad-access", lambda g: g.w(g.mb, NOTIFY + 0x41, 1, 0)),
    Case("isr-write", "net0", "isr-write", lambda g: g.w(g.mb, ISR, 1, 3)),
    Case("device-config-write", "net0", "config-readonly", lambda g: g.w(g.mb, DEVCFG, 4, 0x41414141)),
    Case("device-config-past-its-end", "net0", "device-cfg-bad-access",
         lambda g: g.r(g.mb, DEVCFG + 0x100, 4)),
    Case("isr-past-its-register", "net0", "isr-bad-access", lambda g: g.r(g.mb, ISR + 0x800, 1)),
    Case("modern-bar-hole", "vp0", "unassigned", lambda g: g.w(g.mb, 0x1800, 4, 1)),
    Case("msix-table-byte-access", "net0", "msix-bad-access", lambda g: g.w(1, 0x3, 1, 0xFF)),
    Case("msix-pba-write", "net0", "msix-pba-write", lambda g: g.w(1, 0x800, 8, ~0 & (2**64 - 1))),
    Case("config-space-vendor-id-write", "net0", "config-readonly",
         lambda g: g.dev.cfg_write(0, 2, 0x1234)),
    Case("config-space-misaligned", "net0", "config-bad-access", lambda g: g.dev.cfg_read(0x3, 2)),
    Case("control-queue-outside-ram", "net0", "ctrl-queue", ctrl_queue_outside_ram),
    Case("control-command-outside-ram", "net0", "ctrl-command", ctrl_chain_outside_ram),
    # virtio-net-pci: the legacy interface (BAR0)
    Case("legacy-read-between-registers", "net0", "legacy-bad-access",
         lambda g: g.r(LEGACY, 0x01, 1) == 0xFF or None),
    Case("legacy-write-to-host-features", "net0", "legacy-readonly",
         lambda g: g.w(LEGACY, VP.HOST_FEATURES, 4, 0)),
    Case("legacy-write-to-the-isr", "net0", "legacy-readonly", lambda g: g.w(LEGACY, VP.ISR, 1, 1)),
    Case("legacy-notify-of-a-missing-queue", "net0", "notify-queue",
         lambda g: g.w(LEGACY, VP.QUEUE_NOTIFY, 2, 99)),
    Case("legacy-pfn-while-enabled", "net0", "queue-frozen", legacy_pfn_twice),
    Case("legacy-features-ok-bit", "net0", "status-reserved",
         lambda g: (g.reset(), g.w(LEGACY, VP.STATUS, 1, ACK), g.w(LEGACY, VP.STATUS, 1, ACK | FOK))),
    Case("legacy-config-past-its-end", "net0", "device-cfg-bad-access",
         lambda g: g.r(LEGACY, VP.CONFIG_OFF + 0x20, 4)),
    # vhost-pci-net: its own registers, doorbells, window, metadata
    Case("driver-ack-of-two-bytes", "vp0", "config-readonly", vp_config(CFG_DRIVER_ACK, 2, 5)),
    Case("peer-vq-select-beyond-peer-vq-max", "vp0", "vq-select",
         vp_config(CFG_VQ_SELECT, 2, 500, readback=(CFG_VQ_SELECT, 2, 0))),
    Case("peer-vq-vector-beyond-the-table", "vp0", "vector-refused",
         vp_config(CFG_VQ_VECTOR, 2, 0x7FF, readback=(CFG_VQ_VECTOR, 2, 0xFFFF))),
    Case("read-only-device-config", "vp0", "config-readonly", vp_config(0x0C, 4, 0)),
    Case("doorbell-misaligned", "vp0", "doorbell", lambda g: g.w(g.mb, DOORBELL_OFFSET + 2, 2, 1)),
    Case("past-the-doorbells", "vp0", "unassigned",
         lambda g: g.w(g.mb, DOORBELL_OFFSET + 4 * 200, 4, 1)),
    Case("window-hole-read", "vp0", "ram-unbacked", window_hole(False)),
    Case("window-hole-write", "vp0", "ram-unbacked", window_hole(True)),
    Case("metadata-write", "vp0", "ram-readonly", lambda g: g.w(4, 0x8, 4, 0x41414141)),
    Case("vp-common-status-reserved", "vp0", "status-reserved", lambda g: g.status(ACK | 0x30)),
    Case("vp-queue-size-not-a-power-of-two", "vp0", "queue-size", queue_write(QSIZE, 2, 3)),
]


@pytest.fixture(scope="module")
def machines():
    import os
    import tempfile
    import shutil
    d = tempfile.mkdtemp(prefix="emu-g-", dir="/tmp")
    fds = set(os.listdir("/proc/self/fd"))
    m = Machines(os.path.join(d, "vp.sock"))
    try:
        yield m
    finally:
        m.close()
        shutil.rmtree(d, ignore_errors=True)
    left = set(os.listdir("/proc/self/fd")) - fds
    assert not left, f"fds left open by the two machines: {left}"


@pytest.fixture(scope="module")
def guests(machines):
    return {"net0": Guest(machines.vm1, "net0"), "vp0": Guest(machines.vm2, "vp0")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_register_access_is_counted_answered_and_logged(guests, case, caplog):
    g = guests[case.device]
    before = g.errors().get(case.kind, 0)
    with caplog.at_level(logging.DEBUG, logger="emu.pci"):
        case.act(g)                                 # never raises into the guest
    assert g.errors().get(case.kind, 0) > before, (case.kind, g.errors())
    assert any(case.kind in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]


def test_checklist_row_19_is_covered():
    kinds = {c.kind for c in CASES}
    assert len(CASES) >= 35
    for k in ("queue-size", "queue-enable", "features-unoffered", "vector-refused",
              "common-bad-access", "ram-unbacked", "ram-readonly", "doorbell", "vq-select"):
        assert k in kinds


def test_map_ram_outside_a_ram_bar_is_refused(guests):
    g = guests["vp0"]
    with pytest.raises(BusError):
        g.m.system.map_ram(g.dev.bars[0].address, 16)          # a register BAR
    with pytest.raises(BusError):
        g.m.system.map_ram(g.dev.bars[4].address, 1 << 20)     # past the metadata BAR


def test_after_all_that_the_real_drivers_bring_both_devices_up(machines, guests):
    """The same buses, now with emu's guest drivers: VM1 gen -> VM2 echo,
    every frame back."""
    vm1, vm2 = machines.vm1, machines.vm2
    for m, drv, app, params in ((vm2, "vhost-pci-net", "echo", {}),
                                (vm1, "virtio-net", "gen", {"count": "3000", "verify": "on"})):
        m.guest = GuestProgram(m.system, m.ram, drv, app, params, name=f"{m.name}-guest",
                               on_event=m.emit)
        m.guest.start()
    deadline = time.monotonic() + 30
    while vm1.guest.stats().get("app_stats", {}).get("received", 0) < 3000:
        errors = (vm1.guest.error, vm2.guest.error)
        assert errors == (None, None), errors
        assert time.monotonic() < deadline, vm1.guest.stats()
        time.sleep(0.05)
    q = qmp_view(vm1, "net0")
    assert q["vhost_user"]["dropped_total"] == 0


def test_a_guest_that_stops_acknowledging_gets_the_window_revoked(machines, guests):
    """Window safety: the driver maps the peer's memory, acknowledges once,
    then goes silent.  When the peer re-maps, the device waits
    ack-timeout, then replaces the old range with zero pages: the late
    reader sees zeros (not the peer's memory), emu counts it and goes on."""
    vm1, vm2 = machines.vm1, machines.vm2
    if vm2.guest is not None:                     # the previous test's drivers: stop them
        vm2.guest.stop()
        vm2.guest = None
    if vm1.guest is not None:
        vm1.guest.stop()
        vm1.guest = None
    dev = vm2.devices["vp0"].model
    g = Guest(vm2, "vp0")

    def vm1_driver():
        p = GuestProgram(vm1.system, vm1.ram, "virtio-net", "sink", {}, name="vm1-sink")
        p.start()
        return p

    epochs = list(dev.peer.vring_epoch[:2])
    drv = vm1_driver()                   # VM1 brings its device up: its memory is in the window
    # Acknowledge only a generation that describes VM1's finished bring-up
    # (both its vrings started afresh on the new table).  Acking a generation
    # read in the middle of a re-map would promise the device that we let go
    # of the old window while we still read it: the device would then unmap
    # it under us, which is a broken driver's fault, not a revocation.
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline, "VM1's bring-up never settled in the metadata"
        gen = dev.metadata.generation
        vrings = [VRING.unpack_from(dev.metadata.mm, vring_at(i)) for i in (0, 1)]
        state = dev.peer.state
        if (gen % 2 == 0 and dev.window.mapped and state & PS_MEM_READY
                and all(v[2] and v[3] and v[4] != e for v, e in zip(vrings, epochs))
                and dev.metadata.generation == gen):
            break
        time.sleep(0.02)
    g.w(g.mb, DEVCFG + CFG_DRIVER_ACK, 4, gen)                       # "I use the window"...
    assert dev.metadata.generation == gen, "the peer changed the table while we acknowledged"
    window = vm2.system.map_ram(g.dev.bars[2].address, 1 << 20)
    assert bytes(window.view[0:16]) == vm1.ram.read(0, 16)          # it is the peer's memory
    revoked = dev.handshake.window_revocations
    drv.stop()
    machines.run(vm1.netdevs["n0"].client.close())       # VM1 goes away: memory dropped
    deadline = time.monotonic() + 10
    while dev.handshake.window_revocations == revoked:
        assert time.monotonic() < deadline, "the window was not revoked"
        time.sleep(0.02)
    vm1.ram.write(0, b"peer-secret")
    assert bytes(window.view[0:16]) == bytes(16)            # zeros, not the peer (nor a fault)
    window.view[0x2000] = 0x41                              # writes go nowhere
    assert vm1.ram.read(0x2000, 1) != b"\x41"
    assert g.r(2, 0x10, 8) == 0                              # the bus sees the zero pages too
    stats = qmp_view(vm2, "vp0")
    assert stats["window_revocations"] > revoked and stats["ack_timeouts"] >= 1


def test_ram_bar_accesses_of_odd_sizes_are_answered(guests):
    """Regression (fuzz_pci): a RAM-backed BAR read or written with a size
    that has no single-access type, at an offset aligned to it, raised
    KeyError out of the function.  The bus never issues such sizes; the
    function's own entry points still answer."""
    fn = guests["vp0"].fn
    assert fn.bar_read(4, 0, 3) == int.from_bytes(fn.device.metadata.mm[0:3], "little")
    fn.bar_write(4, 0, 3, 0)                           # read-only: refused, counted
    assert fn.errors["ram-readonly"] >= 1
