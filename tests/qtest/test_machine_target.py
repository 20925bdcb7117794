"""qtest against emu's machine pieces (emu.qtest.MachineTarget over a pc
Machine): each command reaches the platform's address spaces and devices
as a guest driver's access would, bad commands among good ones are refused
and counted while the session goes on, the virtual clock runs the
machine's timers, and interrupt lines are reported as QEMU reports them."""
from __future__ import annotations

import pytest

from emu.machine import Machine
from emu.pci import PCIFunction
from emu.qtest.lines import MAX_TRANSFER
from emu.qtest.machine_target import MachineTarget
from emu.qtest.session import QtestSession
from tests.pci.helpers import RegFile

RAM = 16 << 20
SLOT = 3
CONFIG_ADDR = 0x80000000 | (SLOT << 11)
BAR = 0xE0000000


@pytest.fixture
def machine():
    m = Machine(ram_size=RAM, machine_type="pc", qtest=True, backend="memfd")
    fn = PCIFunction(0x1234, 0x5678, 0x0580, name="regfile")
    fn.regs = RegFile(0x1000)
    fn.add_bar(0, 0x1000, "mem32", ops=fn.regs)
    m.system.plug(fn, SLOT)
    m.fn = fn
    yield m
    m.release()


class Client:
    """The session as a client sees it: one reply line per command."""

    def __init__(self, m: Machine):
        self.session = QtestSession(MachineTarget(m.system, m.clocks.virtual, m.qom))
        self.session.connection_made()

    def send(self, *lines: str) -> list[str]:
        self.session.receive("".join(f"{line}\n" for line in lines).encode())
        return self.session.data_to_send().decode().splitlines()

    def __call__(self, line: str) -> str:
        (reply,) = self.send(line)
        return reply


@pytest.fixture
def q(machine):
    return Client(machine)


def test_bad_commands_among_good_ones_are_refused_counted_and_the_session_goes_on(q):
    replies = q.send("writel 0x100000 0x11223344", "frob 1", "readl 0x100000", "inb 0x10000",
                     "readq", "write 0x100000 0x4 0xzz", "readb 0x100003", "inl 0x1234 5",
                     "", "clock_step 1x", "readw 0x100000")
    assert replies == ["OK", "FAIL Unknown command 'frob'", "OK 0x0000000011223344",
                       "FAIL port 0x10000 is past 0xffff",
                       "FAIL missing argument: usage: readq ADDR", "FAIL DATA is not hex",
                       "OK 0x0000000000000011", "FAIL too many arguments: usage: inl ADDR",
                       "FAIL empty command", replies[9], "OK 0x0000000000003344"]
    assert replies[9].startswith("FAIL ") and "1x" in replies[9]
    c = q.session.counters
    assert c.commands == 11 and sum(c.refused.values()) == 7
    assert c.refused["frob"] == 1 and c.refused["<empty>"] == 1


def test_ram_is_the_machines_guest_memory(machine, q):
    q("write 0x200000 0x8 0x0102030405060708")
    assert machine.ram.read(0x200000, 8) == bytes(range(1, 9))
    machine.ram.write(0x300000, b"\xde\xad\xbe\xef")
    assert q("readl 0x300000") == "OK 0x00000000efbeadde"
    assert q("b64read 0x300000 0x4") == "OK 3q2+7w=="


def test_huge_reads_within_the_bound_are_served_and_past_it_refused(machine, q):
    machine.ram.write(RAM - 2, b"\xab\xcd")
    reply = q(f"read 0x{RAM - MAX_TRANSFER:x} 0x{MAX_TRANSFER:x}")
    assert reply.startswith("OK 0x") and len(reply) == 5 + 2 * MAX_TRANSFER
    assert reply.endswith("abcd")
    # across the end of RAM into memory nothing decodes: zeros, as QEMU
    assert q(f"read 0x{RAM - 2:x} 0x4") == "OK 0xabcd0000"
    assert q(f"read 0x0 0x{MAX_TRANSFER + 1:x}").startswith("FAIL SIZE")
    assert q("readq 0xfffffffffffffff8") == "OK 0x0000000000000000"
    assert q("readq 0xfffffffffffffffc") == "FAIL range 0xfffffffffffffffc+0x8 wraps past 2^64"
    assert q("endianness") == "OK little"


def test_io_to_unassigned_ports_reads_all_ones_and_writes_vanish(machine, q):
    assert q.send("inb 0x80", "inw 0x1234", "inl 0x1234", "outb 0x80 0x1",
                  "outl 0x1234 0xffffffff", "inb 0x80") == [
        "OK 0x00ff", "OK 0xffff", "OK 0xffffffff", "OK", "OK", "OK 0x00ff"]
    assert machine.system.unclaimed["pio_read"] == 4
    assert machine.system.unclaimed["pio_write"] == 2


