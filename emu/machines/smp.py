"""``-smp``: QEMU 7.2's CPU topology rules (``machine_parse_smp_config`` in
hw/core/machine-smp.c), for x86 (dies supported, clusters not; cores
preferred over sockets since the 6.2 machine types).  emu runs no vCPUs:
the CPU count is what fw_cfg and the ACPI CPU bitmap report."""
from __future__ import annotations

from dataclasses import dataclass

from emu.errors import PeerError


class SmpError(PeerError):
    pass


@dataclass(frozen=True)
class Topology:
    cpus: int
    max_cpus: int
    sockets: int
    dies: int
    cores: int
    threads: int

    def hierarchy(self) -> str:
        return (f"sockets ({self.sockets}) * dies ({self.dies}) * cores ({self.cores}) * "
                f"threads ({self.threads})")


def parse(values: dict[str, int], machine_name: str, cpu_max: int) -> tuple[Topology, list[str]]:
    """``values``: the -smp keys given (0 = given as 0).  Returns the
    topology and QEMU's warnings; raises SmpError with QEMU's text."""
    warnings = []
    if any(values.get(k) == 0 for k in values):
        warnings.append("Deprecated CPU topology (considered invalid): "
                        "CPU topology parameters must be greater than zero")
    cpus, maxcpus = values.get("cpus", 0), values.get("maxcpus", 0)
    sockets, cores, threads = values.get("sockets", 0), values.get("cores", 0), \
        values.get("threads", 0)
    dies, clusters = values.get("dies", 0), values.get("clusters", 0)
    if clusters > 1:
        raise SmpError("clusters not supported by this machine's CPU topology")
    dies = dies or 1
    if cpus == 0 and maxcpus == 0:
        sockets, cores, threads = sockets or 1, cores or 1, threads or 1
    else:
        maxcpus = maxcpus or cpus
        if cores == 0:
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * dies * threads)
        elif sockets == 0:
            threads = threads or 1
            sockets = maxcpus // (dies * cores * threads)
        if threads == 0:
            threads = maxcpus // (sockets * dies * cores)
    maxcpus = maxcpus or sockets * dies * cores * threads
    cpus = cpus or maxcpus
    topo = Topology(cpus, maxcpus, sockets, dies, cores, threads)
    if sockets * dies * cores * threads != maxcpus:
        raise SmpError(f"Invalid CPU topology: product of the hierarchy must match maxcpus: "
                       f"{topo.hierarchy()} != maxcpus ({maxcpus})")
    if maxcpus < cpus:
        raise SmpError(f"Invalid CPU topology: maxcpus must be equal to or greater than smp: "
                       f"{topo.hierarchy()} == maxcpus ({maxcpus}) < smp_cpus ({cpus})")
    if maxcpus > cpu_max:
        raise SmpError(f"Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine "
                       f"'{machine_name}' is {cpu_max}")
    return topo, warnings
