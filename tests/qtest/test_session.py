"""The session against a fake machine: every command's reply exactly as
QEMU 7.2 formats it, every bad command answered FAIL and counted with the
session still serving, IRQ lines in order with replies, the log format."""
from __future__ import annotations

import base64
import contextlib
import io
import os
import re

import pytest

from emu.qtest.errors import UsageError
from emu.qtest.log import QtestLog
from emu.qtest.session import MAX_IRQ, QtestSession
from .fake_target import MMIO_REG, PORT_FAULT, PORT_IRQ, PORT_SCRATCH, FakeTarget


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 0.25
        return self.t


@pytest.fixture
def rig():
    target = FakeTarget()
    logbuf = io.StringIO()
    session = QtestSession(target, log=QtestLog(logbuf, clock=Clock()))
    session.connection_made()
    return target, session, logbuf


def ask(session, *lines: str) -> list[str]:
    session.receive(b"".join(line.encode() + b"\n" for line in lines))
    out = session.data_to_send().decode()
    assert out.endswith("\n") or out == ""
    return out.splitlines()


def test_port_io(rig):
    target, s, _ = rig
    assert ask(s, "outb 0x80 0x1ff", "inb 0x80") == ["OK", "OK 0x00ff"]
    assert ask(s, "outw 0x80 0x1234", "inw 0x80", "inb 0x80") == ["OK", "OK 0x1234", "OK 0x0034"]
    assert ask(s, "outl 0x80 0xdeadbeef", "inl 0x80") == ["OK", "OK 0xdeadbeef"]
    assert ask(s, "inb 0x70", "inw 0x70", "inl 0x70") == ["OK 0x00ff", "OK 0xffff", "OK 0xffffffff"]
    assert ("out", PORT_SCRATCH, 2, 0x1234) in target.accesses


def test_memory_scalars(rig):
    target, s, _ = rig
    assert ask(s, "writeq 0x1000 0x1122334455667788") == ["OK"]
    assert target.ram[0x1000:0x1008] == bytes.fromhex("8877665544332211")   # little endian
    assert ask(s, "readb 0x1000", "readw 0x1000", "readl 0x1000", "readq 0x1000") == [
        "OK 0x0000000000000088", "OK 0x0000000000007788", "OK 0x0000000055667788",
        "OK 0x1122334455667788"]
    assert ask(s, "writeb 0x2000 0x1ab", "writew 0x2002 0xbeef", "writel 0x2004 -1") == ["OK"] * 3
    assert target.ram[0x2000:0x2008] == bytes.fromhex("ab00efbeffffffff")


def test_mmio_is_one_access_of_the_size_asked(rig):
    target, s, _ = rig
    assert ask(s, f"writel 0x{MMIO_REG:x} 0xcafe", f"readl 0x{MMIO_REG:x}") == [
        "OK", "OK 0x000000000000cafe"]
    assert ("write", MMIO_REG, 4, 0xCAFE) in target.accesses
    assert ask(s, f"readw 0x{MMIO_REG:x}") == ["FAIL MMIO register takes 4-byte accesses only"]


def test_buffers(rig):
    target, s, _ = rig
    assert ask(s, "write 0x3000 0x4 0x0102", "read 0x3000 0x5") == ["OK", "OK 0x0102000000"]
    data = bytes(range(256)) * 3
    b64 = base64.b64encode(data).decode()
    assert ask(s, f"b64write 0x4000 0x{len(data):x} {b64}") == ["OK"]
    assert bytes(target.ram[0x4000:0x4000 + len(data)]) == data
    assert ask(s, f"b64read 0x4000 0x{len(data):x}") == [f"OK {b64}"]
    assert ask(s, "b64read 0x4000 0x0") == ["OK "]          # QEMU: "OK %s\n" of ""
    assert ask(s, "memset 0x4000 0x10 0x1a5", "read 0x4000 0x11") == ["OK", "OK 0x" + "a5" * 16 + "10"]
    assert ask(s, "memset 0x4000 0 0x55", "readb 0x4000") == ["OK", "OK 0x00000000000000a5"]


def test_b64write_size_mismatch_is_logged_and_truncated(rig):
    target, s, log = rig
    target.ram[0x10:0x20] = b"\xee" * 16
    assert ask(s, "b64write 0x10 0x2 " + base64.b64encode(b"abcd").decode()) == ["OK"]
    assert ask(s, "b64write 0x18 0x8 " + base64.b64encode(b"xy").decode()) == ["OK"]
    assert bytes(target.ram[0x10:0x20]) == b"ab" + b"\xee" * 6 + b"xy" + b"\xee" * 6
    assert "b64write: data length mismatch (told 2, found 4)\n" in log.getvalue()
    assert "b64write: data length mismatch (told 8, found 2)\n" in log.getvalue()


