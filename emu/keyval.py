"""QEMU option strings: ``-opt [implied=]value,key=value,...``.

The syntax is QemuOpts' (what ``-device``, ``-netdev``, ``-chardev``, ``-m``,
``-name`` use in QEMU 7.2):

* parameters are separated by ``,``; ``,,`` is a literal comma, in keys and
  values alike (``path=/tmp/a,,b`` is the path ``/tmp/a,b``);
* an option may have an *implied* first key: in ``-device virtio-net-pci,...``
  the first element, having no ``=``, is the value of ``driver``;
* a bare ``key`` means ``key=on`` and ``nokey`` means ``key=off`` (QEMU
  accepts this short form with a deprecation warning; so do we, for boolean
  parameters only);
* booleans are ``on|off|yes|no|true|false|y|n``; sizes take an optional
  ``B K M G T P E`` suffix (either case, binary multiples, a fraction such as
  ``1.5G`` only with a suffix), integers may be hexadecimal.

Each option is described by a :class:`Schema` of typed :class:`Param`\\ s;
:func:`parse_opts` returns the typed values of the parameters given.  Error
texts follow QEMU's wording.  This module imports nothing heavy: it runs
before the monitor listens.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from emu.errors import PeerError


class OptionError(PeerError):
    """A malformed option string or parameter value (from the command line)."""


# -- value parsers: (parameter name, text) -> value, or OptionError -----------

_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")


def boolean(name: str, text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise OptionError(f"Parameter '{name}' expects 'on' or 'off'")


def string(name: str, text: str) -> str:
    return text


_SIZE_RE = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+)|([0-9]+(?:\.[0-9]*)?))\s*([bBkKmMgGtTpPeE]?)\s*\Z")
_SIZE_SHIFT = {"": 0, "B": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}

SIZE_HELP = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
             "and exabytes, respectively.")


def to_size(text: str, default_suffix: str = "B") -> int | None:
    """QEMU's qemu_strtosz(): ``None`` when *text* is not a size below 2**64."""
    m = _SIZE_RE.match(text)
    if not m:
        return None
    hexa, dec, suffix = m.groups()
    suffix = suffix.upper() or default_suffix
    shift = _SIZE_SHIFT[suffix]
    if hexa is not None:
        value = int(hexa, 16) << shift
    elif "." in dec:
        # A fraction needs an explicit unit, as in QEMU ("1.5G", not "1.5").
        if not m.group(3) or m.group(3).upper() == "B":
            return None
        whole, frac = dec.split(".")
        value = (int(whole or "0") << shift) + (int(frac or "0") << shift) // (10 ** len(frac or "0"))
    else:
        value = int(dec) << shift
    return value if value < 1 << 64 else None


def size(name: str, text: str) -> int:
    value = to_size(text)
    if value is None:
        raise OptionError(f"Parameter '{name}' expects a size value")
    return value


def integer(lo: int, hi: int) -> Callable[[str, str], int]:
    """An integer in [lo, hi]; decimal or 0x-hexadecimal, as QEMU's parsers take."""
    def parse(name: str, text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise OptionError(f"Parameter '{name}' expects integer") from None
        if not lo <= value <= hi:
            raise OptionError(f"Parameter '{name}' expects a value in the range [{lo}, {hi}]")
        return value
    parse.kind = f"int {lo}..{hi}"  # type: ignore[attr-defined]
    return parse


def power_of_two(lo: int, hi: int) -> Callable[[str, str], int]:
    """A power of two in [lo, hi] (queue sizes)."""
    def parse(name: str, text: str) -> int:
        value = integer(lo, hi)(name, text)
        if value & (value - 1):
            raise OptionError(f"Parameter '{name}' expects a power of 2 between {lo} and {hi}")
        return value
    parse.kind = f"int {lo}..{hi}, a power of 2"  # type: ignore[attr-defined]
    return parse


def choice(*values: str) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        if text not in values:
            raise OptionError(f"Parameter '{name}' does not accept value '{text}'")
        return text
    parse.kind = "|".join(values)  # type: ignore[attr-defined]
    return parse


_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")
ID_HELP = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."


def identifier(name: str, text: str) -> str:
    if not _ID_RE.match(text):
        raise OptionError(f"Parameter '{name}' expects an identifier\n{ID_HELP}")
    return text


MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}\Z")


