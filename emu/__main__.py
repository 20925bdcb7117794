"""Entry point: ``emu [QEMU-style options]``, ``emu bench ...``, ``python -m emu``.

The monitors greet first: :func:`emu.launcher.early.greet_early` reads
them off the command line and sends the QMP greeting before the parser
(tens of milliseconds of imports) is loaded.  A command line that then
does not parse closes them again, leaving nothing behind.
"""
import faulthandler
import sys


def main(argv=None):
    # a crash in the C data path (or a mapping gone from under it) prints
    # every thread's Python stack to stderr -- the log a harness keeps
    faulthandler.enable()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        from emu.bench import main as bench_main
        return bench_main(argv[1:])
    # The VM process never speaks TLS (its sockets are unix sockets, its
    # monitors refuse tcp:), and asyncio imports ssl only to offer it: a
    # third of asyncio's import time, paid before the first QMP answer.
    # (Here, in the process's entry point only: a program that imports emu
    # keeps its ssl.)
    sys.modules.setdefault("ssl", None)
    from emu.launcher.early import greet_early, phase
    phase("entry")
    early = greet_early(argv)
    phase("greeted" if early is not None else "no early monitor")
    from emu.cli import main as cli_main
    if early is None:
        return cli_main(argv)
    from emu import launcher
    try:
        return cli_main(argv, run=lambda cfg: launcher.run(cfg, early))
    finally:
        early.close()


if __name__ == "__main__":
    sys.exit(main())