def test_mmio_of_an_unprogrammed_bar_reaches_nothing_until_the_bar_decodes(machine, q):
    regs = machine.fn.regs
    regs.mem[0x10:0x14] = (0xCAFEF00D).to_bytes(4, "little")
    assert q(f"read 0x{BAR + 0x10:x} 0x4") == "OK 0x00000000"     # no BAR there yet
    assert q(f"writel 0x{BAR + 0x10:x} 0x1") == "OK"
    assert regs.log == []
    # program it as libqos does (CF8/CFC), then enable memory decode
    q(f"outl 0xcf8 0x{CONFIG_ADDR | 0x10:x}")
    q("outl 0xcfc 0xffffffff")
    assert q("inl 0xcfc") == "OK 0xfffff000"                      # 4 KiB, mem32
    q(f"outl 0xcfc 0x{BAR:x}")
    assert q(f"read 0x{BAR + 0x10:x} 0x4") == "OK 0x00000000"     # decode still off
    q(f"outl 0xcf8 0x{CONFIG_ADDR | 0x4:x}")
    q("outw 0xcfc 0x2")
    # one 4-byte access reaches the register (libqos's qpci_memread)
    assert q(f"read 0x{BAR + 0x10:x} 0x4") == "OK 0x0df0feca"
    assert regs.log == [("r", 0x10, 4)]
    assert q(f"write 0x{BAR + 0x20:x} 0x2 0x3412") == "OK"
    assert regs.log[-1] == ("w", 0x20, 2, 0x1234)
    # an 8-byte load of a 4 KiB BAR of plain registers: one access, as QEMU's dispatcher
    assert q(f"readq 0x{BAR + 0x10:x}") == "OK 0x00000000cafef00d"
    assert regs.log[-1] == ("r", 0x10, 8)
    # past the BAR: nothing again
    assert q(f"readl 0x{BAR + 0x1000:x}") == "OK 0x0000000000000000"


def test_device_intx_is_reported_on_the_intercepted_ioapic_lines(machine, q):
    fn = machine.fn
    # route PIRQ A..D to IRQ 11 as SeaBIOS does (PIIX3 at 00:01.0, registers
    # 0x60..0x63); a platform without that router has fixed routes
    q("outl 0xcf8 0x80000860")
    q("outl 0xcfc 0x0b0b0b0b")
    line = machine.system.intx_route(fn.bdf)
    assert line is not None
    assert q("irq_intercept_in /machine/peripheral") == "FAIL Unknown device"   # a container
    assert q("irq_intercept_in ioapic") == "OK"
    assert q("irq_intercept_in ioapic") == "OK"
    assert q("irq_intercept_in /machine/i440fx/ioapic") == "OK"      # the same device
    fn.set_irq(True)
    assert q.session.data_to_send() == f"IRQ raise {line}\n".encode()
    fn.set_irq(True)                   # no change, nothing sent
    fn.set_irq(False)
    assert q.session.data_to_send() == f"IRQ lower {line}\n".encode()
    # set_irq_in drives the input: the IRQ line comes before the OK
    assert q.send("set_irq_in ioapic unnamed-gpio-in 5 1") == ["IRQ raise 5", "OK"]
    assert machine.system.irq.intx_level(5)
    assert q.send("set_irq_in ioapic unnamed-gpio-in 5 0") == ["IRQ lower 5", "OK"]
    assert q("set_irq_in ioapic unnamed-gpio-in 24 1").startswith("FAIL ")
    assert q("set_irq_in ioapic gpio-named 1 1").startswith("FAIL ")
    assert q("set_irq_in /machine/nothing unnamed-gpio-in 1 1") == "FAIL Unknown device"


def test_interception_is_one_device_per_process(machine, q):
    assert q("irq_intercept_out /machine/i440fx/pci.0") == "FAIL Unknown device"   # a bus
    assert q("irq_intercept_out /machine/i440fx") == "OK"      # no unnamed outputs: nothing
    assert q("irq_intercept_in ioapic") == "FAIL IRQ intercept already enabled"


def test_the_virtual_clock_runs_the_machines_timers(machine, q):
    fired = []
    t = machine.clocks.virtual.timer(lambda: fired.append(machine.clocks.virtual.now()))
    t.mod(1000)
    assert q("clock_step 100") == "OK 100" and fired == []
    assert q("clock_step") == "OK 1000" and fired == [1000]
    assert q("clock_step") == "OK 1000"                       # no timer left
    t.mod(5000)
    assert q("clock_set 4000") == "OK 4000" and fired == [1000]
    assert q("clock_step -5") == "OK 4000"
    assert q("clock_set 0x2000") == "OK 8192" and fired == [1000, 5000]


def test_without_the_qtest_accelerator_the_clock_is_not_the_clients():
    m = Machine(ram_size=RAM, machine_type="pc", backend="memfd")
    try:
        q = Client(m)
        assert q("clock_step 100").startswith("FAIL clock_step needs the qtest accelerator")
        assert q("readl 0x0") == "OK 0x0000000000000000"
    finally:
        m.release()
