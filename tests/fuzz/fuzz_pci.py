"""Fuzz target: the PCI and virtio register interface a guest driver sees.

    python tests/fuzz/fuzz_pci.py -atheris_runs=20000 [CORPUS_DIR ...]

A bus with emu's two device models -- virtio-net-pci (two queue pairs
and a control queue, its back-end absent; QEMU's transitional function:
legacy I/O BAR0, MSI-X BAR1, modern BAR4) and vhost-pci-net (peer window,
metadata, doorbells) -- and a hostile guest that issues whatever the input
says: configuration cycles of any size and offset, BAR reads and writes
(common cfg, ISR, device cfg incl. driver_ack / peer_vq_select / vector,
notify, the legacy registers, doorbells, MSI-X table and PBA, window holes,
metadata writes),
port I/O through 0xCF8/0xCFC, MMIO anywhere, host mappings of BAR ranges,
and well-formed driver steps over either interface (resources,
negotiation, queue set-up, DRIVER_OK, MSI-X, control-queue commands with
addresses from the input)
so that random traffic also reaches the live states.

A crash is any exception out of a bus access (hardware answers, it does
not raise: only ``map_ram`` may refuse with a BusError), a transport
invariant broken (status bits, features, frozen enabled queues, vectors
inside the MSI-X table), or an fd left open after the machine is torn down.
"""
from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_common import fd_count, main  # noqa: E402

RAM_SIZE = 1 << 20
SIZES = [1, 2, 4, 8, 3, 0]
_ram = None
PeerError = DriverError = BusError = None


def _imports():
    global PeerError, DriverError, BusError
    global Platform, regs, VirtioPCIFunction, VirtioNetDevice, N, V, vhost
    global VhostPciNetDevice, VhostPciNetFunction, guest_pci, transport, allocate, net_pci
    from emu.errors import PeerError
    from emu.guest import pci as guest_pci
    from emu.guest.pci import DriverError
    from emu.guest.virtio_transport import transport
    from emu.memory import allocate
    from emu.machines.platform import Platform
    from emu.pci.errors import BusError
    from emu.spec import pci as regs, vhost, virtio as V, virtio_net as N
    from emu.virtio import net_pci
    from emu.virtio.pci import VirtioPCIFunction
    from emu.virtio.vhost_pci_net import VhostPciNetDevice, VhostPciNetFunction
    from emu.virtio.virtio_net import VirtioNetDevice


class _AbsentBackend:
    """A vhost-user netdev whose back-end offers everything and is not
    connected: the device model must cope with it."""

    def __init__(self):
        self.backend_features = (V.F_VERSION_1 | N.F_MRG_RXBUF | V.F_EVENT_IDX
                                 | V.F_INDIRECT_DESC | N.F_MQ | N.F_CTRL_VQ | N.F_MTU
                                 | vhost.F_PROTOCOL_FEATURES)
        self.connected = False
        self.call_fds = {}
        self.client = None

    def attach(self, nic):
        self.nic = nic


class Rig:
    """One small machine: RAM, a bus, both device models, a loop that is
    turned by hand (the devices queue their vhost-user work on it)."""

    def __init__(self, ram):
        self.loop = asyncio.new_event_loop()
        self.ram = ram
        self.bus = Platform()
        self.net = VirtioNetDevice(_AbsentBackend(), ram, self.loop, mac=bytes(6), queue_pairs=2,
                                   mq=True, queue_size=16, host_mtu=1500)
        self.fn_net = net_pci.make_function(self.net, name="net0")   # as the machine builds it
        self.bus.plug(self.fn_net, 2)
        self.vp = VhostPciNetDevice(mac=bytes(6), peer_vq_max=4, window_size=1 << 22,
                                    queue_size=16, ack_timeout=0.0)
        self.vp.loop = self.loop
        self.fn_vp = VhostPciNetFunction(self.vp)
        self.bus.plug(self.fn_vp, 3)
        self.net.start_loop_side()
        self.fns = [self.fn_net, self.fn_vp]
        self.devs: list = []
        self.drivers: dict = {}

    def tick(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))

    def close(self) -> None:
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for obj in (self.net, self.vp, self.fn_net, self.fn_vp, self.bus):   # as Machine.close
            obj.close()
        self.loop.close()


