"""Parse and check one qtest command line of QEMU 7.2's protocol
(softmmu/qtest.c, "QTest Protocol").

A line is split on single spaces, as ``g_strsplit(line, " ", 0)`` does (so
two spaces make an empty word).  Each command is checked completely before
anything is done: a missing or extra argument, a number QEMU's parser
rejects, a port past 0xffff, a zero or over-long transfer, bad hex or
base64 -- each raises :class:`BadCommand`, which the session answers
``FAIL <reason>``.  Where QEMU silently truncates a value (``outb 0x1ff``
writes 0xff, ``memset``'s pattern is a byte) emu truncates the same way.

The target-specific ``rtas`` (sPAPR only) is not part of x86_64's protocol
and is an unknown command, as in an x86_64 QEMU.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal, Union

from emu.qtest.errors import BadCommand
from emu.qtest.lines import MAX_TRANSFER
from emu.qtest.numbers import parse_i64, parse_int, parse_u64

MAX_PORT = 0xFFFF                  # (qtest.c: g_assert(addr <= 0xffff))
ACCESS_SIZES = {"b": 1, "w": 2, "l": 4, "q": 8}
UNNAMED_GPIO_IN = "unnamed-gpio-in"   # set_irq_in's name for the unnamed list


@dataclass(frozen=True)
class PortOut:                     # outb/outw/outl PORT VALUE
    size: int
    port: int
    value: int


@dataclass(frozen=True)
class PortIn:                      # inb/inw/inl PORT
    size: int
    port: int


@dataclass(frozen=True)
class MemWrite:                    # writeb/w/l/q ADDR VALUE
    size: int
    addr: int
    value: int


@dataclass(frozen=True)
class MemRead:                     # readb/w/l/q ADDR
    size: int
    addr: int


@dataclass(frozen=True)
class BufRead:                     # read ADDR SIZE  /  b64read ADDR SIZE
    addr: int
    length: int
    b64: bool


@dataclass(frozen=True)
class BufWrite:                    # write ADDR SIZE 0xDATA  /  b64write ADDR SIZE B64
    addr: int
    length: int
    data: bytes                    # exactly what is written (zero-filled / truncated)
    b64: bool
    mismatch: int | None = None    # b64write: decoded length when it was not SIZE


@dataclass(frozen=True)
class Memset:                      # memset ADDR SIZE PATTERN
    addr: int
    length: int
    pattern: int


@dataclass(frozen=True)
class ClockStep:                   # clock_step [NS]
    ns: int | None                 # None: to the next timer deadline


@dataclass(frozen=True)
class ClockSet:                    # clock_set NS
    ns: int


@dataclass(frozen=True)
class IrqIntercept:                # irq_intercept_in/out QOM-PATH
    direction: Literal["in", "out"]
    path: str


@dataclass(frozen=True)
class SetIrqIn:                    # set_irq_in QOM-PATH NAME NUM LEVEL
    path: str
    name: str | None               # None: the unnamed gpio-in list
    num: int
    level: int


@dataclass(frozen=True)
class Endianness:                  # endianness
    pass


@dataclass(frozen=True)
class ModuleLoad:                  # module_load PREFIX NAME
    prefix: str
    name: str


Command = Union[PortOut, PortIn, MemWrite, MemRead, BufRead, BufWrite, Memset, ClockStep,
                ClockSet, IrqIntercept, SetIrqIn, Endianness, ModuleLoad]


class UnknownCommand(BadCommand):
    """QEMU's own reply for this case: ``FAIL Unknown command 'WORD'``."""

    def __init__(self, word: str):
        super().__init__(f"Unknown command '{word}'")
        self.word = word


