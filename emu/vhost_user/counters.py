"""What a device's vhost-user peers have cost it, over all connections.

One :class:`PeerCounters` lives as long as the device (a Backend or a
Frontend lives one connection), so the monitor can show every refused
request and every dropped connection even after the peer is gone: each
refusal by request name, each drop by error class, and the last error's
text.  Updated on the event-loop thread only.  Its :attr:`limiter`
rate-limits the log lines about these peers, across connections.
"""
from __future__ import annotations

from collections import Counter

from emu.ratelimit import LogLimiter


class PeerCounters:
    def __init__(self):
        self.connections = 0        # connections that reached the state machine
        self.rejected = 0           # turned away before that (busy, over a cap)
        self.disconnects = 0        # connections that ended, for any reason
        self.refused: Counter[str] = Counter()   # request name -> refused / ignored
        self.dropped: Counter[str] = Counter()   # error class -> connections dropped
        self.last_error = ""
        self.limiter = LogLimiter()  # every log line about these peers goes through it

    def note_refused(self, request: str, err: BaseException) -> None:
        self.refused[request] += 1
        self.last_error = f"{request}: {type(err).__name__}: {err}"

    def note_dropped(self, err: BaseException) -> None:
        self.dropped[type(err).__name__] += 1
        self.last_error = f"connection dropped: {type(err).__name__}: {err}"

    def as_dict(self) -> dict:
        return {"connections": self.connections, "rejected": self.rejected,
                "disconnects": self.disconnects, "refused": dict(self.refused),
                "refused_total": sum(self.refused.values()), "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()), "last_error": self.last_error,
                # log lines about these peers the rate limit held back (DEBUG only)
                "log_suppressed": self.limiter.suppressed}
