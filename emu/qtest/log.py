"""The ``-qtest-log`` file, in QEMU's format (softmmu/qtest.c):

    [I 0.000000] OPENED
    [R +0.012345] outl 0xcf8 0x80000000
    [S +0.012400] OK
    [S +0.013000] IRQ raise 11
    [I +1.234567] CLOSED

Times are seconds (``%.06f``) since the connection opened.  ``R`` lines are
the received words joined by one space; ``S`` lines are what was sent, one
per reply or asynchronous message.  A spec of ``none`` means no log, and no
``-qtest-log`` at all means standard error (as QEMU).
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

NO_LOG = "none"


class QtestLog:
    def __init__(self, sink: TextIO, *, clock: Callable[[], float] = time.monotonic,
                 own: bool = False):
        self._sink = sink
        self._clock = clock
        self._own = own
        self._t0: float | None = None   # set at OPENED; None while closed
        self.broken = False

    @classmethod
    def open(cls, spec: str | None) -> QtestLog | None:
        """``-qtest-log SPEC``: a path (truncated, as QEMU's ``fopen("w+")``),
        ``none``, or None for standard error."""
        if spec is None:
            return cls(sys.stderr)
        if spec == NO_LOG:
            return None
        return cls(open(spec, "w", encoding="ascii", errors="backslashreplace"), own=True)

    def _elapsed(self) -> float:
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def _write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self._sink.write(text)
            self._sink.flush()
        except (OSError, ValueError):
            # a log that cannot be written (full disk, closed pipe) must not
            # stop the session; QEMU ignores its fprintf errors too
            self.broken = True

    def opened(self) -> None:
        self._t0 = self._clock()           # the timer starts here (QEMU: g_timer_new)
        self._write(f"[I {0.0:.6f}] OPENED\n")

    def closed(self) -> None:
        self._write(f"[I +{self._elapsed():.6f}] CLOSED\n")
        self._t0 = None

    def received(self, words: list[str]) -> None:
        self._write(f"[R +{self._elapsed():.6f}]" + "".join(f" {w}" for w in words) + "\n")

    def sent(self, text: str) -> None:
        """One reply or asynchronous line (with its ``\\n``); QEMU writes the
        prefix only while the connection is open."""
        prefix = f"[S +{self._elapsed():.6f}] " if self._t0 is not None else ""
        self._write(prefix + text)

    def close(self) -> None:
        if self._own:
            self._sink.close()