def test_clock(rig):
    target, s, _ = rig
    target.timers = [500, 2000]
    assert ask(s, "clock_step 100") == ["OK 100"]
    assert ask(s, "clock_step") == ["OK 500"]                # to the next deadline
    assert target.fired == [500]
    assert ask(s, "clock_step -50") == ["OK 500"]            # a negative step warps nowhere
    assert ask(s, "clock_set 300") == ["OK 500"]             # never backwards
    assert ask(s, "clock_set 5000") == ["OK 5000"]
    assert target.fired == [500, 2000]
    assert ask(s, "clock_step") == ["OK 5000"]               # no timer: no change


def test_endianness_and_module_load(rig):
    _, s, _ = rig
    assert ask(s, "endianness") == ["OK little"]
    assert ask(s, "module_load accel tcg-x86") == ["OK"]
    assert ask(s, "module_load block- curl") == ["FAIL"]
    assert s.counters.refused == {}                          # an answer, not a refusal


def test_irq_intercept_and_lines(rig):
    target, s, _ = rig
    assert ask(s, f"outb 0x{PORT_IRQ:x} 4") == ["OK"]         # not intercepted yet: silent
    assert ask(s, "irq_intercept_in ioapic") == ["OK"]
    assert target.intercepted == [("ioapic", "in")]
    # an IRQ raised by a command comes before that command's OK
    assert ask(s, f"outb 0x{PORT_IRQ:x} 4") == ["IRQ raise 4", "OK"]
    assert ask(s, f"outb 0x{PORT_IRQ:x} 4") == ["OK"]         # no change, no line
    assert ask(s, f"outw 0x{PORT_IRQ:x} 0x104") == ["IRQ lower 4", "OK"]
    # the same device again is fine; another one is refused; unknown paths too
    assert ask(s, "irq_intercept_in /machine/ioapic") == ["OK"]
    assert ask(s, "irq_intercept_out /machine/unattached/device[0]") == [
        "FAIL IRQ intercept already enabled"]
    assert ask(s, "irq_intercept_in /machine/nothing") == ["FAIL Unknown device"]
    assert target.intercepted == [("ioapic", "in")]
    assert ask(s, "set_irq_in ioapic unnamed-gpio-in 11 1") == ["IRQ raise 11", "OK"]
    assert target.irq_inputs == {(None, 11): 1}
    assert ask(s, "set_irq_in ioapic unnamed-gpio-in 30 1") == ["FAIL ioapic has no input None[30]"]
    assert ask(s, "set_irq_in nowhere unnamed-gpio-in 1 1") == ["FAIL Unknown device"]


def test_irq_between_commands_is_queued_and_announced(rig):
    target, s, _ = rig
    woken = []
    s.on_output = lambda: woken.append(1)
    ask(s, "irq_intercept_in ioapic")
    target.notify(9, 1)                                       # e.g. a device's timer
    assert woken == [1]
    assert s.data_to_send() == b"IRQ raise 9\n"
    target.notify(9, 1)
    assert s.data_to_send() == b"" and woken == [1]
    with pytest.raises(UsageError):
        target.notify(MAX_IRQ, 1)


def test_levels_restart_at_zero_on_a_new_connection(rig):
    target, s, _ = rig
    ask(s, "irq_intercept_in ioapic", f"outb 0x{PORT_IRQ:x} 3")
    s.connection_lost()
    s.connection_made()
    assert ask(s, f"outb 0x{PORT_IRQ:x} 3") == ["IRQ raise 3", "OK"]


BAD = [
    ("", "FAIL empty command"),
    ("outb 0x10000 1", "FAIL port 0x10000 is past 0xffff"),
    ("inb", "FAIL missing argument: usage: inb ADDR"),
    ("frob", "FAIL Unknown command 'frob'"),
    ("read 0x0 0", "FAIL SIZE must not be 0"),
    ("write 0x0 0x2 0xzz", "FAIL DATA is not hex"),
    ("b64write 0x0 0x2 ***=", "FAIL B64_DATA is not valid base64"),
    (f"inb 0x{PORT_FAULT:x}", f"FAIL port 0x{PORT_FAULT:x} refuses access"),
    ("readl 0x200000", "FAIL 0x200000+0x4 is outside RAM"),       # GuestMemoryError
    ("read 0xffff0 0x20", "FAIL 0xffff0+0x20 is outside RAM"),
    ("clock_set x", "FAIL invalid number 'x'"),
]


