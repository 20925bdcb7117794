"""PCI function configuration space, driven by configuration cycles."""
from __future__ import annotations

import pytest

from emu.errors import EmuBug
from emu.machines.platform import Platform
from emu.pci import PCIFunction
from emu.spec import pci as regs
from emu.pci.bus import INTX_GSI_BASE, make_bdf

from .helpers import RegFile, eventfd_count, reads_unassigned

BDF = make_bdf(0, 2, 0)     # regfile_fn


def test_identity_registers_are_read_only(bus, regfile_fn):
    assert bus.config_read(BDF, regs.VENDOR_ID, 2) == 0x1234
    assert bus.config_read(BDF, regs.DEVICE_ID, 2) == 0x5678
    assert bus.config_read(BDF, regs.VENDOR_ID, 4) == 0x56781234
    assert bus.config_read(BDF, regs.REVISION_ID, 4) == 0x00058003   # class 0x000580, rev 3
    assert bus.config_read(BDF, regs.SUBSYSTEM_VENDOR_ID, 4) == 0x11001AF4
    before = bytes(regfile_fn.config)
    for off in (regs.VENDOR_ID, regs.REVISION_ID, regs.SUBSYSTEM_VENDOR_ID, regs.HEADER_TYPE & ~3):
        bus.config_write(BDF, off, 4, 0xDEADBEEF)
    bus.config_write(BDF, regs.INTERRUPT_PIN, 1, 3)
    after = bytes(regfile_fn.config)
    assert after[:regs.CACHE_LINE_SIZE] == before[:regs.CACHE_LINE_SIZE]
    assert after[regs.INTERRUPT_PIN] == 1
    assert regfile_fn.errors["config-readonly"] >= 4


def test_command_register_takes_only_defined_bits(bus, regfile_fn):
    bus.config_write(BDF, regs.COMMAND, 2, 0xFFFF)
    assert bus.config_read(BDF, regs.COMMAND, 2) == regs.COMMAND_WRITABLE
    bus.config_write(BDF, regs.COMMAND, 2, 0)
    assert bus.config_read(BDF, regs.COMMAND, 2) == 0


def test_status_error_bits_are_write_one_to_clear(bus, regfile_fn):
    regfile_fn.signal_error(regs.STATUS_REC_MASTER_ABORT | regs.STATUS_DETECTED_PARITY)
    regfile_fn.set_irq(True)
    st = bus.config_read(BDF, regs.STATUS, 2)
    assert st & regs.STATUS_REC_MASTER_ABORT and st & regs.STATUS_DETECTED_PARITY
    bus.config_write(BDF, regs.STATUS, 2, 0)                      # writing 0 clears nothing
    assert bus.config_read(BDF, regs.STATUS, 2) == st
    bus.config_write(BDF, regs.STATUS, 2, regs.STATUS_REC_MASTER_ABORT)
    st2 = bus.config_read(BDF, regs.STATUS, 2)
    assert not st2 & regs.STATUS_REC_MASTER_ABORT and st2 & regs.STATUS_DETECTED_PARITY
    # the read-only interrupt bit survives an all-ones write; the W1C bits go
    bus.config_write(BDF, regs.STATUS, 2, 0xFFFF)
    assert bus.config_read(BDF, regs.STATUS, 2) == regs.STATUS_INTERRUPT
    # a dword write to COMMAND+STATUS sets command bits and clears status bits at once
    regfile_fn.signal_error(regs.STATUS_SIG_TARGET_ABORT)
    bus.config_write(BDF, regs.COMMAND, 4, (regs.STATUS_SIG_TARGET_ABORT << 16) | regs.COMMAND_MEMORY)
    assert bus.config_read(BDF, regs.COMMAND, 4) == (regs.STATUS_INTERRUPT << 16) | regs.COMMAND_MEMORY


def walk(bus, bdf):
    caps, pos = [], bus.config_read(bdf, regs.CAPABILITY_LIST, 1)
    while pos:
        caps.append((bus.config_read(bdf, pos, 1), pos))
        pos = bus.config_read(bdf, pos + 1, 1)
    return caps