def macaddr(name: str, text: str) -> str:
    """A MAC address, ``:`` or ``-`` separated; returned lower case with ``:``."""
    if not MAC_RE.match(text):
        raise OptionError(f"Parameter '{name}' expects a MAC address (six hex bytes, "
                          "e.g. 52:54:00:12:34:56)")
    return text.lower().replace("-", ":")


boolean.kind = "on|off"  # type: ignore[attr-defined]
string.kind = "str"  # type: ignore[attr-defined]
size.kind = "size"  # type: ignore[attr-defined]
identifier.kind = "id"  # type: ignore[attr-defined]
macaddr.kind = "macaddr"  # type: ignore[attr-defined]


# -- schemas -------------------------------------------------------------------

# Plain classes, not dataclasses: the schemas hold a few hundred parameters,
# built while the process starts (before its monitor answers).

class Param:
    """One parameter: its parser (``(name, text) -> value``), help, and
    whether it is ``ignored`` (accepted for compatibility with QEMU command
    lines, without effect in emu); ``default``: the value when it is not
    given (None: no default, or the user's)."""

    __slots__ = ("name", "parse", "help", "ignored", "default")

    def __init__(self, name: str, parse: Callable[[str, str], Any] = string, help: str = "",
                 ignored: bool = False, default: Any = None):
        self.name, self.parse, self.help = name, parse, help
        self.ignored, self.default = ignored, default

    @property
    def kind(self) -> str:
        return getattr(self.parse, "kind", "str")

    def _key(self) -> tuple:
        return (self.name, self.parse, self.help, self.ignored, self.default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Param) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.name, self.help, self.ignored))

    def __repr__(self) -> str:
        return f"Param({self.name!r}, {self.kind}{', ignored' if self.ignored else ''})"


class Schema:
    """The parameters of one option (or one ``-device`` driver, ``-object``
    type...); ``unknown``: the error text for a key not in ``params``
    (``{key}`` is substituted)."""

    __slots__ = ("params", "implied", "unknown", "by_name")

    def __init__(self, params: tuple[Param, ...], implied: str | None = None,
                 unknown: str = "Invalid parameter '{key}'"):
        self.params, self.implied, self.unknown = tuple(params), implied, unknown
        self.by_name: dict[str, Param] = {p.name: p for p in self.params}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and (self.params, self.implied, self.unknown) == \
            (other.params, other.implied, other.unknown)

    def __repr__(self) -> str:
        return f"Schema({[p.name for p in self.params]}, implied={self.implied!r})"

    def __contains__(self, key: str) -> bool:
        return key in self.by_name

    def help(self, title: str) -> str:
        width = max((len(p.name) + len(p.kind) + 3 for p in self.params), default=0)
        lines = [f"{title} options:"]
        for p in sorted(self.params, key=lambda p: p.name):
            left = f"{p.name}=<{p.kind}>"
            notes = [p.help] if p.help else []
            if p.ignored:
                notes.append("(accepted, no effect in emu)" if p.help else "accepted, no effect in emu")
            if p.default is not None:
                notes.append(f"(default {format_value(p.default)})")
            lines.append(f"  {left:<{width}} - {' '.join(notes)}".rstrip(" -"))
        return "\n".join(lines)


