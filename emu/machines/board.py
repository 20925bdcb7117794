"""What a machine type's builder is told about the machine it builds
(the ``-m``, ``-smp``, ``-numa`` and ``-machine`` options that shape the
platform).  Plain data: the command line and the machine fill it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Board:
    ram_size: int = 128 << 20
    cpus: int = 1                       # -smp cpus: the boot CPUs
    max_cpus: int = 0                   # -smp maxcpus (0: cpus)
    numa_nodes: tuple[int, ...] = field(default=())   # memory of each -numa node
    max_ram_below_4g: int | None = None  # -machine max-ram-below-4g

    @property
    def apic_id_limit(self) -> int:
        """One past the highest APIC id (flat topology: the CPU count)."""
        return max(self.max_cpus, self.cpus)
