"""The machine's clocks: a manual virtual clock runs its timers exactly when
qtest moves it past their deadlines; a real-time clock runs them on the
event loop."""
from __future__ import annotations

import asyncio
import threading

import pytest

from emu.clock import Clock, ClockError, MachineClocks
from emu.errors import EmuBug


def fired_log(clock: Clock):
    log = []

    def timer(name):
        return clock.timer(lambda: log.append((name, clock.now())), name)
    return log, timer


def test_manual_clock_starts_at_zero_and_steps_without_timers():
    c = Clock("virtual", manual=True)
    assert c.now() == 0
    assert c.step() == 0                # no timer: no change
    assert c.step(100) == 100
    assert c.warp(50) == 100            # never backwards
    assert c.warp(1000) == 1000
    with pytest.raises(EmuBug):
        c.step(-1)


def test_timers_run_in_deadline_order_at_their_own_deadline():
    c = Clock("virtual", manual=True)
    log, timer = fired_log(c)
    a, b, d = timer("a"), timer("b"), timer("d")
    b.mod(300)
    a.mod(100)
    d.mod(300)
    assert c.next_deadline() == 100
    assert c.step(250) == 250
    assert log == [("a", 100)] and not a.pending and b.pending
    assert c.step() == 300              # to the next deadline: both timers due then
    assert log == [("a", 100), ("b", 300), ("d", 300)]
    assert c.step() == 300 and c.fired == 3


def test_cancel_and_rearm_take_effect_and_a_periodic_timer_runs_every_period():
    c = Clock("virtual", manual=True)
    log, timer = fired_log(c)
    t = timer("t")
    t.mod(100)
    t.cancel()
    t.cancel()                          # harmless twice
    late = timer("late")
    late.mod(50)
    late.mod(500)                       # re-armed: 50 is gone
    ticks = []

    def tick():
        ticks.append(c.now())
        if len(ticks) < 5:
            periodic.mod(c.now() + 30)
    periodic = c.timer(tick)
    periodic.mod(30)
    c.warp(1000)
    assert ticks == [30, 60, 90, 120, 150]
    assert log == [("late", 500)]


def test_many_rearms_do_not_grow_the_heap_without_bound():
    c = Clock("virtual", manual=True)
    t = c.timer(lambda: None)
    for i in range(10000):
        t.mod(10 + i)
    assert len(c._heap) < 200
    c.step()
    assert c.now() == 10 + 9999 and not t.pending


def test_a_real_time_clock_refuses_qtest_moves():
    c = Clock("virtual")
    with pytest.raises(ClockError, match="qtest"):
        c.step(10)
    with pytest.raises(ClockError):
        c.warp(10)


def test_real_time_timers_run_on_the_loop_armed_from_any_thread():
    async def main():
        loop = asyncio.get_running_loop()
        clocks = MachineClocks(qtest=False)
        rt = clocks.realtime
        fired = asyncio.Event()
        ran_on = []

        def cb():
            ran_on.append(threading.get_ident())
            fired.set()
        t = rt.timer(cb)
        t.mod_in(1_000_000)                 # armed before the loop is attached: kept
        cancelled = rt.timer(lambda: ran_on.append("cancelled"))
        cancelled.mod_in(2_000_000)
        cancelled.cancel()
        clocks.attach(loop)
        await asyncio.wait_for(fired.wait(), 30)
        assert ran_on == [threading.get_ident()]
        fired.clear()
        th = threading.Thread(target=lambda: t.mod_in(1_000_000))
        th.start()
        th.join()
        await asyncio.wait_for(fired.wait(), 30)
        assert ran_on == [threading.get_ident()] * 2
        later = rt.timer(lambda: ran_on.append("closed"))
        later.mod_in(10_000_000)
        clocks.close()
        await asyncio.sleep(0.05)
        assert "closed" not in ran_on and "cancelled" not in ran_on
        assert rt.now() > 0
    asyncio.run(main())


def test_qtest_machines_have_a_manual_virtual_clock_and_a_real_time_one():
    clocks = MachineClocks(qtest=True)
    assert clocks.virtual.manual and not clocks.realtime.manual
    assert clocks.virtual.step(5) == 5
