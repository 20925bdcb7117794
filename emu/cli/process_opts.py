"""Options of the process: monitors, logging and tracing, displays emu has
not, -pidfile, the flags, -version and -help."""
from __future__ import annotations

from emu import trace
from emu.cli.char_opts import add_chardev, socket_chardev
from emu.cli.schemas import MON, QMP_OPTS, TRACE
from emu.cli.state import HELP_WORDS, EarlyExit, ParseState, flag, option
from emu.cli.texts import cpu_help, display_help, usage, version_text, vga_help
from emu.config import Chardev, MonitorConfig
from emu.keyval import OptionError, require, split_opts


@option("qmp")
def qmp(p: ParseState, arg: str, pretty: bool = False) -> None:
    items = split_opts(arg)
    head = items[0] if items else ""
    rest = ",".join(item.replace(",", ",,") for item in items[1:])
    label = f"compat_monitor{p.compat_monitors}"
    if head == "stdio" and not rest:
        dev = Chardev(label, "stdio", origin=p.origin)
    elif head.startswith("unix:") and len(head) > 5:
        values = p.opts(rest, QMP_OPTS)
        dev = Chardev(label, "socket", path=head[5:], origin=p.origin)
        socket_chardev(dev, {"path": head[5:], **values})
    elif head.startswith(("tcp:", "telnet:", "udp:")):
        raise OptionError(f"'{head.split(':')[0]}' monitors are not supported by emu: "
                          "use unix:PATH or stdio")
    else:
        raise OptionError(f"'{arg}' is not a valid char driver")
    p.compat_monitors += 1
    add_chardev(p, dev)
    p.cfg.monitors.append(MonitorConfig(label, "control", pretty, origin=p.origin))


@option("qmp-pretty")
def qmp_pretty(p: ParseState, arg: str) -> None:
    qmp(p, arg, pretty=True)


@option("mon")
def mon(p: ParseState, arg: str) -> None:
    values = p.opts(arg, MON)
    require(values, "chardev")
    mode = values.get("mode", "readline")
    if mode != "control":
        raise OptionError("emu has no human monitor: use mode=control (QMP) and "
                          "human-monitor-command")
    p.cfg.monitors.append(MonitorConfig(values["chardev"], mode, values.get("pretty", False),
                                        origin=p.origin))


@option("monitor")
def monitor(p: ParseState, arg: str) -> None:
    if arg != "none":
        raise OptionError("emu has no human monitor: use -qmp and human-monitor-command")


@option("parallel")
def parallel(p: ParseState, arg: str) -> None:
    if arg not in ("none", "null"):
        raise OptionError("emu has no parallel port: use -parallel none")


@option("display")
def display(p: ParseState, arg: str) -> None:
    dtype = split_opts(arg)[0] if arg else ""
    if dtype in HELP_WORDS:
        raise EarlyExit(display_help())
    if dtype != "none":
        raise OptionError(f"Parameter 'type' does not accept value '{dtype}'")


@option("vga")
def vga(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit(vga_help())
    if arg != "none":
        p.info("emu has no display: the VGA device is not emulated")


@option("cpu")
def cpu(p: ParseState, arg: str) -> None:
    if split_opts(arg)[:1] in (["help"], ["?"]):
        raise EarlyExit(cpu_help())
    p.info("emu emulates devices, not CPUs: -cpu has no effect")


@option("kernel", "initrd", "append")
def kernel_like(p: ParseState, arg: str) -> None:
    p.info("emu boots no kernel: its guest is a driver program (see -guest)")


@option("d")
def log_items(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS or arg in ("trace:help", "trace:?"):
        raise EarlyExit(trace.items_help() if arg in HELP_WORDS else trace.events_help())
    for item in arg.split(","):
        if item.startswith("trace:"):
            enable_events(p, item[len("trace:"):])
        elif item in trace.QEMU_CPU_ITEMS:
            p.info(f"log item '{item}' is QEMU's CPU emulation: emu has none")
        elif item not in trace.ITEMS:
            raise OptionError(f"unknown log item '{item}' (-d help lists them)")
        elif item not in p.cfg.log_items:
            p.cfg.log_items.append(item)


@option("D")
def log_file(p: ParseState, arg: str) -> None:
    p.cfg.log_file = arg


def enable_events(p: ParseState, pattern: str) -> None:
    matched = trace.matching(pattern)
    if not matched:
        p.warn(f"trace event '{pattern}' does not exist")
    for ev in matched:
        if ev not in p.cfg.trace.events:
            p.cfg.trace.events.append(ev)


@option("trace")
def trace_(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS or arg in ("enable=help", "enable=?"):
        raise EarlyExit(trace.events_help())
    values = p.opts(arg, TRACE)
    if "file" in values:
        p.cfg.trace.file = values["file"]
    if "events" in values:
        # QEMU reads the file while parsing too; a pattern a line, '#' comments
        try:
            with open(values["events"], encoding="utf-8") as f:
                patterns = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as e:
            raise OptionError(f"cannot open trace events file '{values['events']}': "
                              f"{e.strerror}") from None
        for pattern in patterns:
            enable_events(p, pattern)
    if "enable" in values:
        enable_events(p, values["enable"])


@option("pidfile")
def pidfile(p: ParseState, arg: str) -> None:
    p.cfg.pidfile = arg


@option("version", arg=False)
def version(p: ParseState) -> None:
    raise EarlyExit(version_text())


@option("help", "h", arg=False)
def help_(p: ParseState) -> None:
    raise EarlyExit(usage())


flag("start_paused", "S")
flag("daemonize", "daemonize")
flag("no_shutdown", "no-shutdown")
flag("no_reboot", "no-reboot")
flag("mem_prealloc", "mem-prealloc")


@option("nographic", arg=False)
def nographic(p: ParseState) -> None:
    p.nographic = True          # QEMU's default serial port then goes to stdio


@option("nodefaults", arg=False)
def nodefaults(p: ParseState) -> None:
    p.nodefaults = True         # no default serial port


@option("no-user-config", "no-hpet", "no-acpi", arg=False)
def harmless(p: ParseState) -> None:
    """Flags that change nothing emu has."""
