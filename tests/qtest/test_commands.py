"""Every command of QEMU 7.2's qtest protocol parses into its typed form;
every malformed form is refused with a reason."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from emu.qtest.commands import (BufRead, BufWrite, ClockSet, ClockStep, Endianness,
                                IrqIntercept, MemRead, MemWrite, Memset, ModuleLoad, PortIn,
                                PortOut, SetIrqIn, UnknownCommand, parse)
from emu.qtest.errors import BadCommand
from emu.qtest.lines import MAX_TRANSFER


@pytest.mark.parametrize("line,cmd", [
    (b"outb 0x80 0x12", PortOut(1, 0x80, 0x12)),
    (b"outw 0xcfc 0xffff", PortOut(2, 0xCFC, 0xFFFF)),
    (b"outl 0xcf8 0x80000000", PortOut(4, 0xCF8, 0x80000000)),
    (b"outb 0xffff 0x1ff", PortOut(1, 0xFFFF, 0xFF)),          # cpu_outb's uint8_t
    (b"outl 0 -1", PortOut(4, 0, 0xFFFFFFFF)),
    (b"inb 0x510", PortIn(1, 0x510)),
    (b"inw 0xae08", PortIn(2, 0xAE08)),
    (b"inl 0xcfc", PortIn(4, 0xCFC)),
    (b"writeb 0x1000 0x1234", MemWrite(1, 0x1000, 0x34)),
    (b"writew 0x1000 0x1234", MemWrite(2, 0x1000, 0x1234)),
    (b"writel 0xfebf1000 0x1", MemWrite(4, 0xFEBF1000, 1)),
    (b"writeq 0x1000 0xffffffffffffffff", MemWrite(8, 0x1000, (1 << 64) - 1)),
    (b"readb 0x0", MemRead(1, 0)),
    (b"readq 0xfffffffffffffff8", MemRead(8, (1 << 64) - 8)),
    (b"read 0x1000 0x10", BufRead(0x1000, 16, False)),
    (b"b64read 0x1000 0x0", BufRead(0x1000, 0, True)),
    (b"write 0x1000 0x4 0x0102", BufWrite(0x1000, 4, b"\x01\x02\x00\x00", False)),
    (b"write 0x1000 0x2 0xAbcD", BufWrite(0x1000, 2, b"\xab\xcd", False)),
    (b"b64write 0x10 0x3 " + base64.b64encode(b"abc"), BufWrite(0x10, 3, b"abc", True)),
    (b"b64write 0x10 0x2 " + base64.b64encode(b"abc"), BufWrite(0x10, 2, b"ab", True, 3)),
    (b"b64write 0x10 0x5 " + base64.b64encode(b"abc"), BufWrite(0x10, 5, b"abc", True, 3)),
    (b"memset 0x1000 0x100 0x1a5", Memset(0x1000, 0x100, 0xA5)),
    (b"memset 0x1000 0x0 0x0", Memset(0x1000, 0, 0)),
    (b"clock_step", ClockStep(None)),
    (b"clock_step 100", ClockStep(100)),
    (b"clock_step -5", ClockStep(-5)),
    (b"clock_set 1000000", ClockSet(1000000)),
    (b"irq_intercept_in ioapic", IrqIntercept("in", "ioapic")),
    (b"irq_intercept_out /machine/unattached/device[0]",
     IrqIntercept("out", "/machine/unattached/device[0]")),
    (b"set_irq_in /machine/ioapic unnamed-gpio-in 11 1", SetIrqIn("/machine/ioapic", None, 11, 1)),
    (b"set_irq_in /machine/ioapic gsi 11 -1", SetIrqIn("/machine/ioapic", "gsi", 11, -1)),
    (b"endianness", Endianness()),
    (b"module_load accel tcg-x86", ModuleLoad("accel", "tcg-x86")),
])
def test_good_commands(line, cmd):
    assert parse(line) == cmd


@pytest.mark.parametrize("line,reason", [
    (b"", "empty command"),
    (b" outb 0x80 1", "empty command"),                 # g_strsplit: first word ""
    (b"outb 0x80", "missing argument"),
    (b"outb 0x80 1 2", "too many arguments"),
    (b"outb  0x80 1", "too many arguments"),            # two spaces: an empty word
    (b"outb 0x10000 1", "past 0xffff"),
    (b"outb -1 1", "past 0xffff"),
    (b"inl 0x80 0", "too many arguments"),
    (b"inq 0x80", "Unknown command 'inq'"),
    (b"outq 0x80 1", "Unknown command 'outq'"),
    (b"readx 0x0", "Unknown command 'readx'"),
    (b"rtas foo 1 0x0 1 0x0", "Unknown command 'rtas'"),  # sPAPR only
    (b"OUTB 0x80 1", "Unknown command 'OUTB'"),
    (b"readl 0xfffffffffffffffe", "wraps"),
    (b"readl 0x1 0x2", "too many arguments"),
    (b"writel 0x1000", "missing argument"),
    (b"writel 0x1000 0x1g", "invalid number"),
    (b"writel 0x1000 0x10000000000000000", "out of range"),
    (b"read 0x1000 0", "must not be 0"),
    (b"read 0x1000 " + hex(MAX_TRANSFER + 1).encode(), "exceeds the limit"),
    (b"read 0xffffffffffffff00 0x200", "wraps"),
    (b"read 0x1000", "missing argument"),
    (b"b64read 0x1000 -1", "exceeds the limit"),
    (b"write 0x1000 0x4", "missing argument"),
    (b"write 0x1000 0x4 0x", "invalid argument size"),
    (b"write 0x1000 0x4 0x1", "odd number"),
    (b"write 0x1000 0x4 0x123", "odd number"),
    (b"write 0x1000 0x4 1234", "must start with 0x"),
    (b"write 0x1000 0x1 0x1234", "more than SIZE"),
    (b"write 0x1000 0x2 0xzz", "not hex"),
    (b"write 0x1000 0x2 0x1\t", "not hex"),
    (b"b64write 0x1000 0x3 ", "invalid argument size"),   # libqtest's size-0 form
    (b"b64write 0x1000 0x3 YW", "invalid argument size"),
    (b"b64write 0x1000 0x3 YW*j", "not valid base64"),
    (b"b64write 0x1000 0x2 YWJ", "not valid base64"),     # missing padding
    (b"memset 0x1000 0x10", "missing argument"),
    (b"memset 0x1000 0x10 x", "invalid number"),
    (b"clock_step 1 2", "too many arguments"),
    (b"clock_step 0x8000000000000000", "out of range"),
    (b"clock_set", "missing argument"),
    (b"clock_set abc", "invalid number"),
    (b"irq_intercept_in", "missing argument"),
    (b"irq_intercept_in ", "empty QOM-PATH"),
    (b"set_irq_in ioapic unnamed-gpio-in 1", "missing argument"),
    (b"set_irq_in ioapic unnamed-gpio-in 1 0x80000000", "out of range"),
    (b"set_irq_in ioapic unnamed-gpio-in -1 1", "negative IRQ"),
    (b"endianness big", "too many arguments"),
    (b"module_load accel", "missing argument"),
    (b"outb 0x80 \xff", "not ASCII"),
    (b"outb 0x80\x00 1", "NUL"),
])
def test_bad_commands(line, reason):
    with pytest.raises(BadCommand) as e:
        parse(line)
    assert reason in str(e.value)


def test_unknown_command_text_is_qemus():
    with pytest.raises(UnknownCommand) as e:
        parse(b"frobnicate 1 2")
    assert str(e.value) == "Unknown command 'frobnicate'"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.binary(min_size=1, max_size=64))
def test_write_and_b64write_round_trip(addr, data):
    n = len(data)
    if addr + n > 1 << 64:
        addr = 0
    assert parse(f"write 0x{addr:x} 0x{n:x} 0x{data.hex()}".encode()).data == data
    b64 = base64.b64encode(data).decode()
    assert parse(f"b64write 0x{addr:x} 0x{n:x} {b64}".encode()).data == data


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_lines_parse_or_refuse(line):
    try:
        parse(line)
    except BadCommand:
        pass


words = st.sampled_from(["outb", "outw", "outl", "inb", "inw", "inl", "writeb", "writeq",
                         "readl", "read", "write", "b64read", "b64write", "memset",
                         "clock_step", "clock_set", "irq_intercept_in", "set_irq_in",
                         "endianness", "module_load"])
args = st.lists(st.one_of(st.integers(-(1 << 65), 1 << 65).map(str),
                          st.integers(0, 1 << 65).map(hex),
                          st.text(alphabet="0x1fgAZ=+/ -", max_size=12)), max_size=5)


@settings(max_examples=1500, deadline=None)
@given(words, args)
def test_commands_with_arbitrary_arguments_parse_or_refuse(word, argv):
    try:
        cmd = parse(" ".join([word] + argv).encode())
    except BadCommand:
        return
    # whatever parses is within the protocol's bounds
    for field in ("port",):
        if hasattr(cmd, field):
            assert 0 <= cmd.port <= 0xFFFF
    if hasattr(cmd, "length"):
        assert 0 <= cmd.length <= MAX_TRANSFER
    if hasattr(cmd, "addr"):
        assert 0 <= cmd.addr and cmd.addr + getattr(cmd, "length", getattr(cmd, "size", 0)) <= 1 << 64
