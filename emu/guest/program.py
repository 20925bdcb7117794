"""The guest: a driver program on its own thread, like a vCPU.

It does what firmware and a kernel would: enumerate the PCI bus, route
its interrupts and assign resources (:mod:`emu.guest.firmware`), bind a
driver to every matching device, start the app, then wait for interrupts
(config changes: link, NEEDS_RESET, the vhost-pci metadata; the ACPI SCI
for PCI hotplug, :mod:`emu.guest.acpi`) and for requests from the machine
(pause for QMP ``stop``, resume, change of app, halt and boot around a
system reset, stop).  Everything goes through the bus.

Which drivers and apps exist, and the ``-guest DRIVER,app=APP,key=value...``
keys each takes (with their types and bounds), is :mod:`emu.guest.registry`;
the values are checked there before anything starts.

Like a booting system it tells its serial console (COM1, when the machine
has one: ``-serial``) what it does -- the devices it binds, link and peer
changes, the app's start, end and switches, pause, reset, power-off,
errors -- and answers a ``status`` line typed there with its counters
(:mod:`emu.guest.console`).
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Mapping

from emu.guest import firmware, registry
from emu.guest import virtio_net
from emu.guest.acpi import AcpiHotplug
from emu.guest.console import SerialConsole
from emu.guest.dma import DmaPool
from emu.guest.pci import PCIDevice, assign_resources, reset_vectors, wait_interrupts
from emu.spec import virtio as V, virtio_net as N

log = logging.getLogger(__name__)

#: driver keys that are constructor arguments of the driver class
_DRIVER_KWARGS = ("queue_size", "buf_size", "tx_buf_size", "layout", "msix", "legacy")


def _feature_mask(params: Mapping[str, Any]) -> int:
    """What the parameters let a driver ask for (each masks it with what it
    supports)."""
    mask = (1 << 64) - 1
    for key, bit in (("mrg_rxbuf", N.F_MRG_RXBUF), ("event_idx", V.F_EVENT_IDX),
                     ("indirect_desc", V.F_INDIRECT_DESC), ("packed", V.F_RING_PACKED)):
        if params.get(key) is False:
            mask &= ~bit
    return mask


def _supported(drv) -> int:
    from emu.guest import vhost_pci_net
    return vhost_pci_net.SUPPORTED if isinstance(drv, vhost_pci_net.VhostPciNetDriver) \
        else virtio_net.SUPPORTED


class GuestProgram:
    def __init__(self, bus, ram, driver: str, app: str, params: dict | None = None, *,
                 paused: bool = False, name: str = "guest", on_event=None,
                 taps: dict | None = None):
        self.bus = bus
        self.ram = ram
        self.kind = driver
        self.spec = registry.driver(driver)
        self.apps = self.spec.apps
        self.app_name = app
        typed = self.spec.check(app, params or {})     # OptionError before any thread starts
        self.params = typed.driver                      # the driver's keys
        self.app_params = typed.app                     # the running app's, complete
        self.mode = self.params["mode"]
        self.matches, self.driver_cls = self.spec.load()
        self.name = name
        self.emit = on_event or (lambda name, data: None)
        # host-side frame captures per device (filter-dump): instrumentation
        # the machine attaches to whatever queues move that device's frames
        self.taps = taps or {}
        self.drivers = []
        self.app = None
        self.acpi: AcpiHotplug | None = None
        self.windows = None
        self.dma: DmaPool | None = None
        self.halted = False
        self.boots = 0
        self.hotplug_events = 0
        self.paused = paused
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.config_events = 0
        self.renegotiations = 0
        self.console: SerialConsole | None = None

    # -- machine side -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def request(self, what: str, *args) -> None:
        self._requests.put((what, args))

    def check_app(self, app: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The typed parameters of an app switch, or :class:`~emu.keyval.OptionError`
        (any thread: nothing changes)."""
        return self.spec.check(app, params, app_only=True).app

    def after_requests(self, callback) -> None:
        """Call *callback* (on the guest thread) once every request made
        so far has been carried out."""
        self.request("sync", callback)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop = True
        self.request("stop")
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict:
        out = {"app": self.app_name, "paused": self.paused, "devices": {}}
        for d in list(self.drivers):
            out["devices"][d.dev.bdf] = d.queue_stats()
        if self.app is not None:
            out["app_stats"] = self.app.stats()
        return out

    # -- guest thread -----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._bring_up()
            self.ready.set()
            self._loop()
        except Exception as e:          # a guest crash: report it, the VM stays up
            log.exception("%s: guest driver failed", self.name)
            self.say(f"guest: error: {type(e).__name__}: {e}")
            self.error = e
            self.emit("EMU_GUEST_PANIC", {"driver": self.kind, "reason": str(e)})
            self.ready.set()
        finally:
            self._teardown()

    # -- the console ------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A console line (nothing if the machine has no serial port)."""
        if self.console is not None:
            try:
                self.console.write_line(text)
            except Exception:       # the console is a witness, never a reason to fail
                log.exception("%s: console write failed", self.name)
                self.console = None

    def _console_input(self) -> None:
        if self.console is None:
            return
        for line in self.console.read_lines():
            if line.strip() == "status":
                self.say(self._status_line())
            elif line.strip():
                self.say(f"guest: unknown command {line.strip()!r} (try: status)")

    def _status_line(self) -> str:
        stats = self.app.stats() if self.app is not None else {}
        state = "paused" if self.paused else ("running" if self.app and self.app.running
                                              else "idle")
        return (f"status: app {self.app_name} {state}"
                + "".join(f" {k}={v}" for k, v in sorted(stats.items())
                          if isinstance(v, (int, float, str))))

    def _bring_up(self) -> None:
        self.boots += 1
        self.console = SerialConsole.probe(self.bus)
        self.say(f"emu guest: {self.kind} driver, app {self.app_name}, {self.mode} mode, "
                 f"booting")
        devices, self.windows = firmware.boot(self.bus)
        self.acpi = AcpiHotplug.probe(self.bus, devices)
        self.dma = DmaPool(self.ram)
        for dev in devices:
            self.say(f"pci 0000:{dev.bdf >> 8:02x}:{(dev.bdf >> 3) & 31:02x}.{dev.bdf & 7}: "
                     f"[{dev.vendor_id:04x}:{dev.device_id:04x}]")
            if self._bind(dev):
                drv = self.drivers[-1]
                self.say(f"{drv.name}: ready, features 0x{getattr(drv, 'features', 0):x}"
                         + self._link_text(drv))
        if not self.drivers:
            raise RuntimeError(f"no device for driver {self.kind} on the bus")
        self._new_app(self.app_name, self.app_params)
        if not self.paused:
            self.app.start()
            self.say(f"app {self.app_name}: started")
        else:
            self.say(f"app {self.app_name}: waiting (the machine is paused)")

    @staticmethod
    def _link_text(drv) -> str:
        try:
            if hasattr(drv, "link_up"):
                return f", link {'up' if drv.link_up else 'down'}"
            peer = getattr(drv, "peer", None)
            if peer is not None:
                return f", peer {'connected' if peer.mem_ready else 'not connected'}"
        except Exception:
            pass
        return ""

    def _bind(self, dev) -> bool:
        if not self.matches(dev):
            return False
        kw: dict[str, Any] = dict(features=_feature_mask(self.params))
        kw.update((k, v) for k, v in self.params.items() if k in _DRIVER_KWARGS)
        drv = self.driver_cls(dev, self.ram, self.dma, name=f"{self.kind}@{dev.bdf:02x}", **kw)
        drv.taps = self.taps.get(dev.bdf, [])
        drv.start()
        self.drivers.append(drv)
        return True

    def _new_app(self, name: str, params: dict[str, Any]) -> None:
        """*params*: typed and complete (registry.DriverSpec.check)."""
        self.app = self.apps[name].load()(self.drivers, params, self.mode)
        self.app_name = name
        self.app_params = params

    def _config_fds(self) -> dict[int, object]:
        fds: dict[int, object] = {d.config_fd: d for d in self.drivers if d.config_fd is not None}
        if self.acpi is not None:
            fds[self.acpi.fd] = self.acpi
        return fds

    def _loop(self) -> None:
        done_sent = False
        while not self._stop:
            self._serve_requests()
            if self._stop:
                break
            fds = self._config_fds()
            app = self.app
            if app is None or app.uses_pump or self.paused or not app.running:
                fired = wait_interrupts(list(fds), 0.02)
            else:
                app.poll(0.005)
                fired = wait_interrupts(list(fds), 0)
            for fd in fired:
                if fds[fd] is self.acpi:
                    self._hotplug_event()
                else:
                    self._config_interrupt(fds[fd])
            self._console_input()
            if app is not None and app.done and not done_sent:
                done_sent = True
                stats = app.stats()
                self.say(f"app {self.app_name}: done" + "".join(f" {k}={v}" for k, v in
                                                              sorted(stats.items())))
                self.emit("EMU_GUEST_APP_DONE", {"app": self.app_name, **stats})

    # -- ACPI PCI hotplug ---------------------------------------------------------------------
    def _hotplug_event(self) -> None:
        """The SCI: eject the slots the machine asked for (their drivers
        stopped first), bring up what was added; the app runs on."""
        ev = self.acpi.handle()
        if ev is None:
            return
        self.hotplug_events += 1
        was = self.app is not None and self.app.running
        changed = False
        for slot in ev.removed:
            gone = [d for d in self.drivers if (d.dev.bdf >> 3) & 31 == slot]
            if gone and not changed:
                self._stop_app()
                changed = True
            for d in gone:
                d.stop()                 # the device resets: its back-end lets go of our rings
                self.drivers.remove(d)
            self.acpi.eject(slot)
        for slot in ev.added:
            devices = [PCIDevice(self.bus, slot << 3 | fn) for fn in range(8)
                       if self.bus.config_read(slot << 3 | fn, 0, 2) not in (0xFFFF, 0)]
            if not devices:
                continue
            assign_resources(self.bus, devices, self.windows)
            for dev in devices:
                if self.matches(dev):
                    if not changed:
                        self._stop_app()
                        changed = True
                    self._bind(dev)
        if changed:
            self._restart_app(was)
        self.emit("EMU_GUEST_HOTPLUG", {"added": ev.added, "removed": ev.removed,
                                        "drivers": len(self.drivers)})

    def _stop_app(self) -> None:
        if self.app is not None and self.app.running:
            self.app.stop()

    def _restart_app(self, was_running: bool) -> None:
        """The app again over the drivers there are now (none if it cannot
        run with that many devices)."""
        try:
            self.spec.check_devices(self.app_name, len(self.drivers))
        except Exception as e:
            log.warning("%s: app %s stays stopped: %s", self.name, self.app_name, e)
            self.app = None
            return
        self._new_app(self.app_name, self.app_params)
        if was_running and not self.paused:
            self.app.start()

    # -- a system reset ---------------------------------------------------------------------
    def _halt(self) -> None:
        """The machine is about to reset every device: stop touching them
        (the app's data paths stop), forget the drivers without driving the
        devices -- they are reset under us, as a vCPU stops at a reset."""
        self.say("guest: reboot")
        self._stop_app()
        for d in self.drivers:
            d.halt()
        self.app = None
        self.drivers = []
        self.acpi = None
        self.halted = True
        reset_vectors(self.bus)

    def _boot(self) -> None:
        """Firmware and drivers from scratch over the freshly reset machine."""
        self.halted = False
        self._bring_up()

    def _serve_requests(self) -> None:
        while True:
            try:
                what, args = self._requests.get_nowait()
            except queue.Empty:
                return
            if what == "stop":
                self._stop = True
            elif what == "sync":
                args[0]()
            elif what == "halt":
                self._halt()
            elif what == "boot":
                self._boot()
            elif self.app is None:
                # halted, or no device left for the app: only the state changes
                if what == "pause":
                    self.paused = True
                elif what == "resume":
                    self.paused = False
                elif what == "poweroff":
                    self.say("guest: power down")
                    self.emit("EMU_GUEST_POWEROFF", {})
                    self._stop = True
                elif what == "set_app" and len(args) > 2 and args[2] is not None:
                    args[2](RuntimeError("the guest has no device for its app"))
            elif what == "pause" and not self.paused:
                self.paused = True
                if self.app.running:
                    self.app.pause()
                self.say(f"app {self.app_name}: paused")
            elif what == "resume" and self.paused:
                self.paused = False
                if self.app.running:
                    self.app.resume()
                    self.say(f"app {self.app_name}: resumed")
                else:
                    self.app.start()
                    self.say(f"app {self.app_name}: started")
            elif what == "set_app":
                self._set_app(*args)
            elif what == "reconfigure":
                # new driver parameters (features, queue sizes...): the drivers
                # renegotiate from scratch, as after a reboot
                (params,) = args
                given = self.spec.check(self.app_name, params).given
                self.params.update((k, v) for k, v in given.items() if k in self.spec.schema)
                was = self.app.running
                self.app.stop()
                mask = _feature_mask(self.params)
                for d in self.drivers:
                    d.want = mask & _supported(d)
                    d.reinit()
                self._new_app(self.app_name, self.app_params)
                if was and not self.paused:
                    self.app.start()
            elif what == "poweroff":
                self.say("guest: power down")
                self.app.stop()
                for d in self.drivers:
                    d.stop()
                self.emit("EMU_GUEST_POWEROFF", {})
                self._stop = True
            elif what == "reset":
                self.say("guest: reboot")
                self.app.stop()
                for d in self.drivers:
                    d.reinit()
                if not self.paused:
                    self.app.start()
                    self.say(f"app {self.app_name}: started")

    def _set_app(self, name: str, params: dict[str, Any],
                 done: Callable[[BaseException | None], None] | None = None) -> None:
        """Switch apps; an app that fails to start is reported to *done*
        and the previous one runs again (a refused switch changes nothing)."""
        old, old_name, old_params = self.app, self.app_name, self.app_params
        was = old.running
        old.stop()
        try:
            self._new_app(name, params)
            if was and not self.paused:
                self.app.start()
        except Exception as e:
            log.warning("%s: app %s did not start: %s", self.name, name, e)
            self.say(f"app {name}: error: did not start: {e} (app {old_name} runs again)")
            if self.app is not old:
                try:
                    self.app.stop()
                except Exception:
                    log.exception("%s: stopping the app that failed", self.name)
            self.app, self.app_name, self.app_params = old, old_name, old_params
            if was and not self.paused:
                old.start()
            if done is not None:
                done(e)
            return
        self.say(f"app {name}: switched from {old_name}")
        if done is not None:
            done(None)

    def _config_interrupt(self, drv) -> None:
        self.config_events += 1
        ev = drv.config_event()
        if ev == "needs-reset":
            # the device wants a renegotiation (vhost-pci feature push, or an error)
            self.renegotiations += 1
            self.say(f"{drv.name}: device needs reset: renegotiating")
            was = self.app.running
            self.app.stop()
            drv.reinit()
            self.emit("EMU_GUEST_RENEGOTIATED", {"driver": self.kind, "features": drv.features})
            if was and not self.paused:
                self.app.start()
        elif ev is not None and hasattr(drv, "handle_config") and drv.handle_config(self.app):
            self.say(f"{drv.name}: peer changed" + self._link_text(drv))
        elif ev == "link":
            self.say(f"{drv.name}: link changed" + self._link_text(drv))

    def _teardown(self) -> None:
        if self.app is not None and self.app.running:
            try:
                self.app.stop()
            except Exception:
                log.exception("%s: stopping the app", self.name)
        for d in self.drivers:
            try:
                d.stop()
            except Exception:
                log.exception("%s: stopping a driver", self.name)
