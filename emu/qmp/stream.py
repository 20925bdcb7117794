"""Split a QMP byte stream into JSON values, as QEMU's json-streamer does.

Input is strict JSON (:func:`decode`; output is as strict:
:func:`emu.qmp.greeting.encode`).  QMP is not line-based: a value may span
lines and several may share one.
The streamer tracks nesting and strings only, so it costs no memory for
input it will reject anyway:

* a complete top-level value (object, array, string or bare scalar) is
  decoded with :func:`json.loads`; bad JSON yields a :class:`JsonError`
  and the stream goes on with the next value;
* a value larger than ``max_size`` bytes or nested deeper than
  ``max_depth`` is not buffered; the streamer follows its structure to the
  end and then reports it, so the connection stays in sync;
* a stray closing bracket at top level is an error by itself;
* the bytes 0xFE and 0xFF, which never occur in UTF-8, reset the parser
  (QEMU documents this for clients that want a known-good state).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_SIZE = 1 << 20       # bytes per value; QEMU's limit is 64 MiB of tokens
MAX_DEPTH = 512          # QEMU allows 1024; json.loads recurses per level


class JsonError(Exception):
    """One bad value in the stream; ``str()`` is the QMP error text."""


_STRUCT = re.compile(rb'[{}\[\]"\xfe\xff]')
_STRING = re.compile(rb'["\\\xfe\xff]')
_SPACE = re.compile(rb"[ \t\r\n]*")
_SCALAR_END = re.compile(rb'[ \t\r\n{}\[\]"\xfe\xff]')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid keyword '{name}'")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate key")
    return d


def _finite(text: str) -> float:
    # (RFC 8259, 6: "Numeric values that cannot be represented [...] as
    # sequences of digits (such as Infinity and NaN) are not permitted")
    # 1e999 overflows to inf: QEMU 7.2 takes it and echoes an ``id`` of
    # 1e999 back as ``inf``, which is not JSON; emu refuses it here, so
    # nothing it answers can carry one.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} out of range")
    return value


def decode(data: bytes) -> Any:
    """Strict JSON (no NaN/Infinity, no number that overflows to them, no
    duplicate keys), or :class:`JsonError`."""
    try:
        return json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_pairs,
                          parse_float=_finite)
    except RecursionError:
        raise JsonError("JSON parse error, nesting too deep") from None
    except ValueError as e:  # includes JSONDecodeError and UnicodeDecodeError
        msg = getattr(e, "msg", None) or str(e)
        raise JsonError(f"JSON parse error, {msg[:1].lower()}{msg[1:]}") from None


class JsonStreamer:
    def __init__(self, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH):
        self.max_size = max_size
        self.max_depth = max_depth
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scalar = False       # inside a bare top-level scalar (number, keyword)
        self._oversize = False
        self._too_deep = False

    @property
    def pending(self) -> bool:
        """True while a value is partly read."""
        return self._depth > 0 or self._in_string or self._scalar

    def _keep(self, chunk: bytes) -> None:
        if self._oversize or self._too_deep:
            return
        if len(self._buf) + len(chunk) > self.max_size:
            self._oversize = True
            self._buf = bytearray()
        else:
            self._buf += chunk

    def _finish(self, out: list[Any]) -> None:
        data, oversize, too_deep, scalar = bytes(self._buf), self._oversize, self._too_deep, self._scalar
        self._reset()
        if oversize:
            out.append(JsonError(f"JSON parse error, input exceeds {self.max_size} bytes"))
        elif too_deep:
            out.append(JsonError(f"JSON parse error, nesting deeper than {self.max_depth}"))
        else:
            try:
                out.append(decode(data))
            except JsonError as e:
                if scalar:  # QEMU's lexer names the bad word
                    word = data[:64].decode("utf-8", "replace")
                    e = JsonError(f"JSON parse error, invalid keyword '{word}'")
                out.append(e)

    def feed(self, data: bytes) -> list[Any]:
        """Values (or :class:`JsonError` instances) completed by *data*, in order."""
        out: list[Any] = []
        i, n = 0, len(data)
        while i < n:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    if data[i] >= 0xFE:     # a reset byte is never data, even escaped
                        self._hard_reset(out)
                        i += 1
                        continue
                    self._keep(data[i:i + 1])
                    i += 1
                    continue
                m = _STRING.search(data, i)
                if m is None:
                    self._keep(data[i:])
                    break
                j = m.start()
                c = data[j]
                if c >= 0xFE:
                    self._hard_reset(out)
                    i = j + 1
                    continue
                self._keep(data[i:j + 1])
                i = j + 1
                if c == 0x5C:           # backslash: the next byte is escaped
                    self._escape = True
                    continue
                self._in_string = False  # closing quote
                if self._depth == 0:
                    self._finish(out)
                continue
            if self._scalar:
                m = _SCALAR_END.search(data, i)
                j = n if m is None else m.start()
                self._keep(data[i:j])
                i = j
                if m is not None:
                    self._finish(out)    # the delimiter is looked at again below
                continue
            if self._depth == 0:
                i = _SPACE.match(data, i).end()
                if i >= n:
                    break
                c = data[i]
                if c in b"{[":
                    self._depth = 1
                    self._keep(data[i:i + 1])
                    i += 1
                elif c in b"}]":
                    out.append(JsonError("JSON parse error, expecting value"))
                    i += 1
                elif c == 0x22:
                    self._in_string = True
                    self._keep(data[i:i + 1])
                    i += 1
                elif c >= 0xFE:
                    i += 1
                else:
                    self._scalar = True
                continue
            # inside an array or object
            m = _STRUCT.search(data, i)
            if m is None:
                self._keep(data[i:])
                break
            j = m.start()
            c = data[j]
            if c >= 0xFE:
                self._hard_reset(out)
                i = j + 1
                continue
            self._keep(data[i:j + 1])
            i = j + 1
            if c == 0x22:
                self._in_string = True
            elif c in b"{[":
                self._depth += 1
                if self._depth > self.max_depth and not self._too_deep:
                    self._too_deep = True
                    self._buf = bytearray()
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._finish(out)
        return out

    def _hard_reset(self, out: list[Any]) -> None:
        if self.pending:
            out.append(JsonError("JSON parse error, input discarded at reset byte"))
        self._reset()