def _offset(fdp, fn, bar: int) -> int:
    """BAR offsets biased to the registers that exist."""
    if bar == fn.layout.bar and fdp.ConsumeBool():             # the modern structures
        base = fdp.PickValueInList([0x0, 0x1000, 0x2000, 0x3000, 0x3800])
        return base + fdp.ConsumeIntInRange(0, 0x48)
    if fn.legacy is not None and bar == fn.layout.legacy_bar and fdp.ConsumeBool():
        return fdp.ConsumeIntInRange(0, 0x24)                     # the legacy registers
    if bar == 1 and fdp.ConsumeBool():
        return fdp.PickValueInList([0, 0x800]) + fdp.ConsumeIntInRange(0, 0xA0)
    b = fn.bars.get(bar)
    return fdp.ConsumeIntInRange(0, (b.size if b else 0x1000) + 8)


def _value(fdp) -> int:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return fdp.ConsumeIntInRange(0, 0xFF)
    if kind == 1:
        return fdp.ConsumeIntInRange(0, 0xFFFF)
    if kind == 2:
        return fdp.PickValueInList([0, 1, 2, 3, 0xF, 0x8B, 0xFFFF, 0xFFFFFFFF, 1 << 32, 1 << 33])
    return fdp.ConsumeIntInRange(0, (1 << 64) - 1)


def _driver_step(fdp, rig) -> None:
    """A correct driver action (the device may refuse it: DriverError)."""
    step = fdp.ConsumeIntInRange(0, 6)
    if step == 0 or not rig.devs:
        rig.devs = guest_pci.probe(rig.bus)
        rig.drivers = {}
        return
    dev = rig.devs[fdp.ConsumeIntInRange(0, len(rig.devs) - 1)]
    drv = rig.drivers.get(dev.bdf)
    if drv is None:
        legacy = dev.bdf == rig.fn_net.bdf and fdp.ConsumeBool()
        drv = rig.drivers[dev.bdf] = transport(dev, legacy)
    if step == 1:
        drv.negotiate(fdp.ConsumeIntInRange(0, (1 << 64) - 1))
    elif step == 2:
        q = fdp.ConsumeIntInRange(0, 5)
        base = fdp.PickValueInList([0x1000, 0x8000, RAM_SIZE - 0x100, 1 << 40]) \
            if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, (1 << 64) - 1)
        drv.setup_queue(q, base, base + 0x100, base + 0x200,
                        size=fdp.PickValueInList([None, 1, 2, 16]),
                        vector=fdp.PickValueInList([0xFFFF, 0, 1, 5]))
    elif step == 3:
        drv.driver_ok()
    elif step == 4:
        dev.enable_msix(vectors=guest_pci.VectorAllocator())
    elif step == 5:
        drv.reset()
    else:
        q = fdp.ConsumeIntInRange(0, 5)
        if q in drv.queues:
            # a descriptor and an avail entry with input addresses, then the kick
            desc = rig.fn_net.queues[q].desc if dev.bdf == rig.fn_net.bdf else 0
            if rig.ram.size > desc + 32 and desc:
                rig.ram.write(desc, fdp.ConsumeBytes(32))
            drv.notify(q)


def _check(rig) -> None:
    """Transport invariants after every access."""
    for fn in rig.fns:
        st = fn.status
        assert st & ~0xCF == 0 or st & V.STATUS_NEEDS_RESET, hex(st)
        assert not st & V.STATUS_DRIVER or st & V.STATUS_ACKNOWLEDGE
        assert not st & V.STATUS_FEATURES_OK or st & V.STATUS_DRIVER
        # DRIVER_OK without FEATURES_OK only through the legacy interface
        assert not st & V.STATUS_DRIVER_OK or st & V.STATUS_FEATURES_OK or \
            (fn.legacy is not None and not fn.guest_features & V.F_VERSION_1)
        if st & V.STATUS_FEATURES_OK:
            assert fn.guest_features & V.F_VERSION_1
        offered = fn.modern_features() | (fn.legacy_features() if fn.legacy is not None else 0)
        assert fn.guest_features & ~offered == 0
        for q in fn.queues:
            assert 1 <= q.size <= q.max_size and not q.size & (q.size - 1)
            assert q.msix_vector == 0xFFFF or q.msix_vector < fn.msix.nvectors
            if q.enable:
                assert q.desc % 16 == 0 and q.driver % 2 == 0 and q.device % 4 == 0
        assert fn.msix_config == 0xFFFF or fn.msix_config < fn.msix.nvectors
        assert fn.isr & ~3 == 0
    vp = rig.vp
    assert 0 <= vp.vq_select < vp.peer_vq_max
    for v in vp.kicks.vectors:
        assert v == 0xFFFF or v < rig.fn_vp.msix.nvectors


