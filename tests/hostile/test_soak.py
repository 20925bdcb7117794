"""Soak: VM1 <-> VM2 traffic for a bounded long run with trouble injected
on a schedule -- VM1 reboots (its memory table and rings are sent again:
a re-map in VM2), VM2 reboots (its driver re-initialises, acknowledges
the window again), VM1 pauses and resumes, VM1 is killed and replaced.

VM2 lives through all of it and must stay flat (RSS and fds sampled at
the same point of every cycle) and clean (no ring errors, no guest errors,
no revocation); every VM1 lifetime's books must balance (sent = received +
counted gaps + at most two rings in flight).  CI runs 30 s;
``EMU_HOSTILE_LONG=1`` runs 10 minutes (docs/security.md).
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import LONG
from .procs import Emu, vm1_args, vm2_args

GEN = "virtio-net,app=gen,size=256,rate=20000,verify=on,mode=interrupt"
ECHO = "vhost-pci-net,app=echo,mode=interrupt"
RING_SLACK = 2 * 256
RSS_SLACK_KIB = 24 * 1024         # the interpreter's arenas and caches settle within this
STEP = 1.5                        # seconds between two injected events
SOAK_SECONDS = 600 if LONG else 30


def books(vm1: Emu) -> tuple[int, int, int]:
    g, rx = vm1.guest(), vm1.queue("net0", "rx0")
    sent, received, gaps = g.get("sent", 0), g.get("received", 0), rx.get("seq_gaps", 0)
    assert abs(sent - received - gaps) <= RING_SLACK, (sent, received, gaps)
    assert rx.get("verify_fail", 0) == 0, rx
    return sent, received, gaps


def soak(run_dir: str, seconds: float) -> dict:
    sock = os.path.join(run_dir, "vp.sock")
    vm2 = Emu("vm2", vm2_args([sock], guest=ECHO), run_dir)
    vm1 = Emu("vm1", vm1_args(sock, guest=GEN, reconnect=1), run_dir)
    lifetimes, samples, events = [], [], 0
    try:
        def traffic(min_more: int = 500):
            got = vm1.guest().get("received", 0)
            vm1.wait(lambda: vm1.guest().get("received", 0) > got + min_more, 20, "traffic")

        def vm1_reboot():
            vm1.execute("system_reset")
            traffic()

        def vm2_reboot():
            vm2.execute("system_reset")
            traffic()

        def vm1_pause():
            vm1.execute("stop")
            time.sleep(0.3)
            vm1.execute("cont")
            traffic()

        def vm1_replaced():
            nonlocal vm1
            time.sleep(0.5)
            lifetimes.append(books(vm1))
            vm1.kill(signal.SIGKILL)
            vm1 = Emu(f"vm1-{len(lifetimes)}", vm1_args(sock, guest=GEN, reconnect=1), run_dir)
            traffic()

        schedule = [vm1_reboot, vm2_reboot, vm1_pause, vm1_replaced]
        traffic()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            schedule[events % len(schedule)]()
            events += 1
            if events % len(schedule) == 0:           # same point of every cycle
                samples.append((vm2.rss_kib(), len(vm2.fds()), len(vm2.maps())))
            time.sleep(STEP)
        time.sleep(0.5)
        lifetimes.append(books(vm1))
        d = vm2.device("vp0")
        for q in d["queues"]:
            assert q["errors"] == 0, q
        assert d["guest_errors"]["total"] == 0, d["guest_errors"]
        assert d["window_revocations"] == 0 and d["vhost_user"]["dropped_total"] == 0, d
        assert vm2.guest().get("error") is None and vm1.guest().get("error") is None
        return {"seconds": seconds, "events": events, "samples": samples,
                "lifetimes": lifetimes, "vm2_peer_packets": vm2.queue("vp0", "peer1")["packets"]}
    finally:
        vm1.quit()
        assert vm2.quit() == 0, vm2.log()[-3000:]


def check_flat(r: dict) -> None:
    samples = r["samples"]
    assert len(samples) >= 2, r
    rss0, fds0, maps0 = samples[0]
    for rss, fds, maps in samples[1:]:
        assert fds == fds0, samples
        assert maps <= maps0 + 8, samples
        assert rss <= rss0 + RSS_SLACK_KIB, samples
    assert sum(s for s, _, _ in r["lifetimes"]) > 0


@pytest.mark.timeout(900)
def test_soak(run_dir):
    r = soak(run_dir, SOAK_SECONDS)
    print(f"\nsoak {SOAK_SECONDS} s: {r['events']} events, VM2 (rss KiB, fds, maps) "
          f"{r['samples'][0]} -> {r['samples'][-1]}, VM1 lifetimes (sent, received, gaps) "
          f"{r['lifetimes']}")
    check_flat(r)
