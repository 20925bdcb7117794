"""pytest fixtures that run emu VMs as processes, the way harnesses run QEMU.

Registered with the ``pytest11`` entry point ``emu``; without it, load with
``-p emu.testing.pytest_plugin``.  See docs/harness.md, "Testing with the
pytest plugin".

Fixtures:

* ``emu_binary`` (session): the command that runs a VM, from
  ``--emu-binary``, else ``$EMU_BINARY``, else ``python -m emu``.  Set it to
  ``qemu-system-x86_64`` and the same tests run QEMU.
* ``emu_vm_factory``: ``factory(args, name=None, binary=None, monitor=True,
  env=None, pass_fds=())`` starts a VM from a QEMU-style argument list and
  returns a connected :class:`~emu.testing.launch.VMProcess`;
  ``factory.pair(...)`` starts the README's VM2 + VM1; ``factory.path(name)``
  is a short path for sockets.  Every VM is torn down after the test.
* ``emu_module_vm_factory``: the same, shared by a module's tests.
* ``emu_vm``: one VM, arguments from ``@pytest.mark.emu_args(...)``
  (default: a machine without devices).
* ``emu_pair``: :class:`~emu.testing.launch.Pair` from
  ``factory.pair(**kwargs of @pytest.mark.emu_pair(...))``.

Teardown quits each VM over QMP, then escalates to SIGTERM and SIGKILL of
its process group; a VM that needed escalation, a surviving process, a
socket file or pidfile the VM should have removed, or a ``/dev/shm/emu-PID-*``
object fails the test at teardown (after being cleaned up).  When a test
fails, each of its VMs' stderr is added to the report.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from emu.testing.launch import BINARY_ENV, Pair, VMFactory, VMProcess, binary_from

DEFAULT_VM_ARGS = ("-machine", "none", "-display", "none", "-nodefaults")
_TAIL_LINES = 60


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("emu", "emu VM processes")
    group.addoption("--emu-binary", default=None, metavar="CMD",
                    help=f"command that runs a VM (default ${BINARY_ENV}, else "
                         "'python -m emu'); e.g. qemu-system-x86_64")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emu_args(*args): arguments of the emu_vm fixture's VM")
    config.addinivalue_line("markers", "emu_pair(**kwargs): VMFactory.pair() arguments of "
                                       "the emu_pair fixture")


@pytest.fixture(scope="session")
def emu_binary(pytestconfig: pytest.Config) -> list[str]:
    return binary_from(pytestconfig.getoption("--emu-binary"))


def _factory(binary: list[str]) -> Iterator[VMFactory]:
    factory = VMFactory(binary)
    try:
        yield factory
    finally:
        problems = factory.close()
    if problems:
        pytest.fail("emu teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def emu_vm_factory(emu_binary: list[str]) -> Iterator[VMFactory]:
    yield from _factory(emu_binary)


@pytest.fixture(scope="module")
def emu_module_vm_factory(emu_binary: list[str]) -> Iterator[VMFactory]:
    yield from _factory(emu_binary)


@pytest.fixture
def emu_vm(request: pytest.FixtureRequest, emu_vm_factory: VMFactory) -> VMProcess:
    marker = request.node.get_closest_marker("emu_args")
    args = list(marker.args) if marker else list(DEFAULT_VM_ARGS)
    return emu_vm_factory(args)


@pytest.fixture
def emu_pair(request: pytest.FixtureRequest, emu_vm_factory: VMFactory) -> Pair:
    marker = request.node.get_closest_marker("emu_pair")
    return emu_vm_factory.pair(**(marker.kwargs if marker else {}))


def _vms_of(item: pytest.Item) -> list[VMProcess]:
    vms: list[VMProcess] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, VMFactory):
            vms += value.vms
        elif isinstance(value, Pair):
            vms += [value.vm1, value.vm2]
        elif isinstance(value, VMProcess):
            vms.append(value)
    return list(dict.fromkeys(vms))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or report.when == "teardown":
        return
    for vm in _vms_of(item):
        lines = vm.stderr_text().splitlines()[-_TAIL_LINES:]
        status = "running" if vm.is_running() else f"exit status {vm.exitcode}"
        report.sections.append((f"emu {vm.name} (pid {vm.pid}, {status}) stderr",
                                "\n".join(lines) or "(empty)"))
