"""Options of the machine: -name, -m, -machine, -numa, -mem-path, -accel, -smp, -object."""
from __future__ import annotations

from emu.cli.schemas import (ACCEL, ACCELERATORS, IGNORED_OBJECTS, MACHINE, MEMORY, NAME, NUMA, OBJECTS,
                             SMP)
from emu.cli.state import HELP_WORDS, EarlyExit, ParseState, option, wants_help
from emu.config import FilterDump, MemoryBackend, MemoryObject
from emu.keyval import OptionError, from_json, parse_pairs, require, split_head
from emu.machines import types as machine_types


@option("name")
def name(p: ParseState, arg: str) -> None:
    p.cfg.name = p.opts(arg, NAME).get("guest")


@option("m")
def memory(p: ParseState, arg: str) -> None:
    values = p.opts(arg, MEMORY)
    require(values, "size")
    p.cfg.ram_size = values["size"]
    p.ram_size_given = True


@option("machine", "M")
def machine(p: ParseState, arg: str) -> None:
    pairs = dict(parse_pairs(arg, MACHINE.implied))
    mtype = pairs.get("type") or p.cfg.machine_type
    if arg in HELP_WORDS or mtype in HELP_WORDS:
        raise EarlyExit(machine_help())
    found = machine_types.find(mtype)
    if found is None:
        raise OptionError("unsupported machine type\nUse -machine help to list supported machines")
    values = p.opts(arg, MACHINE, owner=mtype, title=f"{_qemu_name(found)}-machine")
    p.cfg.machine_type = mtype
    p.machine_origin = p.origin
    if "max-ram-below-4g" in values:
        p.cfg.max_ram_below_4g = values["max-ram-below-4g"]
    if "memory-backend" in values:
        if p.numa_origin is not None and p.cfg.memory_backend != values["memory-backend"]:
            raise OptionError("'-machine memory-backend' and '-numa memdev' properties are mutually exclusive")
        p.cfg.memory_backend = values["memory-backend"]
    if "accel" in values:
        p.machine_accel = True
        p.cfg.accel += values["accel"].split(":")
        if values["accel"] != "qtest":
            p.info("'accel' has no effect but for qtest: emu emulates devices, not CPUs")


def _qemu_name(t: machine_types.MachineType) -> str:
    """QEMU's versioned name of a type (``pc-q35-7.2``), else its own."""
    return next((a for a in t.aliases if a[-1].isdigit()), t.name)


def machine_help() -> str:
    """``-machine help`` as QEMU 7.2 prints it: an alias line names its
    versioned type, which carries ``(default)``."""
    lines = ["Supported machines are:"]
    for t in machine_types.MACHINE_TYPES:
        full = _qemu_name(t)
        if full != t.name:
            lines.append(f"{t.name:<20} {t.desc} (alias of {full})")
        lines.append(f"{full:<20} {t.desc}" + (" (default)" if t.default else ""))
    return "\n".join(lines)


@option("numa")
def numa(p: ParseState, arg: str) -> None:
    values = p.opts(arg, NUMA)
    require(values, "memdev")
    if p.numa_origin is not None:
        raise OptionError("emu supports one NUMA node")
    p.numa_origin = p.origin
    if p.cfg.memory_backend not in (None, values["memdev"]):
        raise OptionError("'-machine memory-backend' and '-numa memdev' properties are mutually exclusive")
    p.cfg.memory_backend = values["memdev"]
    p.cfg.numa_memdevs.append(values["memdev"])


@option("mem-path")
def mem_path(p: ParseState, arg: str) -> None:
    p.cfg.mem_path = arg


@option("accel")
def accel(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit("Accelerators supported in QEMU binary:\n" + "\n".join(ACCELERATORS))
    values = p.opts(arg, ACCEL)
    require(values, "accel")
    if values["accel"] not in ACCELERATORS:
        raise OptionError(f"invalid accelerator {values['accel']}")
    p.cfg.accel.append(values["accel"])
    p.accel_option = True
    if values["accel"] != "qtest":
        p.info("accelerators have no effect: emu emulates devices, not CPUs")


@option("enable-kvm", arg=False)
def enable_kvm(p: ParseState) -> None:
    p.cfg.accel.append("kvm")


@option("smp")
def smp(p: ParseState, arg: str) -> None:
    # the topology is computed once the machine type is known (emu.cli.checks)
    p.smp_values = p.opts(arg, SMP)
    p.smp_origin = p.origin


@option("object")
def object_(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit("List of user creatable objects:\n" + "\n".join(f"  {k}" for k in OBJECTS))
    qom_type, pairs = split_head(from_json(arg), "qom-type")
    schema = OBJECTS.get(qom_type) or IGNORED_OBJECTS.get(qom_type)
    if schema is None:
        raise OptionError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
    if wants_help(pairs):
        raise EarlyExit(schema.help(qom_type))
    values = p.opts(pairs, schema)
    require(values, "id")
    if qom_type in IGNORED_OBJECTS:
        p.info(f"emu has no use for a {qom_type} object: accepted, no effect")
        return
    if qom_type == "filter-dump":
        require(values, "netdev", "file")
        obj: MemoryObject = FilterDump(values["id"], values["netdev"], values["file"],
                                       values.get("maxlen", 65536), values.get("queue", "all"),
                                       origin=p.origin)
    else:
        require(values, "size")
        if qom_type == "memory-backend-file":
            require(values, "mem-path")
        if values.get("hugetlb"):
            raise OptionError("hugetlb=on is not supported; use memory-backend-file,"
                              "mem-path=<hugetlbfs mount>")
        # shm and memfd default to shared (as QEMU's memfd does); a file does not
        share = values.get("share", qom_type != "memory-backend-file")
        if qom_type == "memory-backend-shm" and not share:
            raise OptionError("memory-backend-shm is always shared: share=off is not supported")
        obj = MemoryBackend(values["id"], qom_type, values["size"], share,
                            values.get("prealloc", False), values.get("mem-path"), origin=p.origin)
    if p.cfg.object(obj.id) is not None:
        raise OptionError(f"Duplicate ID '{obj.id}' for object")
    p.cfg.objects.append(obj)

