"""Split the qtest byte stream into command lines, as QEMU does: a command
ends at ``\\n`` (nothing else is stripped, so a ``\\r`` stays part of the
last word, as in QEMU).

QEMU buffers a line however long it grows; emu bounds it.  A line longer
than ``max_line`` is not buffered: the decoder drops its bytes up to the
next ``\\n`` and then reports it once as a :class:`LineTooLong`, so the
stream stays in step and the next command is served.
"""
from __future__ import annotations

from emu.qtest.errors import LineTooLong

# The longest line libqtest writes is "write ADDR SIZE 0x<2*SIZE hex>";
# 2 MiB of payload per command is far above what any qos-test sends.
MAX_TRANSFER = 1 << 21
MAX_LINE = 2 * MAX_TRANSFER + 128


class LineDecoder:
    def __init__(self, max_line: int = MAX_LINE):
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buf = bytearray()
        self._dropped = 0           # bytes of an over-long line thrown away so far

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line (kept or dropped)."""
        return len(self._buf) + self._dropped

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        """Lines completed by *data* (without their ``\\n``), in order; an
        over-long line appears as a :class:`LineTooLong` in its place."""
        out: list[bytes | LineTooLong] = []
        start, n = 0, len(data)
        while start < n:
            end = data.find(b"\n", start)
            stop = n if end < 0 else end
            chunk = data[start:stop]
            if self._dropped:
                self._dropped += len(chunk)
            elif len(self._buf) + len(chunk) > self.max_line:
                self._dropped = len(self._buf) + len(chunk)
                self._buf = bytearray()
            else:
                self._buf += chunk
            if end < 0:
                break
            if self._dropped:
                out.append(LineTooLong(f"line longer than {self.max_line} bytes "
                                       f"({self._dropped} bytes dropped)"))
                self._dropped = 0
            else:
                out.append(bytes(self._buf))
                self._buf = bytearray()
            start = end + 1
        return out