def _one_op(fdp, rig) -> None:
    op = fdp.ConsumeIntInRange(0, 9)
    fn = rig.fns[fdp.ConsumeIntInRange(0, 1)]
    size = fdp.PickValueInList(SIZES)
    if op == 0:
        off = fdp.ConsumeIntInRange(0, 0x100 if fdp.ConsumeBool() else 0x1100)
        rig.bus.config_write(fn.bdf, off, size, _value(fdp))
    elif op == 1:
        rig.bus.config_read(fn.bdf, fdp.ConsumeIntInRange(0, 0x1100), size)
    elif op in (2, 3):
        bar = fdp.PickValueInList([0, 1, 2, 4, 3, 5])
        off = _offset(fdp, fn, bar)
        b = fn.bars.get(bar)
        if b is not None and b.address is not None and fdp.ConsumeBool():
            addr = b.address + off                       # through the bus decoder
            if op == 2:
                rig.bus.mmio_write(addr, size, _value(fdp))
            else:
                rig.bus.mmio_read(addr, size)
        elif op == 2:
            fn.bar_write(bar, off, size if size else 4, _value(fdp) if size else 0)
        else:
            fn.bar_read(bar, off, size if size else 4)
    elif op == 4:
        port = fdp.PickValueInList([0xCF8, 0xCFC, 0xCFD, 0xCFE, 0xC000])
        port += fdp.ConsumeIntInRange(0, 3)
        if fdp.ConsumeBool():
            rig.bus.pio_write(port, size, _value(fdp))
        else:
            rig.bus.pio_read(port, size)
    elif op == 5:
        addr = fdp.ConsumeIntInRange(0, (1 << 64) - 1)
        if fdp.ConsumeBool():
            rig.bus.mmio_write(addr, size, _value(fdp))
        else:
            rig.bus.mmio_read(addr, size)
    elif op == 6:
        b = fn.bars.get(fdp.PickValueInList([0, 2, 4]))
        if b is not None and b.address is not None:
            try:
                m = rig.bus.map_ram(b.address + fdp.ConsumeIntInRange(0, b.size),
                                    fdp.ConsumeIntInRange(0, b.size + 1))
                assert m.length > 0
            except BusError:
                pass
    elif op == 7:
        try:
            _driver_step(fdp, rig)
        except DriverError:
            pass
    elif op == 8:
        rig.bus.ioeventfd_for(fdp.ConsumeIntInRange(0, (1 << 64) - 1), size)
    else:
        rig.tick()
    _check(rig)


def run_one(data: bytes) -> None:
    import atheris
    global _ram
    if _ram is None:
        _ram = allocate(RAM_SIZE, "memfd", name="fuzz")
    before = fd_count()
    _ram.view(0, RAM_SIZE)[:] = 0
    fdp = atheris.FuzzedDataProvider(data)
    rig = Rig(_ram)
    try:
        if fdp.ConsumeBool():
            rig.devs = guest_pci.probe(rig.bus)
        for _ in range(fdp.ConsumeIntInRange(1, 40)):
            _one_op(fdp, rig)
    finally:
        rig.close()
    after = fd_count()
    if after != before:
        raise AssertionError(f"fd leak: {before} open before, {after} after")


def seed_corpus() -> list[bytes]:
    import random
    rng = random.Random(11)
    return [bytes(rng.randrange(256) for _ in range(n)) for n in (32, 128, 512, 2048)]


if __name__ == "__main__":
    main(sys.argv, run_one, seed_corpus, _imports, globals(),
         ("_offset", "_value", "_driver_step", "_check", "_one_op", "run_one"))
else:
    _imports()
