"""Entry point: `emu ...` and `python -m emu ...`."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        from emu.bench import main as bench_main
        return bench_main(argv[1:])
    if argv and argv[0] in ("-version", "--version"):
        from emu import __version__
        print(f"emu version {__version__}")
        return 0
    print("usage: emu bench [options] | emu -version", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
