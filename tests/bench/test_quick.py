"""The benchmarks' quick mode, as CI runs it: every script produced sane,
complete JSON -- every size and configuration present, counters balanced
(sent == received + drops), no errors, references measured beside emu's
figures.  Never that a speed was reached: this machine is shared.

Also the main job, ``emu bench``: its JSON, and that its VMs are gone
after Ctrl-C and after the harness itself is SIGKILLed."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from emu.testing import dpdk

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
HAVE_DPDK = dpdk.available()
HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None
HAVE_GCC = shutil.which("gcc") is not None
# ring_copy (the C loop alone) belongs to the engine's tests; the rest run here
RUN_ALL = ["throughput", "vswitch", "latency", "control_plane"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    p = subprocess.run([PY, os.path.join(ROOT, "benchmarks", "run_all.py"), "--quick",
                        "--no-live", "--out", str(out), "--only", ",".join(RUN_ALL)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]

    def load(name):
        with open(out / f"{name}.json") as f:
            return json.load(f)
    load.dir = out
    return load


def _balanced(e):
    assert e["errors"] == 0, e
    assert e["sent"] > 0 and e["sent"] == e["received"] + e["drops"], e
    assert e["balanced"] is True, e


def _pcts_ordered(r):
    assert 0 < r["min"] <= r["p50"] <= r["p90"] <= r["p99"] <= r["p99.9"] <= r["max"], r


def test_throughput_complete_and_balanced(results):
    d = results("throughput")
    assert d["quick"] is True and os.path.getsize(results.dir / "throughput.png") > 0
    want = {(c["app"], c["queues"], c["mode"], s) for c in d["configs"] for s in d["sizes"]}
    assert {("echo", 1, "poll"), ("echo", 1, "interrupt"), ("echo", 2, "poll")} <= \
        {(a, q, m) for a, q, m, _ in want}
    got = {(e["app"], e["queues"], e["mode"], e["size"]): e for e in d["summary"]}
    assert set(got) == want and {64, 1518} <= set(d["sizes"])
    for e in got.values():
        _balanced(e)
        assert e["mpps"]["median"] > 0 and e["gbps"]["median"] > 0
        assert e["cpu_ns_per_packet"]["median"] > 0
        assert e["memcpy_gbps"] > 0 and 0 < e["share_of_memcpy"]
        if HAVE_DPDK:
            assert e["dpdk_mpps"] > 0 and e["ratio_vs_dpdk"] > 0
    for r in d["emu"]:
        _balanced(r)
        assert r["window_s"] > 0.5
        if r["queues"] == 2:      # multi-queue really spreads over both pairs
            moving = {k.rsplit(".", 1)[1] for k in r["per_queue_mpps"] if k.startswith("vm1.")}
            assert {"tx0", "tx1", "rx0", "rx1"} <= moving, r["per_queue_mpps"]
    assert d["dpdk_available"] == HAVE_DPDK
    if HAVE_DPDK:
        assert {r["size"] for r in d["dpdk"]} == set(d["dpdk_sizes"]) == {64, 1518}


def test_vswitch_complete_and_balanced(results):
    d = results("vswitch")
    paths = {(e["path"], e["size"]): e for e in d["summary"]}
    want = {"emu chain poll", "emu chain interrupt", "emu pair poll"} | \
        ({"DPDK vswitch"} if HAVE_DPDK else set())
    assert {p for p, _ in paths} == want
    for s in d["sizes"]:
        for p in want:
            e = paths[(p, s)]
            assert e["mpps"]["median"] > 0 and e["mpps_per_core"] > 0
            assert e["processes"] == (2 if p == "emu pair poll" else 3)
            if not p.startswith("DPDK"):
                _balanced(e)
                if HAVE_DPDK:
                    assert e["ratio_per_core_vs_vswitch"] > 0


def test_latency_every_round_trip(results):
    d = results("latency")
    got = {(e["mode"], e["engine"], e["size"]): e for e in d["emu"]}
    assert set(got) == {(m, g, s) for m in ("poll", "interrupt") for g in ("python", "c")
                        for s in (64, 1518)}
    for e in got.values():
        assert e["sent"] == e["received"] == d["count"] * d["runs"] and e["lost"] == 0
        _pcts_ordered(e["rtt_us"])
    assert "Python" in d["note"]
    if HAVE_GCC:
        modes = {e["mode"]: e for e in d["eventfd"]}
        assert set(modes) == {"spin", "block"}
        for e in modes.values():
            _pcts_ordered(e["rtt_us"])


def test_control_plane_complete(results):
    d = results("control_plane")
    st = d["startup"]
    assert set(st["cases"]) == {f"{case}, {how}" for how in ("unix -qmp", "socketpair")
                                for case in ("default machine (-S -m 256M -nodefaults)",
                                             "VM2 (256 MiB, vhost-pci-net, guest)")}
    for e in st["cases"].values():
        g, s = e["greeting"], e["query-status"]
        assert len(g["emu_runs_ms"]) == len(s["emu_runs_ms"]) == d["runs"]
        # the greeting comes before the machine is built, so before any answer
        assert all(0 < a < b for a, b in zip(g["emu_runs_ms"], s["emu_runs_ms"]))
        if HAVE_QEMU:           # beside QEMU, in the same run
            assert len(g["qemu_runs_ms"]) == d["runs"] and g["ratio"] > 0 and s["ratio"] > 0
    fp = d["first_packet"]["median"]
    assert 0 < fp["start_to_connected_ms"] < fp["start_to_first_packet_ms"]
    assert [r["pairs"] for r in d["scale"]] == [1, 2]
    for r in d["scale"]:
        _balanced(r)
        assert len(r["per_pair_mpps"]) == r["pairs"] and min(r["per_pair_mpps"]) > 0
        assert len(r["rss_kib"]) == 2 * r["pairs"]
        assert all(m["VmRSS"] > 0 for m in r["rss_kib"].values())


def test_summary_targets_from_the_same_run(results):
    d = results("summary")
    assert all(b["rc"] == 0 for b in d["benchmarks"].values()), d["benchmarks"]
    assert set(d["benchmarks"]) == set(RUN_ALL)
    names = [t["target"] for t in d["targets"]]
    assert len(names) == 11
    assert "polling RTT p50, 64 B, C engine, vs eventfd spin" in names
    assert "exec -> QMP greeting, default machine (-S -m 256M -nodefaults), vs QEMU" in names
    for t in d["targets"]:
        needs_dpdk = "DPDK" in t["target"] or "vswitch" in t["target"]
        if HAVE_DPDK or not needs_dpdk:
            assert t["value"] is not None and t["met"] in (True, False), t
    md = (results.dir / "summary.md").read_text()
    assert "| target | measured | goal | met |" in md


# -- the main job ----------------------------------------------------------------------------------

def _bench(args, **kw):
    return subprocess.Popen([PY, "-m", "emu", "bench", "--no-live", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_vms(p) -> tuple[list[int], str]:
    """Read the bench's output until its VMs are up: (pids, run dir)."""
    run_dir, lines = None, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        lines.append(line)
        m = re.search(r"starting VMs in (\S+) \.\.\.", line)
        if m:
            run_dir = m.group(1)
        m = re.search(r"VMs up in .* \(pids ([\d, ]+)\)", line)
        if m:
            return [int(x) for x in m.group(1).split(",")], run_dir
        if not line and p.poll() is not None:
            break
    raise AssertionError("".join(lines))


