"""Numbers as QEMU's qtest server parses them.

softmmu/qtest.c reads every number with ``qemu_strtoul``/``qemu_strtou64``
(``strtoull``), ``qemu_strtoi64`` (``strtoll``) or ``qemu_strtoi`` with base
0 and no end pointer, on glibc in the C locale.  So a number is: optional
leading white space (C ``isspace``), an optional sign, then ``0x``/``0X``
and hex digits, or ``0`` and octal digits, or decimal digits -- and nothing
after it.  An unsigned parse of ``-N`` is accepted and negated modulo 2^64,
exactly as ``strtoull`` does; a magnitude past the type's range is ERANGE.
glibc 2.36 (Debian 12) knows no ``0b`` prefix for C11 programs.
Each failure raises :class:`BadCommand` naming the rule.
"""
from __future__ import annotations

import re

from emu.qtest.errors import BadCommand

U64_MAX = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1

# C isspace() in the C locale; the hex form needs a digit after "0x", else
# strtoull stops after the "0" (and the unconsumed "x" is an error here)
_NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")


def _magnitude(word: str) -> tuple[bool, int]:
    m = _NUMBER.match(word)
    if m is None:
        # (qemu_strtou64: "If @endptr is null, and the string isn't fully
        # converted, return -EINVAL"; no digits at all is -EINVAL too)
        raise BadCommand(f"invalid number '{word[:40]}'")
    sign, digits = m.groups()
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits, 10)
    return sign == "-", value


def parse_u64(word: str) -> int:
    """``qemu_strtou64(word, NULL, 0, &v)`` (and ``qemu_strtoul`` on LP64)."""
    negative, value = _magnitude(word)
    if value > U64_MAX:
        raise BadCommand(f"number out of range '{word[:40]}'")   # ERANGE
    return (-value) & U64_MAX if negative else value


def parse_i64(word: str) -> int:
    """``qemu_strtoi64(word, NULL, 0, &v)``."""
    negative, value = _magnitude(word)
    value = -value if negative else value
    if not I64_MIN <= value <= I64_MAX:
        raise BadCommand(f"number out of range '{word[:40]}'")
    return value


def parse_int(word: str) -> int:
    """``qemu_strtoi(word, NULL, 0, &v)``: strtoll, then the C int range."""
    value = parse_i64(word)
    if not INT_MIN <= value <= INT_MAX:
        raise BadCommand(f"number out of range '{word[:40]}'")
    return value
