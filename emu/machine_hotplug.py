"""Devices added and removed while the machine runs: QMP ``device_add`` and
``device_del`` with QEMU 7.2's checks and error texts, over the machine
type's hotplug (pc: ACPI PCI hotplug, :mod:`emu.machines.hotplug`).

* ``device_add``: the arguments are checked as ``-device`` checks them
  (same schema, same texts), then QEMU's: a machine without hotplug on its
  root bus (q35: "Bus 'pcie.0' does not support hotplugging"), a duplicate
  id, a netdev that does not exist or is in use, an occupied slot or
  function.  A NIC without ``netdev`` has no peer (QEMU allows it).  The
  device is on the bus when the command returns; the guest learns of it
  through ACPI (PCI_UP and the hotplug GPE).
* ``device_del``: asks the guest to eject the device's slot (PCI_DOWN and
  the GPE) and returns at once; a second request while the first is
  pending is refused as QEMU refuses it.  The device goes when the guest
  ejects the slot (PCI_EJ) or the machine resets.
* Ejection (guest thread or qtest, machine lock held): each function is
  reset (a vhost-user back-end stops its rings) and taken off the bus at
  once; then, on the event loop, the device model is released and
  ``DEVICE_DELETED`` is emitted for its virtio backend and for the device
  (QEMU's two events).  The netdev stays, free for another NIC.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from emu.errors import PeerError
from emu.machines.hotplug import NUM_SLOTS, is_hotpluggable
from emu.qmp.errors import DEVICE_NOT_FOUND, QmpError

log = logging.getLogger(__name__)

VIRTIO_BACKEND = "virtio-backend"
PERIPHERAL = "/machine/peripheral/"
UNPLUG_TIMEOUT = 10.0
HOTPLUGGABLE_DRIVERS = ("virtio-net-pci",)


def device_not_found(ident: str) -> QmpError:
    """QEMU's ERROR_CLASS_DEVICE_NOT_FOUND."""
    return QmpError(f"Device '{ident}' not found", DEVICE_NOT_FOUND)


def _pci_error(text: str) -> QmpError:
    return QmpError(f"PCI: {text}")


