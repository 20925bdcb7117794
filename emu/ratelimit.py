"""Rate-limited log lines for everything an untrusted party can repeat.

A peer can send 20,000 refused requests a second and a guest can hit a bad
register in a loop; each deserves a count (the monitor has those) but not
a log line.  :class:`LogLimiter` is the one mechanism: per *key* (a kind of
event: ``refused SET_MEM_TABLE``, ``rejected``, a guest-error kind) a token
bucket lets ``burst`` lines through at their level, then ``rate`` lines per
second; the rest go to DEBUG (shown only when the operator asked for debug
output: ``-d vhost_user``, ``-d guest_errors``) and are counted, and the
next line let through says how many were held back::

    vhost-user back-end refused SET_MEM_TABLE: ... (1,234 more suppressed)

One limiter lives as long as what it protects (a device's
:class:`~emu.vhost_user.counters.PeerCounters`, a PCI function's
:class:`~emu.pci.errors.GuestErrors`), so reconnecting does not refill it.
Thread-safe (the guest thread and the event loop both log).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Hashable

MAX_KEYS = 256          # keys remembered (LRU): a peer cannot grow this


class _Bucket:
    __slots__ = ("tokens", "stamp", "held")

    def __init__(self, tokens: float, stamp: float):
        self.tokens, self.stamp, self.held = tokens, stamp, 0


class LogLimiter:
    def __init__(self, *, burst: int = 5, rate: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS):
        self.burst = burst
        self.rate = rate                    # lines per second once the burst is spent
        self.clock = clock
        self.max_keys = max_keys
        self.suppressed = 0                 # lines held back, over all keys
        self._buckets: collections.OrderedDict[Hashable, _Bucket] = collections.OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> tuple[bool, int]:
        """(let this line through?, lines held back for ``key`` since the
        last one let through -- reported with it)."""
        now = self.clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(float(self.burst), now)
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
                b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                held, b.held = b.held, 0
                return True, held
            b.held += 1
            self.suppressed += 1
            return False, 0

    def log(self, logger: logging.Logger, level: int, key: Hashable, msg: str, *args,
            exc_info=None) -> bool:
        """Log ``msg % args`` at ``level`` if ``key``'s bucket allows, else at
        DEBUG (without a traceback).  True if it went out at ``level``."""
        ok, held = self.allow(key)
        if ok:
            if held:
                msg += f" ({held:,} more suppressed)"
            logger.log(level, msg, *args, exc_info=exc_info)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(msg, *args)
        return ok


#: for code that has no longer-lived owner to hold a limiter (tests, tools)
DEFAULT = LogLimiter()