def test_capability_list_is_chained_and_masked(bus):
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    assert not fn.config[regs.STATUS] & regs.STATUS_CAP_LIST and fn.config[regs.CAPABILITY_LIST] == 0
    a = fn.add_capability(0x09, b"\x05\xaa\xbb")                      # length 5 -> next at +8
    b = fn.add_capability(0x10, b"\x00" * 6, wmask=b"\x00\x00\xff\x0f\x00\x00")
    c = fn.add_capability(0x05, b"\x01\x02")
    bdf = bus.plug(fn, 5)
    assert (a, b, c) == (0x40, 0x48, 0x50)
    assert bus.config_read(bdf, regs.STATUS, 2) & regs.STATUS_CAP_LIST
    assert walk(bus, bdf) == [(0x09, a), (0x10, b), (0x05, c)]
    assert bus.config_read(bdf, a, 4) == 0xAA054809                    # id, next, body
    assert bus.config_read(bdf, a + 4, 1) == 0xBB
    bus.config_write(bdf, b + 4, 4, 0xFFFFFFFF)
    bus.config_write(bdf, b + 2, 2, 0xFFFF)
    assert bus.config_read(bdf, b + 4, 4) == 0x00000FFF                # only masked bits
    assert bus.config_read(bdf, b + 2, 2) == 0
    bus.config_write(bdf, a, 2, 0)                                     # id/next are read-only
    assert walk(bus, bdf)[0] == (0x09, a)


def test_capability_space_is_bounded():
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_capability(0x09, bytes(150))
    with pytest.raises(EmuBug):
        fn.add_capability(0x09, bytes(60))


def test_extended_config_space_reads_zero(bus, regfile_fn):
    for off in (0x100, 0x800, 0xFFC):
        assert bus.config_read(BDF, off, 4) == 0
        bus.config_write(BDF, off, 4, 0xFFFFFFFF)
        assert bus.config_read(BDF, off, 4) == 0


@pytest.mark.parametrize("offset,size", [(1, 2), (2, 4), (0, 3), (0, 8), (0xFFE, 4),
                                         (0x1000, 1), (-4, 4)])
def test_bad_config_accesses_answer_all_ones_and_are_counted(bus, regfile_fn, offset, size):
    before = bytes(regfile_fn.config)
    errors = regfile_fn.errors.total
    value = bus.config_read(BDF, offset, size)
    assert value == (1 << (8 * size)) - 1 if size in (1, 2, 4) else 0xFFFFFFFF
    bus.config_write(BDF, offset, size, 0)
    assert bytes(regfile_fn.config) == before
    assert regfile_fn.errors.total == errors + 2
    assert regfile_fn.errors["config-bad-access"] >= 2


def test_absent_functions_read_all_ones(bus, regfile_fn):
    assert bus.config_read(make_bdf(0, 7, 0), 0, 4) == 0xFFFFFFFF
    assert bus.config_read(make_bdf(1, 2, 0), 0, 2) == 0xFFFF            # other bus number
    bus.config_write(make_bdf(0, 7, 0), regs.COMMAND, 2, 7)
    assert bus.unclaimed["config_read"] == 2 and bus.unclaimed["config_write"] == 1


def test_intx_follows_level_and_disable_bit(bus, regfile_fn):
    line = bus.intx_route(BDF)
    assert line == INTX_GSI_BASE + (2 + 1 - 1) % 4
    fd = bus.intx_eventfd(line)
    assert bus.config_read(BDF, regs.INTERRUPT_PIN, 1) == 1
    bus.config_write(BDF, regs.INTERRUPT_LINE, 1, line)
    assert bus.config_read(BDF, regs.INTERRUPT_LINE, 1) == line

    regfile_fn.set_irq(True)
    assert bus.config_read(BDF, regs.STATUS, 2) & regs.STATUS_INTERRUPT
    assert bus.irq.intx_level(line) and eventfd_count(fd) == 1
    bus.config_write(BDF, regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE)
    assert not bus.irq.intx_level(line)
    assert bus.config_read(BDF, regs.STATUS, 2) & regs.STATUS_INTERRUPT  # internal state stays
    bus.config_write(BDF, regs.COMMAND, 2, 0)
    assert bus.irq.intx_level(line) and eventfd_count(fd) == 1          # re-asserted
    regfile_fn.set_irq(False)
    assert not bus.irq.intx_level(line)
    assert not bus.config_read(BDF, regs.STATUS, 2) & regs.STATUS_INTERRUPT
    assert eventfd_count(fd) == 0


