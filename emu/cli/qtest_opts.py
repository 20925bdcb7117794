"""Options of the qtest accelerator: -qtest, -qtest-log (and what
``-accel qtest`` / ``-machine accel=qtest`` mean, read by
:attr:`emu.config.MachineConfig.qtest_accel`)."""
from __future__ import annotations

from emu.cli.char_opts import add_chardev, socket_chardev
from emu.cli.schemas import QMP_OPTS
from emu.cli.state import ParseState, option
from emu.config import Chardev, QtestConfig
from emu.keyval import OptionError, split_opts

QTEST_CHARDEV = "qtest"        # the label QEMU gives -qtest's own chardev


@option("qtest")
def qtest(p: ParseState, arg: str) -> None:
    if p.cfg.qtest is not None:
        raise OptionError("only one -qtest is supported")
    if arg.startswith("chardev:") and len(arg) > len("chardev:"):
        p.cfg.qtest = QtestConfig(arg[len("chardev:"):], origin=p.origin)
        return
    items = split_opts(arg)
    head = items[0] if items else ""
    if not (head.startswith("unix:") and len(head) > len("unix:")):
        raise OptionError(f"'{arg}' is not a valid char driver: emu's qtest chardev is "
                          "unix:PATH[,server=on|off][,wait=off][,reconnect=N] or chardev:ID")
    rest = ",".join(item.replace(",", ",,") for item in items[1:])
    values = p.opts(rest, QMP_OPTS)
    dev = Chardev(QTEST_CHARDEV, "socket", path=head[len("unix:"):], origin=p.origin)
    socket_chardev(dev, {"path": dev.path, **values})
    add_chardev(p, dev)
    p.cfg.qtest = QtestConfig(QTEST_CHARDEV, origin=p.origin)


@option("qtest-log")
def qtest_log(p: ParseState, arg: str) -> None:
    if not arg:
        raise OptionError("expects a file name, /dev/fd/N or none")
    p.cfg.qtest_log = arg
    p.qtest_log_origin = p.origin
