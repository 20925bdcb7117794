"""``human-monitor-command``: the few HMP commands harnesses send over QMP.

Output is HMP text with QEMU's ``\\r\\n`` line ends; formats follow QEMU 7.2.
As in QEMU, HMP is built on the QMP commands: each ``info`` renders a
``query-*`` value, each action runs its QMP command (through
:func:`emu.qmp.commands.execute`).  Errors are text in the answer, not QMP
errors, as in QEMU.  This module registers ``human-monitor-command``.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from emu.errors import PeerError
from emu.qmp.commands import Arg, command, execute
from emu.qmp.errors import QmpError
from emu.qmp.session import Session

_U64 = (1 << 64) - 1


def _lines(*lines: str) -> str:
    return "".join(f"{line}\r\n" for line in lines)


async def info_status(s: Session) -> str:
    state = (await execute(s, "query-status"))["status"]
    if state == "running":
        return _lines("VM status: running")
    return _lines("VM status: paused" + ("" if state == "paused" else f" ({state})"))


async def info_version(s: Session) -> str:
    v = await execute(s, "query-version")
    q = v["qemu"]
    return _lines(f"{q['major']}.{q['minor']}.{q['micro']} ({v['package']})")


async def info_name(s: Session) -> str:
    name = (await execute(s, "query-name")).get("name")
    return _lines(name) if name else ""


async def info_chardev(s: Session) -> str:
    devs = await execute(s, "query-chardev")
    return _lines(*(f"{d['label']}: filename={d['filename']}" for d in devs))


async def info_network(s: Session) -> str:
    # QEMU has no QMP command for it either: HMP asks the machine
    text = s.machine.info_network()
    return _lines(*text.splitlines()) if text else ""


def format_pci(buses: list[dict[str, Any]]) -> list[str]:
    out = []
    for bus in buses:
        for d in bus.get("devices", []):
            ci, ids = d["class_info"], d["id"]
            out.append(f"  Bus {d['bus']:2d}, device {d['slot']:3d}, function {d['function']}:")
            what = ci["desc"] if ci.get("desc") else f"Class {ci['class']:04d}"
            out.append(f"    {what}: PCI device {ids['vendor']:04x}:{ids['device']:04x}")
            if "subsystem" in ids and "subsystem-vendor" in ids:
                out.append(f"      PCI subsystem {ids['subsystem-vendor']:04x}:{ids['subsystem']:04x}")
            if "irq" in d:
                out.append(f"      IRQ {d['irq']}, pin {chr(ord('A') + d.get('irq_pin', 1) - 1)}")
            for r in d.get("regions", []):
                addr = r["address"] & _U64
                last = (addr + r["size"] - 1) & _U64
                if r["type"] == "io":
                    out.append(f"      BAR{r['bar']}: I/O at 0x{addr:04x} [0x{last:04x}].")
                else:
                    bits = 64 if r.get("mem_type_64") else 32
                    pf = " prefetchable" if r.get("prefetch") else ""
                    out.append(f"      BAR{r['bar']}: {bits} bit{pf} memory at 0x{addr:08x} [0x{last:08x}].")
            out.append(f"      id \"{d.get('qdev_id', '')}\"")
    return out


async def info_mtree(s: Session) -> str:
    text = s.machine.info_mtree()
    return _lines(*text.splitlines()) if text else ""


async def info_cpus(s: Session) -> str:
    return _lines(*(f"{'*' if c['cpu-index'] == 0 else ' '} CPU #{c['cpu-index']}: "
                    f"thread_id={c['thread-id']}" for c in await execute(s, "query-cpus-fast")))


async def info_kvm(s: Session) -> str:
    kvm = await execute(s, "query-kvm")
    if not kvm["present"]:
        return _lines("kvm support: not compiled")
    return _lines("kvm support: " + ("enabled" if kvm["enabled"] else "disabled"))


async def info_qom_tree(s: Session, path: str | None = None) -> str:
    try:
        text = s.machine.info_qom_tree(path)
    except QmpError:        # QEMU's hmp_info_qom_tree text, not an "Error:"
        return _lines(f"Path '{path}' could not be resolved.")
    return _lines(*text.splitlines()) if text else ""


async def info_qtree(s: Session) -> str:
    text = s.machine.info_qtree()
    return _lines(*text.splitlines()) if text else ""


async def info_pci(s: Session) -> str:
    return _lines(*format_pci(await execute(s, "query-pci")))


async def info_emu_stats(s: Session) -> str:
    out = [f"{'device':<12} {'queue':<8} {'packets':>12} {'bytes':>14} {'drops':>8} "
           f"{'errors':>8} {'kicks':>10} {'calls':>10}"]
    for dev in (await execute(s, "query-emu-stats")).get("devices", []):
        for q in dev.get("queues", []):
            out.append(f"{dev.get('id', ''):<12} {q.get('name', q.get('index', '')):<8} "
                       f"{q.get('packets', 0):>12} {q.get('bytes', 0):>14} {q.get('drops', 0):>8} "
                       f"{q.get('errors', 0):>8} {q.get('kicks', 0):>10} {q.get('calls', 0):>10}")
    return _lines(*out)


INFO: dict[str, tuple[Callable[[Session], Awaitable[str]], str]] = {
    "chardev": (info_chardev, "show the character devices"),
    "cpus": (info_cpus, "show infos for each CPU"),
    "kvm": (info_kvm, "show KVM information"),
    "mtree": (info_mtree, "show memory tree"),
    "emu-stats": (info_emu_stats, "show emu's per-queue counters"),
    "name": (info_name, "show the current VM name"),
    "network": (info_network, "show the network state"),
    "pci": (info_pci, "show PCI info"),
    "qom-tree": (info_qom_tree, "show QOM composition tree"),
    "qtree": (info_qtree, "show device tree"),
    "status": (info_status, "show the current VM status (running|paused)"),
    "version": (info_version, "show the version of QEMU"),
}

#: info subcommands with an optional argument
WITH_ARGUMENT = ("qom-tree",)

# HMP actions: name -> (aliases, QMP command, help)
ACTIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "cont": (("c",), "cont", "resume emulation"),
    "quit": (("q",), "quit", "quit the emulator"),
    "stop": (("s",), "stop", "stop emulation"),
    "system_powerdown": ((), "system_powerdown", "send system power down event"),
    "system_reset": ((), "system_reset", "reset the system"),
}
_ALIASES = {alias: name for name, (aliases, _, _) in ACTIONS.items() for alias in aliases}


def _extraneous(word: str, full: str) -> str:
    return _lines(f"{word}: extraneous characters at the end of line",
                  f"Try \"help {full}\" for more information")


def _help() -> str:
    lines = [f"{name}|{'|'.join(al)}  -- {h}" if al else f"{name}  -- {h}"
             for name, (al, _, h) in sorted(ACTIONS.items())]
    lines += ["help|? [cmd] -- show the help", "info [subcommand] -- show various information about the system state"]
    return _lines(*sorted(lines))


@command("human-monitor-command", Arg("command-line", "str"), Arg("cpu-index", "int", optional=True),
         returns="str")
async def human_monitor_command(s: Session, args: dict[str, Any]) -> str:
    return await run(s, args["command-line"])


async def run(s: Session, command_line: str) -> str:
    words = command_line.split()
    if not words:
        return ""
    cmd, rest = words[0], words[1:]
    if cmd in ("help", "?"):
        return _help()
    if cmd == "info":
        if not rest:
            return _lines(*(f"info {k}  -- {h}" for k, (_, h) in INFO.items()))
        item = INFO.get(rest[0])
        if item is None:
            return _lines(f"unknown command: 'info {rest[0]}'")
        if rest[0] in WITH_ARGUMENT and len(rest) == 2:      # info qom-tree [path]
            try:
                return await item[0](s, rest[1])
            except PeerError as e:
                return _lines(f"Error: {e}")
        if len(rest) > 1:
            return _extraneous(rest[0], f"info {rest[0]}")
        return await item[0](s)
    name = _ALIASES.get(cmd, cmd)
    action = ACTIONS.get(name)
    if action is None:
        return _lines(f"unknown command: '{cmd}'")
    if rest:
        return _extraneous(cmd, name)
    try:
        await execute(s, action[1])
    except PeerError as e:
        return _lines(f"Error: {e}")
    return ""
