"""What one peer may cost vhost-pci-net (``-device vhost-pci-net``
properties, ``docs/security.md`` §4)."""
from __future__ import annotations

from dataclasses import dataclass

from emu.spec import vhost_pci_net as S


@dataclass(frozen=True)
class PeerLimits:
    """Beyond a limit a request is refused or the connection dropped,
    counted in query-emu-stats."""

    max_connections: int = 1       # front-ends connected at once: one served, the rest wait
    max_payload: int = 4096        # bytes of one vhost-user message
    max_regions: int = 8           # memory regions (GET_MAX_MEM_SLOTS)
    max_mem: int = 0               # bytes of peer memory mapped at once; 0: the window size
    message_timeout: float = 10.0  # s from the first byte of a message to its last

    def check(self) -> None:
        if self.max_connections < 1 or self.max_regions not in range(1, S.MAX_REGIONS + 1) \
                or self.max_payload < 12 or self.max_mem < 0 or not self.message_timeout > 0:
            raise ValueError(f"bad peer limits {self}")
