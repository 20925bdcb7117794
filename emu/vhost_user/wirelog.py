"""Per-connection wire log: one JSON object per message.

``{"t": 0.0123, "dir": "rx", "request": "SET_MEM_TABLE", "flags": 9,
"size": 40, "payload": {...}, "nfds": 1}``.  ``t`` is seconds since the log
was opened; integers of 16 bits or more are written as hex strings (they are
addresses and feature masks).  Decode errors are logged as
``{"dir": "rx", "error": "..."}``.  The sink is a path (appended to), a
text file object, or a callable taking the record dict.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, TextIO

from emu.vhost_user.codec import HEADER_SIZE, Message, encode


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return f"0x{value:x}" if value >= 0x10000 else int(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def payload_fields(msg: Message) -> Any:
    return None if msg.payload is None else _plain(msg.payload)


class WireLog:
    def __init__(self, sink: str | TextIO | Callable[[dict], None], *, label: str = ""):
        self.label = label
        self._t0 = time.monotonic()
        self._file: TextIO | None = None
        self._own_file = False
        self._call: Callable[[dict], None] | None = None
        if callable(sink):
            self._call = sink
        elif isinstance(sink, str):
            self._file = open(sink, "a", encoding="utf-8")
            self._own_file = True
        else:
            self._file = sink

    def record(self, direction: str, msg: Message, *, channel: str = "main") -> dict:
        try:
            size = len(encode(msg)[0]) - HEADER_SIZE
        except Exception:   # a message emu could not encode: log it anyway
            size = None
        rec = {
            "t": round(time.monotonic() - self._t0, 6),
            "dir": direction,
            "request": msg.request.name,
            "flags": int(msg.flags),
            "size": size,
            "payload": payload_fields(msg),
            "nfds": len(msg.fds),
        }
        if channel != "main":
            rec["channel"] = channel
        if self.label:
            rec["conn"] = self.label
        self._emit(rec)
        return rec

    def error(self, direction: str, error: BaseException, *, channel: str = "main") -> None:
        rec = {"t": round(time.monotonic() - self._t0, 6), "dir": direction,
               "error": f"{type(error).__name__}: {error}"}
        if channel != "main":
            rec["channel"] = channel
        if self.label:
            rec["conn"] = self.label
        self._emit(rec)

    @property
    def closed(self) -> bool:
        return self._file is None and self._call is None

    def _emit(self, rec: dict) -> None:
        if self._call is not None:
            self._call(rec)
        elif self._file is not None:
            self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close a file the log opened itself; later records are dropped."""
        if self._own_file and self._file is not None:
            self._file.close()
        self._file = None
        self._call = None
