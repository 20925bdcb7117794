"""Guest driver programs.  They reach devices only through the bus API
(:class:`emu.guest.pci.BusAPI`): configuration cycles, MMIO/port I/O,
host mappings of RAM-backed BARs and interrupt eventfds."""
from __future__ import annotations
