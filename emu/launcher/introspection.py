"""What ``query-machines`` and ``qom-list-types`` say of this binary
(:class:`emu.qmp.control.Introspection`): the machine types of
:mod:`emu.machines.types` as QEMU 7.2's ``MachineInfo`` and the QOM types
of :mod:`emu.qom.catalog` as ``ObjectTypeInfo``.

The shapes are strict -- libqos decodes them with a QAPI visitor and
aborts on a member it does not know -- so each object carries exactly the
members of QEMU's schema (qapi/machine.json, qapi/qom.json), optional ones
only where QEMU sends them.
"""
from __future__ import annotations

from typing import Any

from emu.machines import types as machine_types
from emu.qom.catalog import registry


def machine_info(t: machine_types.MachineType) -> dict[str, Any]:
    """QAPI ``MachineInfo`` of one machine type."""
    info: dict[str, Any] = {"name": t.qemu_name}
    if t.canonical is not None:
        info["alias"] = t.name
    if t.default:
        info["is-default"] = True
    info.update({"cpu-max": t.cpu_max, "hotpluggable-cpus": t.hotpluggable_cpus,
                 "numa-mem-supported": False, "deprecated": False})
    if t.default_cpu_type is not None:
        info["default-cpu-type"] = t.default_cpu_type
    info["default-ram-id"] = t.default_ram_id
    return info


def _object_type(typename: str):
    """The registered type, or QEMU's DeviceNotFound."""
    from emu.qmp.errors import QmpError
    t = registry().get(typename)
    if t is None:
        raise QmpError(f"Class '{typename}' not found", "DeviceNotFound")
    return t


class EmuIntrospection:
    def query_machines(self) -> list[dict[str, Any]]:
        return [machine_info(t) for t in machine_types.MACHINE_TYPES]

    def qom_list_types(self, implements: str | None, abstract: bool) -> list[dict[str, Any]]:
        return [t.object_type_info() for t in registry().list_types(implements, abstract)]

    def device_list_properties(self, typename: str) -> list[dict[str, Any]]:
        """``device-list-properties``: a device type's properties
        (:mod:`emu.devprops`), QEMU's ObjectPropertyInfo and errors."""
        from emu import devprops
        from emu.qmp.errors import QmpError
        reg = registry()
        t = reg.get(typename)
        if t is None:
            raise QmpError(f"Device '{typename}' not found", "DeviceNotFound")
        if t.abstract or not reg.implements(typename, "device"):
            raise QmpError("Parameter 'typename' expects a non-abstract device type")
        return devprops.device_properties(typename) or []

    def qom_list_properties(self, typename: str) -> list[dict[str, Any]]:
        """``qom-list-properties``: ``type`` and, for a device type, its
        properties (without QEMU's defaults: a class, not an object)."""
        from emu import devprops
        t = _object_type(typename)
        out = [{"name": "type", "type": "string"}]
        if registry().implements(t.name, "device") and not t.abstract:
            out += [{k: v for k, v in p.items() if k != "default-value"}
                    for p in devprops.device_properties(typename) or []]
        return out
