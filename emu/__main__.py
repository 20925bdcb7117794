"""Entry point: ``emu [QEMU-style options]``, ``emu bench ...``, ``python -m emu``."""
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
    from emu.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
