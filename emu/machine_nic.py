"""The NICs a machine makes: QEMU's default MAC addresses, and the
back-end of a NIC given no ``netdev=``."""
from __future__ import annotations

DEFAULT_MAC = (0x52, 0x54, 0x00, 0x12, 0x34, 0x56)


def mac_bytes(text: str | None, index: int) -> bytes:
    """``mac=`` as given, or QEMU's default 52:54:00:12:34:56 + the NIC's index."""
    if text:
        return bytes(int(p, 16) for p in text.split(":"))
    m = list(DEFAULT_MAC)
    m[5] = (m[5] + index) & 0xFF
    return bytes(m)


class NoPeer:
    """The back-end of a NIC given no ``netdev=`` (QEMU runs such a NIC and
    warns "nic ... has no peer"): nothing is connected, the device offers
    its own features, its rings are never started -- frames the guest
    sends stay unsent, none arrive."""

    queues = 1
    connected = False
    client = None
    backend_features = (1 << 64) - 1      # no back-end narrows the device's features

    def __init__(self, id: str):
        from emu.vhost_user.counters import PeerCounters
        self.id = id
        self.nic = None
        self.call_fds: dict[int, int] = {}
        self.counters = PeerCounters()

    def attach(self, nic) -> None:
        self.nic = nic

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass
