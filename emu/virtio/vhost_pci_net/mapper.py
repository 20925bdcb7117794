"""Where the Backend puts the peer's memory table: the window (an
``emu.vhost_user`` MemoryMapper).

The window holds one table, so a new one replaces the old in place; a
refused one must leave the old one mapped and serving
(``docs/security.md``, "a refused memory table").  Hence the order:

1. check everything that can be checked without mapping (max-mem, the
   layout against the window, every fd: ``PeerWindow.prepare``) -- a
   refusal here changes nothing;
2. take the old table away from the driver (generation, ack, unmap);
3. map the new one; if mmap refuses a region the window maps the old table
   again at the same offsets, and the device publishes it again: the host
   addresses the Backend translated the rings to are valid again, and the
   rings the Backend resumes carry traffic.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from emu.errors import RegionTableError
from emu.spec import vhost_pci_net as S
from emu.window import PeerWindow, WindowMemory

log = logging.getLogger(__name__)


class WindowMapper:
    def __init__(self, window: PeerWindow, *, max_mem: int,
                 take_away: Callable[[str], None],
                 restored: Callable[[WindowMemory], None]):
        self.window = window
        self.max_mem = max_mem            # bytes of peer memory mapped at once
        self.take_away = take_away        # tell the driver, wait for its ack, retire the window
        self.restored = restored          # publish a table that is mapped again
        self.current: WindowMemory | None = None

    def map(self, specs: Sequence, fds: Sequence[int]) -> WindowMemory:
        plan = self.window.prepare(specs, fds, max_regions=S.MAX_REGIONS, max_total=self.max_mem)
        self.take_away("memory table replaced")
        try:
            mem = self.window.install(plan)
        except RegionTableError as e:
            if self.current is not None and self.window.mapped:
                log.warning("peer memory table refused at mmap time (%s): "
                            "the previous table serves again", e)
                self.restored(self.current)
            else:
                self.current = None
            raise
        self.current = mem
        return mem

    def unmap(self, mem: WindowMemory) -> None:
        """Called after a replacement too: only the current table is ours to drop."""
        if mem is self.current:
            self.take_away("memory table dropped")
            self.window.forget()
            self.current = None