def format_value(value: Any) -> str:
    """A typed value as an option string would give it (``on``, ``64``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def split_opts(text: str) -> list[str]:
    """Split at single commas; ``,,`` stands for a literal comma."""
    items, cur, i, n = [], [], 0, len(text)
    while i < n:
        c = text[i]
        if c == ",":
            if i + 1 < n and text[i + 1] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        items.append("".join(cur))
    return items


def parse_pairs(text: str, implied: str | None = None) -> list[tuple[str, str | None]]:
    """``(key, value)`` pairs in order; a bare key has the value ``None``.

    An empty element (``a=1,,`` is an escape, but ``a=1,`` ends the list)
    is skipped, as QemuOpts does with a trailing comma.
    """
    pairs: list[tuple[str, str | None]] = []
    for i, item in enumerate(split_opts(text)):
        key, eq, value = item.partition("=")
        if not eq:
            if i == 0 and implied is not None:
                pairs.append((implied, item))
                continue
            if item == "":
                continue
            pairs.append((item, None))
        else:
            pairs.append((key, value))
    return pairs


def parse_opts(text: str, schema: Schema, warnings: list[str] | None = None,
               **fmt: str) -> dict[str, Any]:
    """Typed values of the parameters in *text*; only those given are present.

    *fmt* fills placeholders other than ``{key}`` in ``schema.unknown``.
    Short-form booleans append a deprecation warning to *warnings*.
    """
    return typed_values(parse_pairs(text, schema.implied), schema, warnings, **fmt)


def typed_values(pairs: list[tuple[str, str | None]], schema: Schema,
                 warnings: list[str] | None = None, **fmt: str) -> dict[str, Any]:
    """:func:`parse_opts` on pairs already split (see :func:`split_head`)."""
    values: dict[str, Any] = {}
    for key, raw in pairs:
        param = schema.by_name.get(key)
        if raw is None:
            # QEMU's deprecated short form: "server" = server=on, "nowait" = wait=off
            if param is None and key.startswith("no") and key[2:] in schema:
                param, raw = schema.by_name[key[2:]], "off"
            else:
                raw = "on"
            if param is not None and param.parse is boolean and warnings is not None:
                warnings.append(f"warning: short-form boolean option '{key}' deprecated\n"
                                f"Please use {param.name}={raw} instead")
            elif param is not None:
                raise OptionError(f"Expected '=' after parameter '{key}'")
        if param is None:
            raise OptionError(schema.unknown.format(key=key, **fmt))
        if param.name in values:
            raise OptionError(f"Parameter '{param.name}' given twice")
        values[param.name] = param.parse(param.name, raw)
    return values


def split_head(text: str, key: str) -> tuple[str, list[tuple[str, str | None]]]:
    """The value of the selecting key (``-device DRIVER,...`` or
    ``driver=DRIVER,...``; ``""`` if absent) and the other pairs."""
    pairs = parse_pairs(text, key)
    head = next((v for k, v in pairs if k == key), None)
    return head or "", [(k, v) for k, v in pairs if k != key]


def from_json(text: str) -> str:
    """``-device '{"driver":"virtio-net-pci","netdev":"n0","addr":"0x2"}'``,
    the JSON form QEMU 7.2 takes for -object, -device, -netdev and
    -audiodev (and libvirt writes), as the equivalent option string.
    Anything else is returned as it is.  Members must be scalars: QEMU's
    QemuOpts-based options have no nested values."""
    if not text.startswith("{"):
        return text
    import json     # here: only a JSON option pays for it
    try:
        # pairs, not a dict: a member given twice is refused as in key=value form
        obj = json.loads(text, object_pairs_hook=list)
    except ValueError as e:
        raise OptionError(f"JSON parse error, {e}") from None
    if not isinstance(obj, list):
        raise OptionError("JSON option must be an object")
    items = []
    for key, value in obj:
        if isinstance(value, bool):
            value = "on" if value else "off"
        elif isinstance(value, (int, str)):
            value = str(value)
        else:
            raise OptionError(f"Parameter '{key}' expects a scalar value")
        items.append(f"{key.replace(',', ',,')}={value.replace(',', ',,')}")
    return ",".join(items)


def require(values: dict[str, Any], *names: str) -> None:
    for name in names:
        if name not in values:
            raise OptionError(f"Parameter '{name}' is missing")
