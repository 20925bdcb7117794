"""What the QMP monitor needs from a machine, and QEMU's run-state rules.

The monitor is a protocol adapter: it parses commands and calls a
:class:`MachineControl`; it never decides what a VM does.  The machine owns
its run state and raises every event itself (through the ``emit`` callable
the monitor gives it), because state changes also come from elsewhere: the
guest powers off, a vhost-user peer connects.  :class:`RunState` implements
QEMU's rules for the host-side transitions so that a machine gets the same
events, in the same cases, as QEMU 7.2 raises them.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol, runtime_checkable

from emu.qmp.errors import QmpError

#: ``emit(event_name, data_or_None)``; thread-safe (see QmpServer.emit)
Emit = Callable[[str, "dict[str, Any] | None"], None]

# Run states: QEMU's names (qapi/run-state.json) for the ones emu can be in.
PRELAUNCH = "prelaunch"          # -S, never started
RUNNING = "running"
PAUSED = "paused"                # stopped by the monitor
SHUTDOWN = "shutdown"            # guest powered off under -no-shutdown
INTERNAL_ERROR = "internal-error"

# Events emu raises.  QEMU's, with QEMU's data members, and emu's own.
EV_STOP = "STOP"
EV_RESUME = "RESUME"
EV_RESET = "RESET"                # {"guest": bool, "reason": ShutdownCause}
EV_SHUTDOWN = "SHUTDOWN"          # {"guest": bool, "reason": ShutdownCause}
EV_POWERDOWN = "POWERDOWN"
EV_NIC_RX_FILTER_CHANGED = "NIC_RX_FILTER_CHANGED"   # {"name": qdev id, "path": qom path}
EV_VHOST_USER_CONNECTED = "VHOST_USER_CONNECTED"     # {"device": id, "chardev": id}
EV_VHOST_USER_DISCONNECTED = "VHOST_USER_DISCONNECTED"   # {"device", "chardev", "reason"}
EV_VHOST_USER_FEATURES_CHANGED = "VHOST_USER_FEATURES_CHANGED"  # {"device", "chardev", "features", "protocol-features"}

# ShutdownCause values (qapi/run-state.json) emu uses.
HOST_QMP_QUIT = "host-qmp-quit"
HOST_QMP_SYSTEM_RESET = "host-qmp-system-reset"
HOST_SIGNAL = "host-signal"
GUEST_SHUTDOWN = "guest-shutdown"
GUEST_RESET = "guest-reset"


@runtime_checkable
class MachineControl(Protocol):
    """The machine as the monitor sees it.

    Methods run on the monitor's event-loop thread and should return quickly;
    any of the action methods may instead return an awaitable, which the
    monitor awaits before answering.  They raise :class:`QmpError` to make a
    command fail with a given class and text; any other exception is a bug:
    the monitor answers ``GenericError`` and keeps serving.
    """

    @property
    def name(self) -> str | None: ...          # -name, or None

    @property
    def run_state(self) -> str: ...            # one of the run-state names above

    def stop(self) -> None | Awaitable[None]: ...
    def cont(self) -> None | Awaitable[None]: ...
    def system_reset(self) -> None | Awaitable[None]: ...
    def system_powerdown(self) -> None | Awaitable[None]: ...

    def quit(self) -> None | Awaitable[None]:
        """Emit SHUTDOWN (host-qmp-quit) now and have the process exit soon.

        The monitor answers ``{"return": {}}`` after this returns; the
        process must not exit before ``await QmpServer.close()`` has
        flushed that answer and the event to every client.
        """

    def query_pci(self) -> list[dict[str, Any]]:
        """QEMU's ``query-pci`` value: ``[{"bus": 0, "devices": [PciDeviceInfo...]}]``.

        Each device: ``bus, slot, function, class_info {class, desc},
        id {device, vendor, subsystem, subsystem-vendor}, qdev_id, regions
        [{bar, type: "memory"|"io", address, size, prefetch, mem_type_64}]``,
        optional ``irq`` and ``irq_pin``.  (``prefetch`` and
        ``mem_type_64`` only for memory BARs, as in QEMU.)
        """

    def query_chardev(self) -> list[dict[str, Any]]:
        """``[{"label", "filename", "frontend-open"}]`` for the machine's
        chardevs; the monitor adds its own (monitor) chardevs."""

    def emu_stats(self) -> dict[str, Any]:
        """``{"devices": [{"id", "driver", "queues": [{"index", "name",
        "packets", "bytes", "drops", "errors", "kicks", "calls"}]}]}``."""

    def set_guest_app(self, app: str, params: dict[str, Any]) -> None | Awaitable[None]: ...

    def info_network(self) -> str:
        """The text of HMP ``info network`` (lines without line ends)."""

    def info_mtree(self) -> str:
        """HMP ``info mtree``: the address spaces, QEMU's format."""

    def query_cpus_fast(self) -> list[dict[str, Any]]:
        """``[CpuInfoFast]``: cpu-index, qom-path, thread-id, props?, target."""

    def qom_list(self, path: str) -> list[dict[str, Any]]:
        """``qom-list``: ``[ObjectPropertyInfo]`` of the object at *path*
        (QmpError DeviceNotFound if there is none)."""

    def qom_get(self, path: str, prop: str) -> Any:
        """``qom-get``: a property's value."""

    def info_qom_tree(self, path: str | None) -> str:
        """HMP ``info qom-tree [path]``."""

    def info_qtree(self) -> str:
        """HMP ``info qtree``."""


