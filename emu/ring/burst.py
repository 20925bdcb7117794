"""What a call into the C engine reports: :class:`Burst` (one burst's
outcome), :class:`RingError` (a ring or chain from the other side was
invalid) and the per-queue counters."""
from __future__ import annotations

from dataclasses import dataclass

from emu._ring import ffi, lib
from emu.errors import PeerError

ERROR_NAMES = {
    getattr(lib, n): n[len("EMU_E_"):] for n in dir(lib) if n.startswith("EMU_E_")
}

_STAT_FIELDS = ("packets", "bytes", "drops", "errors", "notifies", "suppressed", "wakeups",
                "log_overflow", "verify_fail", "seq_gaps")


class RingError(PeerError):
    """A ring or descriptor chain from the other side was invalid."""

    def __init__(self, code: int, where: str = ""):
        self.code = code
        self.name = ERROR_NAMES.get(code, str(code))
        msg = ffi.string(lib.emu_strerror(code)).decode()
        super().__init__(f"{where}: {msg} ({self.name})" if where else f"{msg} ({self.name})")


def stats(st, last_error: int = 0) -> dict:
    """A ``struct emu_stats`` (and the queue's last error) as a dict."""
    out = {k: int(getattr(st, k)) for k in _STAT_FIELDS}
    if last_error:
        out["last_error"] = ERROR_NAMES.get(last_error, str(last_error))
    return out


@dataclass
class Burst:
    """What one burst call did."""
    packets: int
    bytes: int
    drops: int
    errors: int
    error: int
    src_notified: bool
    dst_notified: bool
    blocked: bool

    @classmethod
    def _from(cls, r) -> "Burst":
        return cls(r.packets, r.bytes_lo, r.drops, r.errors, r.error,
                   bool(r.src_notified), bool(r.dst_notified), bool(r.blocked))

    @property
    def error_name(self) -> str:
        return ERROR_NAMES.get(self.error, "OK") if self.error else "OK"