class Hotplug:
    def __init__(self, machine):
        self.m = machine
        self.pending: dict[str, int] = {}        # id -> virtual ms of the unplug request
        self.deleted = 0
        hp = machine.system.hotplug
        if hp is not None:
            hp.on_ejected = self._ejected

    # -- device_add ---------------------------------------------------------------------
    def device_add(self, args: dict[str, Any]) -> None:
        """QMP device_add (run on the loop): raises QmpError with QEMU's text."""
        from emu.config import VirtioNetPCI
        from emu.keyval import OptionError, format_value
        m = self.m
        if m.device_parser is None:
            raise QmpError("device_add is not available: the machine has no device parser")
        pairs = [(k, format_value(v)) for k, v in args.items() if k not in ("driver", "bus")]
        driver = args.get("driver")
        try:
            dev = m.device_parser(str(driver), pairs, m.globals)
        except OptionError as e:
            # (QEMU's error hints -- the lines after the first -- go to a
            # command line's stderr, never into a QMP error)
            raise QmpError(str(e).split("\n", 1)[0]) from None
        if dev.driver not in HOTPLUGGABLE_DRIVERS:
            raise QmpError("Parameter 'driver' expects a pluggable device type")
        if m.system.hotplug is None:
            raise QmpError((m.machine_type.hotplug_error or "this machine has no PCI hotplug")
                           .format(driver=dev.driver))
        if dev.id is not None and dev.id in m.devices:
            raise QmpError(f"Duplicate device ID '{dev.id}'")
        assert isinstance(dev, VirtioNetPCI)
        if dev.netdev is not None:
            if dev.netdev not in m.netdevs:
                raise QmpError(f"Property 'virtio-net-device.netdev' can't find value "
                               f"'{dev.netdev}'")
            if any(e.netdev is m.netdevs[dev.netdev] for e in m.devices.values()):
                raise QmpError(f"Property 'virtio-net-device.netdev' can't take value "
                               f"'{dev.netdev}', it's in use")
        slot, fn = self._place(dev)
        dev_id = dev.id or self._anon_id()
        try:
            entry = m.make_virtio_net(dev_id, dev.netdev, mac=m.nic_mac(dev.mac),
                                      mq=dev.mq, mrg_rxbuf=dev.mrg_rxbuf,
                                      event_idx=dev.event_idx,
                                      indirect_desc=dev.indirect_desc,
                                      host_mtu=dev.host_mtu or 0, vectors=dev.vectors,
                                      queue_size=dev.rx_queue_size, packed=dev.packed)
        except (PeerError, ValueError) as e:
            raise QmpError(str(e)) from None
        self.plug(entry, f"{slot:x}.{fn}")

    def plug(self, entry, addr) -> Any:
        """Hot-add a built device entry at ``addr`` and start its loop side."""
        m = self.m
        slot, fn = m._devfn(addr)
        entry.hotplugged = True
        with m.lock:
            entry.bdf = m.system.hotplug.plug(entry.function, slot, fn)
            m.devices[entry.id] = entry
        from emu.qom.machine_tree import add_device
        entry.qom = add_device(m.qom, entry.id, entry.driver, entry)
        if m.loop is not None:
            if hasattr(entry.model, "loop"):
                entry.model.loop = m.loop
            starter = getattr(entry.model, "start_loop_side", None)
            if starter is not None:
                starter()
        return entry

    def _anon_id(self) -> str:
        n = 0
        while f"device{n}" in self.m.devices:
            n += 1
        return f"device{n}"

    def _place(self, dev) -> tuple[int, int]:
        """The slot/function for ``dev``: QEMU's checks of an explicit
        address, or the first slot with nothing in it."""
        functions = self.m.system.functions
        if dev.addr is None:
            for slot in range(NUM_SLOTS):
                if not any((b >> 3) & 31 == slot for b in functions):
                    return slot, 0
            raise _pci_error(f"no slot/function available for {dev.driver}, all in use "
                             f"or reserved")
        # (QEMU 7.2 do_pci_register_device, then pci_init_multifunction)
        slot, fn = dev.addr.slot, dev.addr.function
        other = functions.get((slot << 3) | fn)
        if other is not None:
            raise _pci_error(f"slot {slot} function {fn} not available for {dev.driver}, "
                             f"in use by {self._describe(other)}")
        zero = functions.get(slot << 3)
        if fn and zero is not None:
            raise _pci_error(f"slot {slot} function 0 already occupied by "
                             f"{self._describe(zero, with_id=False)}, new func {dev.driver} "
                             f"cannot be exposed to guest.")
        if fn == 0:
            busy = sorted(b & 7 for b in functions if (b >> 3) & 31 == slot)
            if busy:
                raise _pci_error(f"{slot:x}.0 indicates single function, but "
                                 f"{slot:x}.{busy[0]} is already populated.")
        return slot, fn

    def _describe(self, function, with_id: bool = True) -> str:
        entry = next((e for e in self.m.devices.values() if e.function is function), None)
        name = entry.driver if entry is not None else function.name
        if not with_id:
            return name
        # (QEMU prints a device without id with glibc's "(null)")
        return f"{name},id={entry.id if entry is not None else '(null)'}"

    # -- device_del ---------------------------------------------------------------------
    def find(self, ident: str):
        m = self.m
        entry = m.devices.get(ident)
        if entry is None and ident.startswith(PERIPHERAL):
            entry = m.devices.get(ident[len(PERIPHERAL):])
        if entry is None:
            raise device_not_found(ident)
        return entry

    def device_del(self, ident: str) -> None:
        """QMP device_del: the guest is asked to eject the slot."""
        m = self.m
        entry = self.find(ident)
        if m.system.hotplug is None:
            raise QmpError((m.machine_type.hotplug_error or "this machine has no PCI hotplug")
                           .format(driver=entry.driver))
        slot = (entry.bdf >> 3) & 31
        with m.lock:
            now_ms = m.system.now() // 1_000_000
            asked = self.pending.get(entry.id)
            # (QEMU 7.2 qmp_device_del: a request may be repeated once its
            # "expiry" -- the virtual ms of the first one -- has passed)
            if asked is not None and (asked == 0 or asked > now_ms) \
                    and m.system.hotplug.unplug_pending(slot):
                raise QmpError(f"Device {entry.id} is already in the process of unplug")
            self.pending[entry.id] = now_ms
            m.system.hotplug.request_unplug(slot)

    # -- ejection (lock held, any thread) ------------------------------------------------
    def _ejected(self, functions: list) -> None:
        m = self.m
        for f in functions:
            entry = next((e for e in m.devices.values() if e.function is f), None)
            if entry is None:
                continue
            del m.devices[entry.id]
            self.pending.pop(entry.id, None)
            if m.loop is not None and not m.loop.is_closed():
                m.loop.call_soon_threadsafe(
                    lambda e=entry: m.loop.create_task(self._release(e)))
            else:
                self._release_now(entry)

    async def _release(self, entry) -> None:
        """Release an ejected device on the loop, then DEVICE_DELETED."""
        m = self.m
        f = entry.function
        with m.lock:
            f.reset()            # the device's own reset: vhost-user stops the rings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNPLUG_TIMEOUT
        while hasattr(f, "device") and f.status != 0 and loop.time() < deadline:
            await asyncio.sleep(0.002)
        self._release_now(entry)

    def _release_now(self, entry) -> None:
        m = self.m
        for obj in (entry.model, entry.function):
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("releasing %s", entry.id)
        if entry.netdev is not None:
            entry.netdev.attach(None)       # free for another NIC
            entry.netdev.call_fds = {}
        if getattr(entry, "qom", None) is not None:
            m.qom.remove(entry.qom)         # /machine/peripheral/ID goes with it
            entry.qom = None
        self.deleted += 1
        path = entry.qom_path
        m.emit("DEVICE_DELETED", {"path": f"{path}/{VIRTIO_BACKEND}"})
        m.emit("DEVICE_DELETED", {"device": entry.id, "path": path})

    def stats(self) -> dict:
        hp = self.m.system.hotplug
        return {"pending": sorted(self.pending), "deleted": self.deleted,
                "removable": 0 if hp is None else ~hp.fixed_slots() & 0xFFFFFFFF}


__all__ = ["Hotplug", "device_not_found", "is_hotpluggable"]
