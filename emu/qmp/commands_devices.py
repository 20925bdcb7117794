"""QMP ``device_add`` and ``device_del`` (QEMU 7.2, qapi/qdev.json).

``device_add`` takes ``driver`` and the device's properties as arguments
(``{"driver": "virtio-net-pci", "id": "net1", "addr": "0x06"}``; QEMU's
schema has no fixed members beyond ``driver``, ``bus`` and ``id``) and
answers ``{}`` once the device is on the bus.  ``device_del`` takes an
``id`` (or a QOM path ``/machine/peripheral/ID``) and answers ``{}`` at
once: the device goes when the guest ejects it, with DEVICE_DELETED.

The monitor's machine offers them as :class:`HotplugControl` (checked
here, so machines without hotplug answer as QEMU does for an unknown
command rather than failing).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from emu.qmp.commands import ANY_ARGS, Arg, command
from emu.qmp.errors import CommandNotFound
from emu.qmp.session import Session


@runtime_checkable
class HotplugControl(Protocol):
    def device_add(self, args: dict[str, Any]) -> Any:
        """Add the device ``args`` describe; QmpError with QEMU's text."""

    def device_del(self, ident: str) -> Any:
        """Ask the guest to eject the device; QmpError / DeviceNotFound."""


def _machine(s: Session) -> HotplugControl:
    m = s.machine
    if not isinstance(m, HotplugControl):
        raise CommandNotFound("This machine does not support device hotplug")
    return m


@command("device_add", Arg("driver", "str"), Arg("bus", "str", optional=True),
         Arg("id", "str", optional=True), Arg(ANY_ARGS, "any"))
async def device_add(s: Session, args: dict[str, Any]) -> dict:
    result = _machine(s).device_add(dict(args))
    if hasattr(result, "__await__"):
        await result
    return {}


@command("device_del", Arg("id", "str"))
async def device_del(s: Session, args: dict[str, Any]) -> dict:
    result = _machine(s).device_del(args["id"])
    if hasattr(result, "__await__"):
        await result
    return {}