@pytest.mark.parametrize("line,reply", BAD)
def test_bad_command_then_good_ones(rig, line, reply):
    target, s, _ = rig
    assert ask(s, "writeb 0x10 0x42") == ["OK"]
    before = bytes(target.ram)
    assert ask(s, line, "readb 0x10", "endianness") == [reply, "OK 0x0000000000000042", "OK little"]
    assert bytes(target.ram) == before                       # a refused command changed nothing
    assert sum(s.counters.refused.values()) == 1
    assert s.counters.last_error.endswith(reply[5:])


def test_every_refusal_is_counted_by_command(rig):
    _, s, _ = rig
    ask(s, *[line for line, _ in BAD], "inb 0x80")
    c = s.counters.as_dict()
    assert c["refused_total"] == len(BAD)
    assert c["refused"]["read"] == 2 and c["refused"]["<empty>"] == 1
    assert c["commands"] == len(BAD) + 1


def test_over_long_line_is_refused_and_the_session_goes_on():
    target = FakeTarget()
    s = QtestSession(target, max_line=64)
    s.connection_made()
    s.receive(b"write 0x0 0x40 0x" + b"00" * 64 + b"\nendianness\n")
    assert s.data_to_send() == (b"FAIL line longer than 64 bytes (145 bytes dropped)\n"
                                b"OK little\n")
    assert s.counters.refused == {"<line>": 1}


def test_non_ascii_line(rig):
    _, s, log = rig
    s.receive(b"outb \xff\xfe 1\nendianness\n")
    assert s.data_to_send() == b"FAIL command line is not ASCII\nOK little\n"
    assert "[R +0.250000] outb \\xff\\xfe 1\n" in log.getvalue()


def test_nothing_is_sent_on_a_closed_connection(rig):
    _, s, _ = rig
    s.connection_lost()
    s.receive(b"endianness\n")
    assert s.data_to_send() == b""


def test_log_format_is_qemus(rig):
    target, s, log = rig
    ask(s, "irq_intercept_in ioapic", f"outb 0x{PORT_IRQ:x} 1", "frob x")
    s.connection_lost()
    lines = log.getvalue().splitlines()
    assert lines[0] == "[I 0.000000] OPENED"
    assert lines[1:] == [
        "[R +0.250000] irq_intercept_in ioapic",
        "[S +0.500000] OK",
        "[R +0.750000] outb 0x99 1",
        "[S +1.000000] IRQ raise 1",
        "[S +1.250000] OK",
        "[R +1.500000] frob x",
        "[S +1.750000] FAIL Unknown command 'frob'",
        "[I +2.000000] CLOSED",
    ]
    for line in lines:
        assert re.fullmatch(r"\[(I|R|S) \+?\d+\.\d{6}\]( .*)?", line)


def test_log_open_specs(tmp_path):
    import sys
    assert QtestLog.open("none") is None
    assert QtestLog.open(None)._sink is sys.stderr
    path = tmp_path / "qtest.log"
    path.write_text("old contents\n")
    log = QtestLog.open(str(path))
    log.opened()
    log.received(["endianness"])
    log.sent("OK little\n")
    log.close()
    text = path.read_text()
    assert "old contents" not in text                          # truncated, as fopen("w+")
    assert re.fullmatch(r"\[I 0\.0+\] OPENED\n\[R \+\d\.\d{6}\] endianness\n"
                        r"\[S \+\d\.\d{6}\] OK little\n", text)


def test_output_is_bounded_and_the_rest_waits_in_order():
    target = FakeTarget()
    s = QtestSession(target, max_output=3000)
    s.connection_made()
    s.receive(b"read 0x0 0x400\n" * 10 + b"endianness\n")   # each reply is 2057 bytes
    first = s.data_to_send()
    assert first.count(b"\n") == 2                           # stopped past 3000 bytes
    assert s.pending_lines == 9
    replies = first
    while s.pending_lines:
        s.process_pending()
        out = s.data_to_send()
        assert 0 < len(out) <= 3000 + 2100
        replies += out
    lines = replies.splitlines()
    assert lines == [b"OK 0x" + b"00" * 0x400] * 10 + [b"OK little"]
    assert s.counters.commands == 11


def test_pending_lines_are_dropped_with_the_connection():
    s = QtestSession(FakeTarget(), max_output=10)
    s.connection_made()
    s.receive(b"endianness\n" * 5)
    assert s.pending_lines == 4
    s.connection_lost()
    assert s.pending_lines == 0


def test_a_log_that_cannot_be_written_does_not_stop_the_session(tmp_path):
    r, w = os.pipe()
    os.close(r)                                   # writes to w now fail with EPIPE
    sink = os.fdopen(w, "w")
    s = QtestSession(FakeTarget(), log=QtestLog(sink))
    s.connection_made()
    assert ask(s, "endianness", "inb 0x70") == ["OK little", "OK 0x00ff"]
    assert s.log.broken
    with contextlib.suppress(BrokenPipeError):
        sink.close()
