"""Pieces the process-level benchmarks share (results files and plots come
from :mod:`common`): the command line every script has, a live status
display, medians over runs, the memcpy ceiling."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def arg_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(doc.strip().splitlines()[1:]))
    ap.add_argument("--quick", action="store_true",
                    help="few sizes, one short run each (CI: seconds, not minutes)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (median reported)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    ap.add_argument("--no-live", action="store_true", help="plain output, no live display")
    return ap


def console(no_live: bool = False):
    from rich.console import Console
    if no_live or not sys.stdout.isatty():
        return Console(width=150, force_terminal=False)
    return Console()


class Status:
    """One live status line above a results table (rich), or plain lines."""

    def __init__(self, con, title: str, no_live: bool):
        self.con, self.title = con, title
        self.no_live = no_live or not con.is_terminal
        self.line = ""
        self.table_fn = None
        self._live = None

    def __enter__(self):
        if not self.no_live:
            from rich.live import Live
            self._live = Live(self._render(), console=self.con, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
        return False

    def _render(self):
        from rich.console import Group
        from rich.text import Text
        parts = [Text(f"{self.title}\n{self.line}")]
        if self.table_fn is not None:
            parts.append(self.table_fn())
        return Group(*parts)

    def set(self, line: str) -> None:
        self.line = line
        if self._live is not None:
            self._live.update(self._render())

    def note(self, line: str) -> None:
        """A line that stays (plain mode: printed at once)."""
        if self._live is not None:
            self._live.console.print(line)
        else:
            self.con.print(line)
        self.set(self.line)


def median(xs):
    return common.median(xs)


def spread(xs) -> list:
    """[min, max] of the runs (None-free)."""
    xs = [x for x in xs if x is not None]
    return [min(xs), max(xs)] if xs else []


def memcpy_gbps(size: int) -> float:
    """Hot-cache memcpy of ``size`` bytes (best of 3), Gbit/s: the ceiling
    of a one-copy data path on this machine."""
    from emu import ring
    iters = max(20000, int(1e8 // max(size, 64)))
    ns = min(ring.memcpy_ns(size, iters) for _ in range(3))
    return size * 8 / ns


def tick_status(status: Status, label: str):
    """An on_tick for :meth:`emu.testing.traffic.Topology.measure`."""
    def tick(prev, cur, phase):
        dt = max(cur.t - prev.t, 1e-9)
        mpps = (cur.received - prev.received) / dt / 1e6
        el = f"{phase['elapsed']:.1f}/{phase['seconds']:.1f} s" if phase["phase"] == "measure" \
            else phase["phase"]
        status.set(f"{label}: {phase['size']} B [{el}] {mpps:.2f} Mpps, drops {cur.drops}, "
                   f"errors {cur.errors}")
    return tick


def settle_machine(seconds: float = 0.3) -> None:
    """A pause between busy benchmarks (exiting processes free their cores)."""
    time.sleep(seconds)


def stats_of(runs: list[dict], key: str) -> dict:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return {"median": statistics.median(xs) if xs else None, "runs": xs, "range": spread(xs)}
