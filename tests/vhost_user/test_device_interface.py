"""The back-end <-> device dependency points one way: ``backend.py`` uses
``device.py``; a device reaches its back-end only through
``device.BackendPort``, which the Backend implements."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import emu.vhost_user.device as device_mod
from emu.vhost_user.backend import Backend
from emu.vhost_user.device import BackendDevice, BackendPort


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):        # TYPE_CHECKING blocks included
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
            out.update(f"{node.module}.{a.name}" for a in node.names if node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_device_module_imports_nothing_of_the_backend():
    imported = _imports(Path(device_mod.__file__))
    assert not [m for m in imported if "backend" in m.split(".")[-2:] or m.endswith(".Backend")], \
        imported


def test_the_backend_provides_the_port_devices_use():
    members = [n for n in vars(BackendPort) if not n.startswith("_")] + \
        list(BackendPort.__annotations__)
    assert set(members) == {"protocol_features", "vhost_pci_active", "push_features",
                            "backend_request"}

    class Quiet(BackendDevice):
        def features(self) -> int:
            return 0
    b = Backend(Quiet())
    for name in members:
        assert hasattr(b, name), name
    for name in ("push_features", "backend_request"):
        want = list(inspect.signature(getattr(BackendPort, name)).parameters)[1:]
        assert list(inspect.signature(getattr(b, name)).parameters) == want, name
    assert BackendDevice.__annotations__["backend"] == "BackendPort | None"
    b.close()
