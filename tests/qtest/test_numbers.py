"""Numbers parse exactly as QEMU's qemu_strtou64 / qemu_strtoi64 /
qemu_strtoi (base 0, whole string) do on glibc: checked against the C
library's own strtoull/strtoll through ctypes."""
from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from hypothesis import given, settings, strategies as st

from emu.qtest.errors import BadCommand
from emu.qtest.numbers import parse_i64, parse_int, parse_u64

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.strtoull.restype = ctypes.c_ulonglong
libc.strtoull.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
libc.strtoll.restype = ctypes.c_longlong
libc.strtoll.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
ERANGE = 34


def _c(fn, word: str):
    """qemu_strtou64/qemu_strtoi64's verdict: the value, or None (-EINVAL/-ERANGE)."""
    raw = word.encode()
    buf = ctypes.create_string_buffer(raw)
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    value = fn(buf, ctypes.byref(end), 0)
    err = ctypes.get_errno()
    consumed = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)
    if err == ERANGE or consumed == 0 or consumed != len(raw):
        return None
    return value


def _py(fn, word: str):
    try:
        return fn(word)
    except BadCommand:
        return None


@pytest.mark.parametrize("word,value", [
    ("0", 0), ("10", 10), ("0x10", 16), ("0X1f", 31), ("010", 8), ("+7", 7),
    ("0xffffffffffffffff", (1 << 64) - 1), ("18446744073709551615", (1 << 64) - 1),
    ("-1", (1 << 64) - 1),                   # strtoull negates modulo 2^64
    ("\t 42", 42),                           # leading C white space is skipped
    ("-18446744073709551615", 1),
])
def test_u64_accepts(word, value):
    assert parse_u64(word) == value


@pytest.mark.parametrize("word", [
    "", " ", "0x", "0x ", "08", "09", "0b1", "1 ", "12abc", "0x1g", "--1", "+-1", "1_000",
    "18446744073709551616", "0x10000000000000000", "-18446744073709551616", "1e3", "٣",
    "42\r",                                  # a CRLF line's last word, as QEMU: refused
])
def test_u64_refuses(word):
    with pytest.raises(BadCommand):
        parse_u64(word)


def test_i64_and_int_ranges():
    assert parse_i64("-9223372036854775808") == -(1 << 63)
    assert parse_i64("0x7fffffffffffffff") == (1 << 63) - 1
    for bad in ("9223372036854775808", "-9223372036854775809", "0x8000000000000000"):
        with pytest.raises(BadCommand):
            parse_i64(bad)
    assert parse_int("-2147483648") == -(1 << 31)
    assert parse_int("0x7fffffff") == (1 << 31) - 1
    for bad in ("2147483648", "-2147483649", "0xffffffff"):
        with pytest.raises(BadCommand):
            parse_int(bad)


number_like = st.text(alphabet="0123456789abcdefxXABCDEF+- \t\n\v\f\r_g", max_size=24)
numbers = st.one_of(
    number_like,
    st.integers(-(1 << 66), 1 << 66).map(str),
    st.integers(0, 1 << 66).map(hex),
    st.integers(0, 1 << 66).map(lambda v: f"0{v:o}"),
)


@settings(max_examples=3000, deadline=None)
@given(numbers)
def test_u64_matches_strtoull(word):
    assert _py(parse_u64, word) == _c(libc.strtoull, word)


@settings(max_examples=3000, deadline=None)
@given(numbers)
def test_i64_matches_strtoll(word):
    assert _py(parse_i64, word) == _c(libc.strtoll, word)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_any_text_parses_or_refuses(word):
    # arbitrary Unicode never escapes as anything but BadCommand
    if "\0" in word:
        return                               # a C string ends there; split_words refuses NUL
    for fn in (parse_u64, parse_i64, parse_int):
        try:
            fn(word)
        except BadCommand:
            pass
