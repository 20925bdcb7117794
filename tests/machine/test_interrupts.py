"""PCI INTx through the chipsets to the I/O APIC's inputs (what qtest's
``irq_intercept_in ioapic`` reports), QEMU 7.2's routing:

* pc: pin -> PIRQ by ``(pin - 1 + slot - 1) mod 4``; PIIX3 PIRQRC[A-D]
  (0x60-0x63) -> ISA IRQ = I/O APIC input, nothing routed at reset (0x80);
* q35: pin -> PIRQ by the ICH9 D*IR registers (slots 25-31) or
  ``(slot + pin - 1) mod 4 + 4``; PIRQ A-H always on GSI 16-23, and on the
  ISA IRQ its PIRQx_ROUT names when enabled;

and the I/O APIC itself: levels, observers, redirection and EOI."""
from __future__ import annotations

import asyncio

import pytest

from emu.guest import firmware
from emu.guest.pci import enumerate_bus
from emu.machine import Machine
from emu.machines.ioapic import IOAPIC
from emu.pci import InterruptController, PCIFunction
from emu.spec import pci as regs
from emu.testing import vms

from tests.pci.helpers import eventfd_count


@pytest.fixture
def machine(request):
    m = Machine(name="irq", ram_size=16 << 20, backend="memfd", machine_type=request.param)
    m.changes = []
    m.system.ioapic.intercept(lambda line, level: m.changes.append((line, level)))
    yield m
    m.release()


def intx_function(machine, slot: int, fn: int = 0, pin: int = 1) -> PCIFunction:
    f = PCIFunction(0x1234, 0x5678, 0xFF0000, interrupt_pin=pin, name=f"intx{slot}")
    machine.system.plug(f, slot, fn)
    return f


def route(p, isa_bridge_bdf: int, reg: int, value: int) -> None:
    p.config_write(isa_bridge_bdf, reg, 1, value)


@pytest.mark.parametrize("machine", ["pc"], indirect=True)
def test_pc_pirq_routing(machine):
    p = machine.system
    f4, f5 = intx_function(machine, 4), intx_function(machine, 5, pin=2)
    f4.set_irq(True)                       # slot 4 INTA -> PIRQD: not routed yet
    assert machine.changes == [] and p.intx_route(f4.bdf) is None
    route(p, 0x08, 0x63, 11)               # PIRQD -> IRQ 11
    assert machine.changes == [(11, 1)] and p.intx_route(f4.bdf) == 11
    f5.set_irq(True)                       # slot 5 INTB -> (1 + 4) & 3 = PIRQB, still 0x80
    route(p, 0x08, 0x61, 11)               # PIRQB -> IRQ 11 too: the line is their OR
    f4.set_irq(False)
    assert machine.changes == [(11, 1)] and p.ioapic.level(11)
    f5.set_irq(False)
    assert machine.changes == [(11, 1), (11, 0)]
    f5.set_irq(True)
    route(p, 0x08, 0x61, 5)                # routing moves while asserted: 11 drops, 5 rises
    assert machine.changes[-2:] == [(11, 0), (5, 1)]
    route(p, 0x08, 0x61, 0x85)             # IRQEN# set: nothing routed
    assert machine.changes[-1] == (5, 0)
    route(p, 0x08, 0x61, 0x0A)
    p.config_write(f5.bdf, regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE)   # the pin is masked
    assert machine.changes[-2:] == [(10, 1), (10, 0)]
    p.config_write(f5.bdf, regs.COMMAND, 2, 0)
    assert machine.changes[-1] == (10, 1)
    p.reset()                              # the function deasserts, PIRQRC back to 0x80
    assert machine.changes[-1] == (10, 0) and p.intx_route(f5.bdf) is None


@pytest.mark.parametrize("machine", ["q35"], indirect=True)
def test_q35_pirq_routing(machine):
    p = machine.system
    f4 = intx_function(machine, 4)
    f4.set_irq(True)                       # slot 4 INTA -> (4 + 0) % 4 + 4 = PIRQE -> GSI 20
    assert machine.changes == [(20, 1)] and p.intx_route(f4.bdf) == 20
    route(p, 0xF8, 0x68, 10)               # PIRQE_ROUT -> IRQ 10 as well
    assert machine.changes == [(20, 1), (10, 1)]
    f4.set_irq(False)
    assert machine.changes[-2:] == [(20, 0), (10, 0)]
    f31 = PCIFunction(0x1234, 1, 0xFF0000, interrupt_pin=2)
    p.plug(f31, 0x1F, 5)                   # slot 31 INTB: D31IR default -> PIRQB -> GSI 17
    f31.set_irq(True)
    assert machine.changes[-1] == (17, 1)
    f31.set_irq(False)
    # the D31IR register (in the RCRB at RCBA) reroutes slot 31's pins
    p.config_write(0xF8, 0xF0, 4, 0xFED1C001)
    p.memory.write(0xFED1C000 + 0x3140, 2, 0x3270)     # INTB -> PIRQH
    f31.set_irq(True)
    assert machine.changes[-1] == (23, 1)
    assert p.memory.read(0xFED1C000 + 0x3140, 2) == 0x3270