@runtime_checkable
class Introspection(Protocol):
    """What the binary has, for the commands that answer before (and
    without) a machine: QEMU's schemas, members exactly as QEMU sends them."""

    def query_machines(self) -> list[dict[str, Any]]:
        """``[MachineInfo]``: name, alias?, is-default?, cpu-max,
        hotpluggable-cpus, numa-mem-supported, deprecated, default-cpu-type?,
        default-ram-id?"""

    def qom_list_types(self, implements: str | None, abstract: bool) -> list[dict[str, Any]]:
        """``[ObjectTypeInfo]``: name, abstract? (only when true), parent?"""

    def device_list_properties(self, typename: str) -> list[dict[str, Any]]:
        """``[ObjectPropertyInfo]`` of a device type: name, type,
        description?, default-value?"""

    def qom_list_properties(self, typename: str) -> list[dict[str, Any]]:
        """``[ObjectPropertyInfo]`` of any type."""


class RunState:
    """QEMU 7.2's host-initiated run-state transitions and their events.

    Each method updates :attr:`state`, emits what QEMU emits, and returns
    True when the machine has work to do (pause or resume its data paths,
    reset its devices, or exit).
    """

    def __init__(self, emit: Emit, *, start_paused: bool = False, no_shutdown: bool = False):
        self._emit = emit
        self.state = PRELAUNCH if start_paused else RUNNING
        self.no_shutdown = no_shutdown

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def stop(self) -> bool:
        # In prelaunch QEMU only clears autostart: no event, state unchanged.
        if self.state != RUNNING:
            return False
        self.state = PAUSED
        self._emit(EV_STOP, None)
        return True

    def cont(self) -> bool:
        if self.state in (SHUTDOWN, INTERNAL_ERROR):
            raise QmpError("Resetting the Virtual Machine is required")
        if self.state == RUNNING:
            return False
        self.state = RUNNING
        self._emit(EV_RESUME, None)
        return True

    def reset(self, *, guest: bool = False, reason: str = HOST_QMP_SYSTEM_RESET) -> bool:
        self._emit(EV_RESET, {"guest": guest, "reason": reason})
        # As QEMU's main loop: a VM that was not running comes back in prelaunch.
        if self.state != RUNNING:
            self.state = PRELAUNCH
        return True

    def powerdown(self) -> bool:
        """The guest is asked to power off (ACPI button); it decides."""
        self._emit(EV_POWERDOWN, None)
        return True

    def shutdown(self, *, guest: bool, reason: str) -> bool:
        """Emit SHUTDOWN; True if the process should now exit.

        With ``-no-shutdown`` a guest-initiated power-off only stops the VM
        (SHUTDOWN then STOP, as QEMU); the host's quit and signals always exit.
        """
        self._emit(EV_SHUTDOWN, {"guest": guest, "reason": reason})
        if self.no_shutdown and guest:
            was_running = self.state == RUNNING
            self.state = SHUTDOWN
            if was_running:
                self._emit(EV_STOP, None)
            return False
        self.state = SHUTDOWN
        return True