def split_words(line: bytes) -> list[str]:
    """The words of one line, as QEMU splits it; non-ASCII is refused
    (no command, number or QOM path of the protocol needs it)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise BadCommand("command line is not ASCII") from None
    if "\0" in text:
        raise BadCommand("command line contains a NUL byte")
    return text.split(" ") if text else []


def _arity(words: list[str], n: int, usage: str) -> None:
    if len(words) - 1 != n:
        what = "missing argument" if len(words) - 1 < n else "too many arguments"
        raise BadCommand(f"{what}: usage: {usage}")


def _addr_range(addr: int, length: int) -> None:
    if addr + length > (1 << 64):
        raise BadCommand(f"range 0x{addr:x}+0x{length:x} wraps past 2^64")


def _length(word: str, *, allow_zero: bool) -> int:
    length = parse_u64(word)
    if length == 0 and not allow_zero:
        # (qtest.c "read": "We'd send garbage to libqtest if len is 0")
        raise BadCommand("SIZE must not be 0")
    if length > MAX_TRANSFER:
        raise BadCommand(f"SIZE 0x{length:x} exceeds the limit 0x{MAX_TRANSFER:x}")
    return length


def _hex_data(word: str, length: int) -> bytes:
    # QEMU skips two characters unchecked and reads nibbles; it zero-fills
    # what the data does not cover (qtest.c: "DATA is an arbitrarily long hex
    # number prefixed with '0x'.  If it's smaller than the expected size, the
    # value will be zero filled")
    if len(word) < 3:
        raise BadCommand("invalid argument size")        # QEMU: "ERR invalid argument size"
    if word[:2] not in ("0x", "0X"):
        raise BadCommand("DATA must start with 0x")
    digits = word[2:]
    if len(digits) % 2:
        raise BadCommand("DATA has an odd number of hex digits")
    if len(digits) > 2 * length:
        raise BadCommand(f"DATA holds more than SIZE (0x{length:x}) bytes")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise BadCommand("DATA is not hex") from None
    if any(c in " \t\n\r\v\f" for c in digits):     # fromhex skips white space
        raise BadCommand("DATA is not hex")
    return data + bytes(length - len(data))


def _b64_data(word: str, length: int) -> tuple[bytes, int | None]:
    if len(word) < 3:
        raise BadCommand("invalid argument size")        # QEMU: "ERR invalid argument size"
    if len(word) > 4 * ((MAX_TRANSFER + 2) // 3):
        raise BadCommand("B64_DATA exceeds the transfer limit")
    try:
        data = base64.b64decode(word, validate=True)
    except (binascii.Error, ValueError):
        raise BadCommand("B64_DATA is not valid base64") from None
    if len(data) == length:
        return data, None
    # (qtest.c: "If the sizes do not match, the data will be truncated")
    return data[:length], len(data)


def parse(line: bytes) -> Command:
    """One command line (without its ``\\n``) -> a checked :data:`Command`."""
    words = split_words(line)
    if not words or not words[0]:
        raise BadCommand("empty command")
    cmd = words[0]
    head, tail = cmd[:-1], cmd[-1:]
    if head in ("out", "in") and tail and tail in "bwl":
        size = ACCESS_SIZES[tail]
        if head == "out":
            _arity(words, 2, f"{cmd} ADDR VALUE")
            port, value = parse_u64(words[1]), parse_u64(words[2])
        else:
            _arity(words, 1, f"{cmd} ADDR")
            port, value = parse_u64(words[1]), 0
        if port > MAX_PORT:
            raise BadCommand(f"port 0x{port:x} is past 0x{MAX_PORT:x}")
        # (cpu_outb/outw/outl take the low 8/16/32 bits, as QEMU's casts do)
        if head == "out":
            return PortOut(size, port, value & ((1 << (8 * size)) - 1))
        return PortIn(size, port)
    if head in ("write", "read") and tail and tail in "bwlq":
        size = ACCESS_SIZES[tail]
        if head == "write":
            _arity(words, 2, f"{cmd} ADDR VALUE")
            addr, value = parse_u64(words[1]), parse_u64(words[2])
        else:
            _arity(words, 1, f"{cmd} ADDR")
            addr, value = parse_u64(words[1]), 0
        _addr_range(addr, size)
        if head == "write":
            return MemWrite(size, addr, value & ((1 << (8 * size)) - 1))
        return MemRead(size, addr)
    if cmd in ("read", "b64read"):
        _arity(words, 2, f"{cmd} ADDR SIZE")
        addr = parse_u64(words[1])
        length = _length(words[2], allow_zero=cmd == "b64read")
        _addr_range(addr, length)
        return BufRead(addr, length, cmd == "b64read")
    if cmd in ("write", "b64write"):
        _arity(words, 3, f"{cmd} ADDR SIZE DATA")
        addr = parse_u64(words[1])
        length = _length(words[2], allow_zero=True)
        _addr_range(addr, length)
        if cmd == "write":
            return BufWrite(addr, length, _hex_data(words[3], length), False)
        data, mismatch = _b64_data(words[3], length)
        return BufWrite(addr, length, data, True, mismatch)
    if cmd == "memset":
        _arity(words, 3, "memset ADDR SIZE VALUE")
        addr = parse_u64(words[1])
        length = _length(words[2], allow_zero=True)   # (qtest.c: "a zero size is permitted")
        pattern = parse_u64(words[3]) & 0xFF           # memset() stores (unsigned char)
        _addr_range(addr, length)
        return Memset(addr, length, pattern)
    if cmd == "clock_step":
        if len(words) == 1:
            return ClockStep(None)
        _arity(words, 1, "clock_step [NS]")
        return ClockStep(parse_i64(words[1]))
    if cmd == "clock_set":
        _arity(words, 1, "clock_set NS")
        return ClockSet(parse_i64(words[1]))
    if cmd in ("irq_intercept_in", "irq_intercept_out"):
        _arity(words, 1, f"{cmd} QOM-PATH")
        if not words[1]:
            raise BadCommand("empty QOM-PATH")
        return IrqIntercept("in" if cmd.endswith("in") else "out", words[1])
    if cmd == "set_irq_in":
        _arity(words, 4, "set_irq_in QOM-PATH NAME NUM LEVEL")
        if not words[1] or not words[2]:
            raise BadCommand("empty QOM-PATH or NAME")
        num, level = parse_int(words[3]), parse_int(words[4])
        if num < 0:
            raise BadCommand(f"negative IRQ number {num}")
        name = None if words[2] == UNNAMED_GPIO_IN else words[2]
        return SetIrqIn(words[1], name, num, level)
    if cmd == "endianness":
        _arity(words, 0, "endianness")
        return Endianness()
    if cmd == "module_load":
        _arity(words, 2, "module_load PREFIX NAME")
        return ModuleLoad(words[1], words[2])
    raise UnknownCommand(cmd)