@pytest.mark.parametrize("machine", ["pc", "q35"], indirect=True)
def test_firmware_routes_the_pirqs_and_sets_interrupt_line(machine):
    """SeaBIOS's PIRQ choice (10, 10, 11, 11 ...) and INTERRUPT_LINE from the route."""
    p = machine.system
    f = intx_function(machine, 3)
    devices, _ = firmware.boot(p)
    dev = next(d for d in devices if d.bdf == f.bdf)
    line = dev.cfg_read(regs.INTERRUPT_LINE, 1)
    # pc: slot 3 INTA -> PIRQC -> IRQ 11; q35: -> PIRQH -> GSI 23
    want = 11 if machine.machine_type.name == "pc" else 23
    assert line == want == p.intx_route(f.bdf)
    fd = p.intx_eventfd(line)
    f.set_irq(True)
    assert eventfd_count(fd) == 1
    assert (line, 1) in machine.changes


@pytest.mark.parametrize("machine", ["pc"], indirect=True)
def test_an_unplugged_function_lets_go_of_its_line(machine):
    p = machine.system
    route(p, 0x08, 0x63, 9)
    f4 = intx_function(machine, 4)
    f4.set_irq(True)
    p.pci.unplug(f4.bdf)
    assert machine.changes == [(9, 1), (9, 0)]
    f4.set_irq(True)                                   # off the bus: reaches nothing
    assert machine.changes == [(9, 1), (9, 0)]


def test_ioapic_levels_are_the_or_of_their_sources_and_observers_see_changes():
    irq = InterruptController()
    try:
        io = IOAPIC(irq)
        seen = []
        io.intercept(lambda line, level: seen.append((line, level)))
        io.set_irq(7, True, "a")
        io.set_irq(7, True, "b")
        io.set_irq(7, False, "a")
        assert seen == [(7, 1)] and irq.intx_level(7)
        io.set_irq(7, False, "b")
        assert seen == [(7, 1), (7, 0)] and not irq.intx_level(7)
        with pytest.raises(ValueError):
            io.set_irq(24, True)
    finally:
        irq.close()


def test_ioapic_redirection_delivers_vectors_with_remote_irr_and_eoi():
    irq = InterruptController()
    try:
        io = IOAPIC(irq)
        fd = irq.eventfd(0x41)
        io.write(0x00, 4, 0x10 + 2 * 5)
        io.write(0x10, 4, 0x41 | 1 << 15)              # pin 5: vector 0x41, level, unmasked
        io.set_irq(5, True)
        io.set_irq(5, False)
        io.set_irq(5, True)
        assert eventfd_count(fd) == 1                  # Remote IRR holds it until the EOI
        assert io.read(0x10, 4) & 1 << 14
        io.write(0x40, 4, 0x41)                        # EOI: still high, sent again
        assert eventfd_count(fd) == 1 and io.delivered == 2
        io.write(0x10, 4, 0x41 | 1 << 16)              # masked
        io.write(0x40, 4, 0x41)
        assert io.delivered == 2
        io.write(0x00, 4, 0x10 + 2 * 6)
        io.write(0x10, 4, 0x42)                        # pin 6: edge, vector 0x42
        fd2 = irq.eventfd(0x42)
        io.set_irq(6, True)
        io.set_irq(6, True, "other")                   # no new edge
        assert eventfd_count(fd2) == 1
        io.reset()
        io.write(0x00, 4, 0x10)
        assert io.read(0x10, 4) == 1 << 16             # masked at reset
    finally:
        irq.close()


@pytest.mark.parametrize("mtype", ["pc", "q35"])
def test_a_guest_runs_its_nic_on_intx(mtype):
    """VM1's virtio-net-pci without MSI-X (vectors=0): the guest's driver
    takes its interrupts on the INTx line the firmware routed."""
    async def body():
        sock = vms.sock_path()
        b = vms.vm2(sock, "echo")
        await b.start()
        a = Machine(name="vm1", ram_size=64 << 20, backend="memfd", machine_type=mtype)
        from emu.netdev import SocketSpec
        a.add_chardev(SocketSpec("c0", path=sock))
        a.add_netdev_vhost_user("n0", "c0")
        a.add_virtio_net("net0", "n0", mac=vms.MAC1, vectors=0)
        a.set_guest("virtio-net", "gen", {"count": "3000", "mode": "interrupt", "msix": False})
        try:
            await a.start()
            await vms.wait_for(lambda: vms.guest_stats(a).get("received", 0) >= 3000,
                               timeout=30, what="traffic over INTx")
            gsi = 10 if mtype == "pc" else 22           # slot 2 INTA
            assert a.system.stats()["irq"]["intx_assertions"].get(gsi, 0) >= 1
        finally:
            await a.close()
            await b.close()
    asyncio.run(body())


def test_enumeration_sees_the_chipset_first():
    m = Machine(name="e", ram_size=16 << 20, backend="memfd", machine_type="pc")
    try:
        found = [(d.bdf, d.vendor_id, d.device_id) for d in enumerate_bus(m.system)]
        assert found == [(0x00, 0x8086, 0x1237), (0x08, 0x8086, 0x7000),
                         (0x09, 0x8086, 0x7010), (0x0B, 0x8086, 0x7113)]
    finally:
        m.release()