def test_main_job_json(tmp_path):
    p = _bench(["--sizes", "64,1518", "--duration", "0.5", "--warmup", "0.2", "--runs", "2",
                "--out", str(tmp_path)])
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 0, out
    d = json.loads((tmp_path / "emu_bench.json").read_text())
    assert [(r["size"], r["run"]) for r in d["results"]] == [(64, 0), (1518, 0), (64, 1), (1518, 1)]
    for r in d["results"]:
        _balanced(r)
        assert r["mpps"] > 0
    assert [s["size"] for s in d["summary"]] == [64, 1518]
    for s in d["summary"]:
        assert s["runs"] == 2 and s["mpps_range"][0] <= s["mpps"] <= s["mpps_range"][1]
        assert s["memcpy_gbps"] > 0 and s["balanced"]
        if HAVE_DPDK:       # the reference, measured in the same run, for each size it takes
            assert s["dpdk_mpps"] > 0 and s["ratio_vs_dpdk"] > 0 and len(s["dpdk_mpps_runs"]) == 2
    # what a reader needs to trust the figures: when, where, how loaded, how often
    assert d["runs"] == 2 and d["date"].endswith("Z") and d["machine"]["cores"] >= 1
    assert set(d["load_before"]) == {"loadavg", "busy_share"} and "loadavg" in d["load_after"]
    assert d["command"][:2] == ["emu", "bench"]
    assert d["problems"] == []
    assert (tmp_path / "emu_bench.png").stat().st_size > 0
    # and the output says it
    assert re.search(r"\d{4}-\d\d-\d\dT.*cores; 2 run\(s\) x 0.5 s per size; load average", out)


def test_main_job_without_matplotlib_still_reports(tmp_path):
    # as after `pip install -e .` without the [bench] extra; run where a user runs it
    code = ("import sys; sys.modules['matplotlib'] = None; from emu.bench import main; "
            "sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([PY, "-c", code, "--sizes", "64", "--duration", "0.3", "--warmup", "0.1",
                        "--runs", "1", "--no-live", "--no-dpdk"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "summary:" in p.stdout and "no plot: matplotlib is not installed" in p.stdout
    assert "pip install -e '.[bench]'" in p.stdout
    # its own results directory, not the checkout's tracked benchmarks/results
    d = json.loads((tmp_path / "emu-bench-results" / "emu_bench.json").read_text())
    assert d["summary"][0]["size"] == 64 and d["summary"][0]["mpps"] > 0
    assert not (tmp_path / "emu-bench-results" / "emu_bench.png").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_main_job_leaves_nothing_behind(tmp_path, sig):
    """Ctrl-C: the bench stops its VMs and removes its run directory.
    SIGKILL (no clean-up runs): the VMs die with it (parent-death signal)."""
    p = _bench(["--duration", "60", "--out", str(tmp_path)], start_new_session=True)
    try:
        pids, run_dir = _wait_vms(p)
        assert all(_alive(x) for x in pids)
        os.kill(p.pid, sig)
        p.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while any(_alive(x) for x in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(x) for x in pids), "VM processes outlived the bench"
        if sig == signal.SIGINT:
            assert p.returncode == 130
            assert not os.path.exists(run_dir), os.listdir(run_dir)
        for x in pids:
            assert not glob.glob(f"/dev/shm/emu-{x}-*")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if run_dir := locals().get("run_dir"):
            shutil.rmtree(run_dir, ignore_errors=True)
