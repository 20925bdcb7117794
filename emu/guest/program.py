"""The guest: a driver program on its own thread, like a vCPU.

It does what firmware and a kernel would: enumerate the PCI bus and
assign resources, bind a driver to every matching device, start the app,
then wait for interrupts (config changes: link, NEEDS_RESET, the vhost-pci
metadata) and for requests from the machine (pause for QMP ``stop``,
resume, change of app, stop).  Everything goes through the bus.

Which drivers and apps exist, and the ``-guest DRIVER,app=APP,key=value...``
keys each takes (with their types and bounds), is :mod:`emu.guest.registry`;
the values are checked there before anything starts.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Mapping

from emu.guest import registry
from emu.guest import virtio_net
from emu.guest.dma import DmaPool
from emu.guest.pci import probe, wait_interrupts
from emu.spec import virtio as V, virtio_net as N

log = logging.getLogger(__name__)

#: driver keys that are constructor arguments of the driver class
_DRIVER_KWARGS = ("queue_size", "buf_size", "tx_buf_size", "layout", "msix")


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
        self.paused = paused
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.config_events = 0
        self.renegotiations = 0

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
            self.error = e
            self.emit("EMU_GUEST_PANIC", {"driver": self.kind, "reason": str(e)})
            self.ready.set()
        finally:
            self._teardown()

    def _bring_up(self) -> None:
        devices = probe(self.bus)
        dma = DmaPool(self.ram)
        kw: dict[str, Any] = dict(features=_feature_mask(self.params))
        kw.update((k, v) for k, v in self.params.items() if k in _DRIVER_KWARGS)
        for dev in devices:
            if self.matches(dev):
                drv = self.driver_cls(dev, self.ram, dma, name=f"{self.kind}@{dev.bdf:02x}", **kw)
                drv.taps = self.taps.get(dev.bdf, [])
                drv.start()
                self.drivers.append(drv)
        if not self.drivers:
            raise RuntimeError(f"no device for driver {self.kind} on the bus")
        self._new_app(self.app_name, self.app_params)
        if not self.paused:
            self.app.start()

    def _new_app(self, name: str, params: dict[str, Any]) -> None:
        """*params*: typed and complete (registry.DriverSpec.check)."""
        self.app = self.apps[name].load()(self.drivers, params, self.mode)
        self.app_name = name
        self.app_params = params

    def _config_fds(self) -> dict[int, object]:
        return {d.config_fd: d for d in self.drivers if d.config_fd is not None}

    def _loop(self) -> None:
        done_sent = False
        while not self._stop:
            self._serve_requests()
            if self._stop:
                break
            fds = self._config_fds()
            if self.app.uses_pump or self.paused or not self.app.running:
                fired = wait_interrupts(list(fds), 0.02)
            else:
                self.app.poll(0.005)
                fired = wait_interrupts(list(fds), 0)
            for fd in fired:
                self._config_interrupt(fds[fd])
            if self.app.done and not done_sent:
                done_sent = True
                self.emit("EMU_GUEST_APP_DONE", {"app": self.app_name, **self.app.stats()})

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
            elif what == "pause" and not self.paused:
                self.paused = True
                if self.app.running:
                    self.app.pause()
            elif what == "resume" and self.paused:
                self.paused = False
                if self.app.running:
                    self.app.resume()
                else:
                    self.app.start()
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
                self.app.stop()
                for d in self.drivers:
                    d.stop()
                self.emit("EMU_GUEST_POWEROFF", {})
                self._stop = True
            elif what == "reset":
                self.app.stop()
                for d in self.drivers:
                    d.reinit()
                if not self.paused:
                    self.app.start()

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
        if done is not None:
            done(None)

    def _config_interrupt(self, drv) -> None:
        self.config_events += 1
        ev = drv.config_event()
        if ev == "needs-reset":
            # the device wants a renegotiation (vhost-pci feature push, or an error)
            self.renegotiations += 1
            was = self.app.running
            self.app.stop()
            drv.reinit()
            self.emit("EMU_GUEST_RENEGOTIATED", {"driver": self.kind, "features": drv.features})
            if was and not self.paused:
                self.app.start()
        elif ev is not None and hasattr(drv, "handle_config") and drv.handle_config(self.app):
            pass

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