def test_shared_intx_line_is_the_or_of_its_functions(bus):
    fns = [PCIFunction(0x1234, i, 0xFF0000) for i in range(2)]
    bus.plug(fns[0], 0)           # slot 0, INTA -> line +0
    bus.plug(fns[1], 4)           # slot 4, INTA -> line +0 as well
    line = bus.intx_route(make_bdf(0, 0, 0))
    assert line == bus.intx_route(make_bdf(0, 4, 0))
    fns[0].set_irq(True)
    fns[1].set_irq(True)
    fns[0].set_irq(False)
    assert bus.irq.intx_level(line)
    fns[1].set_irq(False)
    assert not bus.irq.intx_level(line)


def test_function_without_pin_has_no_intx(bus):
    fn = PCIFunction(0x1234, 1, 0xFF0000, interrupt_pin=0)
    bdf = bus.plug(fn, 6)
    assert bus.intx_route(bdf) is None
    with pytest.raises(EmuBug):
        fn.set_irq(True)


def test_reset_restores_power_on_state(bus, regfile_fn):
    moves = []
    regfile_fn.add_mapping_listener(lambda f, bar: moves.append(bar.address))
    bus.config_write(BDF, regs.BASE_ADDRESS_0, 4, 0xC0000000)
    bus.config_write(BDF, regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_MASTER)
    bus.config_write(BDF, regs.CACHE_LINE_SIZE, 1, 0x10)
    bus.config_write(BDF, regs.INTERRUPT_LINE, 1, 11)
    regfile_fn.signal_error(regs.STATUS_REC_MASTER_ABORT)
    regfile_fn.set_irq(True)
    assert moves == [0xC0000000]
    regfile_fn.reset()
    assert bus.config_read(BDF, regs.COMMAND, 4) == 0
    assert bus.config_read(BDF, regs.BASE_ADDRESS_0, 4) == 0
    assert bus.config_read(BDF, regs.CACHE_LINE_SIZE, 1) == 0
    assert bus.config_read(BDF, regs.INTERRUPT_LINE, 1) == 0
    assert bus.config_read(BDF, regs.VENDOR_ID, 2) == 0x1234
    assert not bus.irq.intx_level(bus.intx_route(BDF))
    assert moves == [0xC0000000, None]
    assert reads_unassigned(bus, 0xC0000000, 4)


def test_multifunction_devices_set_the_header_bit(bus):
    f0, f1 = PCIFunction(0x1234, 1, 0xFF0000), PCIFunction(0x1234, 2, 0xFF0000)
    bus.plug(f0, 9, 0)
    assert bus.config_read(make_bdf(0, 9, 0), regs.HEADER_TYPE, 1) == 0
    bus.plug(f1, 9, 3)
    for fn in (0, 3):
        assert bus.config_read(make_bdf(0, 9, fn), regs.HEADER_TYPE, 1) == 0x80
    with pytest.raises(EmuBug):
        bus.plug(PCIFunction(0x1234, 3, 0xFF0000), 9, 3)


def test_lock_is_the_bus_lock_once_plugged():
    fn = PCIFunction(0x1234, 1, 0xFF0000)
    fn.add_bar(0, 0x100, ops=RegFile(0x100))
    own = fn.lock
    b = Platform()
    b.plug(fn, 1)
    assert fn.lock is b.lock and fn.lock is not own
    b.close()
