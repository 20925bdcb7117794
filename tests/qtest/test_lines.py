"""The line decoder: lines end at \\n only; an over-long line is dropped
(never buffered) and reported once, and the next line is served."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from emu.qtest.errors import LineTooLong
from emu.qtest.lines import LineDecoder


def test_lines_split_at_newline_only():
    d = LineDecoder()
    assert d.feed(b"outb 0x80 1\nin") == [b"outb 0x80 1"]
    assert d.pending == 2
    assert d.feed(b"b 0x80\r\n\n") == [b"inb 0x80\r", b""]   # \r stays, as in QEMU
    assert d.pending == 0


def test_over_long_line_is_dropped_and_reported_once():
    d = LineDecoder(max_line=16)
    out = d.feed(b"x" * 10)
    assert out == [] and d.pending == 10
    out = d.feed(b"y" * 100)                 # past the bound: nothing kept
    assert out == [] and len(d._buf) == 0 and d.pending == 110
    out = d.feed(b"z" * 1000 + b"\nendianness\n")
    assert len(out) == 2
    assert isinstance(out[0], LineTooLong) and "1110 bytes" in str(out[0])
    assert out[1] == b"endianness"


def test_line_of_exactly_the_bound_is_kept():
    d = LineDecoder(max_line=8)
    assert d.feed(b"12345678\n123456789\nok\n")[0] == b"12345678"
    d2 = LineDecoder(max_line=8)
    out = d2.feed(b"123456789\nok\n")
    assert isinstance(out[0], LineTooLong) and out[1] == b"ok"


def test_bound_must_be_positive():
    with pytest.raises(ValueError):
        LineDecoder(max_line=0)


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12)


@settings(max_examples=400, deadline=None)
@given(lines, st.lists(st.integers(0, 600), max_size=12), st.integers(1, 48))
def test_any_chunking_gives_the_same_lines(ls, cuts, bound):
    stream = b"".join(line + b"\n" for line in ls)
    expect = [line if len(line) <= bound else "too long" for line in ls]
    d = LineDecoder(max_line=bound)
    got, prev = [], 0
    for cut in sorted(c for c in cuts if c <= len(stream)) + [len(stream)]:
        got += d.feed(stream[prev:cut])
        prev = cut
        assert len(d._buf) <= bound           # never buffers past the bound
    got = ["too long" if isinstance(g, LineTooLong) else g for g in got]
    assert got == expect
    assert d.pending == 0
