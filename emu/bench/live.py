"""The live table of ``emu bench``: one row per queue that carried traffic,
refreshed from QMP every quarter second."""
from __future__ import annotations


def _queue_label(key: str) -> tuple[str, str]:
    """('VM1', 'TX0 ->') for 'vm1.net0.tx0'; VM2's peer queues by role."""
    vm, dev, q = key.split(".")
    who = vm.upper()
    if q.startswith("peer"):
        i = int(q[4:])
        k = i // 2
        return who, (f"{dev} peer TX{k} (copy from)" if i % 2 else f"{dev} peer RX{k} (copy to)")
    if q.startswith("tx"):
        return who, f"{dev} TX{q[2:]}  out"
    if q.startswith("rx"):
        return who, f"{dev} RX{q[2:]}  in"
    return who, f"{dev} {q}"


class Display:
    """The live table: one row per queue that carried traffic."""

    def __init__(self, console, args, title: str):
        self.console, self.args, self.title = console, args, title
        self.rows: dict[str, tuple[float, float, int, int]] = {}
        self.header = ""
        self.total = 0.0

    def update(self, prev, cur, phase) -> None:
        dt = max(cur.t - prev.t, 1e-9)
        for key, (p, b, d, e) in cur.queues.items():
            p0, b0, _, _ = prev.queues.get(key, (p, b, d, e))
            if p != p0 or key in self.rows:
                self.rows[key] = ((p - p0) / dt / 1e6, (b - b0) * 8 / dt / 1e9, d, e)
        self.total = (cur.received - prev.received) / dt / 1e6
        el = f"{phase['elapsed']:.1f}/{phase['seconds']:.1f} s" if phase["phase"] == "measure" \
            else phase["phase"]
        self.header = f"{phase['size']} B frames  [{el}]  received {self.total:.2f} Mpps"

    def render(self):
        from rich.table import Table
        t = Table(title=f"{self.title}\n{self.header}", title_justify="left")
        for c, j in (("VM", "left"), ("queue", "left"), ("Mpps", "right"), ("Gbps", "right"),
                     ("drops", "right"), ("errors", "right")):
            t.add_column(c, justify=j)
        for key in sorted(self.rows):
            mpps, gbps, d, e = self.rows[key]
            vm, q = _queue_label(key)
            t.add_row(vm, q, f"{mpps:.2f}", f"{gbps:.2f}", str(d),
                      f"[red]{e}[/red]" if e else "0")
        return t


class _Static:
    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *_):
        pass
