""":class:`MachineAdapter`: emu.qmp's :class:`~emu.qmp.control.MachineControl`
over an :class:`emu.machine.Machine`, with QEMU's run-state rules."""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from emu.config import MachineConfig
from emu.errors import PeerError
from emu.launcher import qom_views, views
from emu.qmp.control import GUEST_SHUTDOWN, HOST_QMP_QUIT, HOST_SIGNAL, Emit, RunState
from emu.qmp.errors import QmpError

#: seconds the guest thread has to switch apps before emu-set-guest-app fails
APP_SWITCH_TIMEOUT = 10.0


class MachineAdapter:
    """The monitor's view of one machine: actions, their events, the views."""

    def __init__(self, machine: Any, cfg: MachineConfig, emit: Emit, on_exit: Callable[[], None],
                 serials: Any = None):
        self.m = machine
        self.cfg = cfg
        self.serials = serials          # emu.launcher.serial.SerialPorts
        self.rs = RunState(emit, start_paused=cfg.start_paused, no_shutdown=cfg.no_shutdown)
        self._on_exit = on_exit
        self.started = False
        self.machine_started = asyncio.Event()     # Machine.start() done (its netdevs open)
        self.qtest = None           # emu.launcher.qtest_mode.QtestService under -qtest

    @property
    def name(self) -> str | None:
        return self.cfg.name

    @property
    def uuid(self) -> str:
        """``-uuid``, or QEMU's all-zero default."""
        return self.cfg.uuid or "00000000-0000-0000-0000-000000000000"

    @property
    def run_state(self) -> str:
        return self.rs.state

    # The actions answer once the guest has carried them out: after ``stop``
    # the counters are frozen, after ``cont`` and ``system_reset`` traffic runs.
    async def stop(self) -> None:
        if self.rs.running:
            self.m.stop()
            await self.m.guest_settled()
        self.rs.stop()          # STOP once paused, as QEMU's do_vm_stop

    async def cont(self) -> None:
        was_prelaunch = self.rs.state == "prelaunch"
        if self.rs.cont():
            self.m.cont()
            if was_prelaunch:
                self.started = True
            await self.m.guest_settled()

    async def system_reset(self) -> None:
        # (QEMU's qemu_system_reset: the devices first, then the RESET event)
        done = self.m.system_reset()
        if inspect.isawaitable(done):
            await done
        await self.m.guest_settled()
        self.rs.reset()

    def started_running(self, machine: Any) -> None:
        """The machine has started (paused if ``-S``): match the run state
        the monitor set meanwhile."""
        self.machine_started.set()
        g = machine.guest
        if g is None:
            return
        if self.rs.running and g.paused:
            machine.cont()
        elif not self.rs.running and not g.paused:
            machine.stop()

    # -- hotplug (emu.qmp.commands_devices) -----------------------------------------------
    def device_add(self, args: dict[str, Any]) -> None:
        self.m.hotplug.device_add(args)

    def device_del(self, ident: str) -> None:
        self.m.hotplug.device_del(ident)

    # -- announce-self (emu.qmp.commands_net) -------------------------------------------------
    async def announce_self(self, initial: int, max: int, rounds: int, step: int,
                            interfaces: list[str] | None, id: str) -> None:
        from emu.netdev_announce import AnnounceParameters
        try:
            params = AnnounceParameters(initial, max, rounds, step,
                                        tuple(interfaces) if interfaces is not None else None, id)
        except PeerError as e:
            raise QmpError(str(e)) from None
        # The monitor is served while the machine starts; its netdevs open
        # in Machine.start() (QEMU creates them before its monitor serves):
        # the first round goes, and the command answers, once they are open.
        await self.machine_started.wait()
        self.m.announce_self(params)

    def system_powerdown(self) -> None:
        self.rs.powerdown()
        self.m.system_powerdown()

    def guest_powered_off(self) -> None:
        if self.rs.shutdown(guest=True, reason=GUEST_SHUTDOWN):
            self._on_exit()

    def quit(self) -> None:
        self.rs.shutdown(guest=False, reason=HOST_QMP_QUIT)
        self._on_exit()

    def signal(self) -> None:
        self.rs.shutdown(guest=False, reason=HOST_SIGNAL)
        self._on_exit()

    # -- the guest's app ----------------------------------------------------------------------
    def set_guest_app(self, app: str, params: dict[str, Any]):
        """Check the switch here, on the loop (a refused one changes
        nothing and answers at once); the returned awaitable ends once the
        new app runs, or fails if it did not start (the old one runs again)."""
        g = self.m.guest
        if g is None:
            raise QmpError("This VM has no guest program (-guest)")
        if app not in g.apps:
            raise QmpError(f"Unknown app '{app}' for driver {g.kind} "
                           f"(have {', '.join(sorted(g.apps))})")
        try:
            typed = g.check_app(app, params)
            g.spec.check_devices(app, sum(e.driver == g.spec.device for e in self.m.devices.values()))
        except PeerError as e:
            raise QmpError(str(e)) from None
        if not g.alive:
            raise QmpError("The guest program is not running"
                           + (f" (it failed: {g.error})" if g.error is not None else ""))
        return self._switch_app(g, app, typed)

    async def _switch_app(self, g: Any, app: str, params: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future = loop.create_future()

        def done(error: BaseException | None) -> None:     # on the guest thread
            loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(error))
        g.request("set_app", app, params, done)
        try:
            error = await asyncio.wait_for(answer, APP_SWITCH_TIMEOUT)
        except asyncio.TimeoutError:
            raise QmpError(f"The guest did not switch to app {app} within "
                           f"{APP_SWITCH_TIMEOUT:g} s") from None
        if error is not None:
            raise QmpError(f"app {app} did not start: {error} (app {g.app_name} runs again)")

    # -- views ----------------------------------------------------------------------------------
    def query_pci(self) -> list:
        return views.query_pci(self.m)

    def query_chardev(self) -> list:
        serial = self.serials.chardev_info() if self.serials is not None else []
        return views.query_chardev(self.m) + serial

    def emu_stats(self) -> dict:
        stats = views.emu_stats(self.m)
        if self.serials is not None and self.serials.ports:
            stats["serial"] = self.serials.stats()
        if self.qtest is not None:
            stats["qtest"] = self.qtest.stats()
        return stats

    def info_network(self) -> str:
        return views.info_network(self.m)

    def info_mtree(self) -> str:
        return views.info_mtree(self.m)

    # -- the QOM tree (emu.launcher.qom_views) ---------------------------------------------
    def qom_list(self, path: str) -> list:
        return qom_views.qom_list(self.m, self.cfg, path)

    def qom_get(self, path: str, prop: str) -> Any:
        return qom_views.qom_get(self.m, self.cfg, path, prop)

    def info_qom_tree(self, path: str | None) -> str:
        return qom_views.info_qom_tree(self.m, path or "/machine")

    def info_qtree(self) -> str:
        return qom_views.info_qtree(self.m, self.cfg, self.query_pci())

    def query_cpus_fast(self) -> list:
        return views.query_cpus_fast(self.m, self.cfg.smp)
