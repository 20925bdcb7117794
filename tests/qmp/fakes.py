"""A stand-in machine for monitor tests: real run-state rules, canned devices."""
from __future__ import annotations

import threading
from typing import Any, Callable

from emu.qmp.control import (GUEST_SHUTDOWN, HOST_QMP_QUIT, HOST_SIGNAL, RunState)
from emu.qmp.errors import QmpError

APPS = ("gen", "sink", "echo", "responder", "forward")


def virtio_net_pci_info(slot: int, qdev_id: str) -> dict[str, Any]:
    """A query-pci device entry shaped like QEMU 7.2's for a modern virtio-net-pci."""
    return {
        "bus": 0, "slot": slot, "function": 0, "irq_pin": 1, "irq": 10,
        "class_info": {"class": 0x0200, "desc": "Ethernet controller"},
        "id": {"device": 0x1041, "vendor": 0x1AF4, "subsystem": 0x1100, "subsystem-vendor": 0x1AF4},
        "qdev_id": qdev_id,
        "regions": [
            {"bar": 1, "type": "memory", "address": 0xFEA00000, "size": 4096,
             "prefetch": False, "mem_type_64": False},
            {"bar": 4, "type": "memory", "address": -1, "size": 16384,
             "prefetch": True, "mem_type_64": True},
        ],
    }


class FakeMachine:
    """Implements emu.qmp.MachineControl with emu.qmp.RunState.

    ``on_exit`` is called (once) when the machine decides the process
    should exit: after quit, a guest power-off without -no-shutdown, or a
    signal.
    """

    def __init__(self, emit: Callable[[str, Any], None], *, name: str | None = None,
                 start_paused: bool = False, no_shutdown: bool = False,
                 nics: tuple[str, ...] = ("nic0",), on_exit: Callable[[], None] = lambda: None):
        self.emit = emit
        self._name = name
        self.state = RunState(emit, start_paused=start_paused, no_shutdown=no_shutdown)
        self.nics = nics
        self.on_exit = on_exit
        self.exit_requested = threading.Event()
        self.app: tuple[str, dict[str, Any]] = ("sink", {})
        self.calls: list[str] = []

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def run_state(self) -> str:
        return self.state.state

    def _exit(self) -> None:
        if not self.exit_requested.is_set():
            self.exit_requested.set()
            self.on_exit()

    def stop(self) -> None:
        self.calls.append("stop")
        self.state.stop()

    def cont(self) -> None:
        self.calls.append("cont")
        self.state.cont()

    def system_reset(self) -> None:
        self.calls.append("system_reset")
        self.state.reset()

    def system_powerdown(self) -> None:
        # The guest driver program honours the power button at once.
        self.calls.append("system_powerdown")
        self.state.powerdown()
        if self.state.shutdown(guest=True, reason=GUEST_SHUTDOWN):
            self._exit()

    def quit(self) -> None:
        self.calls.append("quit")
        self.state.shutdown(guest=False, reason=HOST_QMP_QUIT)
        self._exit()

    def signal(self) -> None:
        self.state.shutdown(guest=False, reason=HOST_SIGNAL)
        self._exit()

    def query_pci(self) -> list[dict[str, Any]]:
        return [{"bus": 0, "devices": [virtio_net_pci_info(2 + i, nic) for i, nic in enumerate(self.nics)]}]

    def query_chardev(self) -> list[dict[str, Any]]:
        return [{"label": "char0", "filename": "disconnected:unix:/tmp/vu.sock,server=on",
                 "frontend-open": True}]

    def emu_stats(self) -> dict[str, Any]:
        return {"devices": [
            {"id": nic, "driver": "virtio-net-pci", "queues": [
                {"index": q, "name": ("rx", "tx")[q % 2] + str(q // 2), "packets": 10 * (q + 1),
                 "bytes": 640 * (q + 1), "drops": q, "errors": 0, "kicks": 3, "calls": 4}
                for q in range(2)]}
            for nic in self.nics]}

    def set_guest_app(self, app: str, params: dict[str, Any]) -> None:
        if app not in APPS:
            raise QmpError(f"Parameter 'app' does not accept value '{app}'")
        self.app = (app, params)

    def info_network(self) -> str:
        return "\n".join(f"{nic}: index={i},type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:{0x56 + i:02x}\n"
                         f" \\ net{i}: index=0,type=vhost-user,vhost-user to char0"
                         for i, nic in enumerate(self.nics))

    def info_mtree(self) -> str:
        return "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system"

    def query_cpus_fast(self) -> list[dict[str, Any]]:
        return []

    def qom_list(self, path: str) -> list[dict[str, Any]]:
        if path != "/machine":
            raise QmpError(f"Device '{path}' not found", "DeviceNotFound")
        return [{"name": "type", "type": "string"}]

    def qom_get(self, path: str, prop: str) -> Any:
        self.qom_list(path)
        if prop != "type":
            raise QmpError(f"Property 'fake-machine.{prop}' not found")
        return "fake-machine"

    def info_qom_tree(self, path: str | None) -> str:
        self.qom_list(path or "/machine")
        return "/machine (fake-machine)"

    def info_qtree(self) -> str:
        return "bus: main-system-bus\n  type System"
