"""Launch emu (or QEMU) processes for tests, the way QEMU's ``QEMUMachine`` does.

A :class:`VMProcess` runs one VM from a QEMU-style argument list (the
binary is configurable, so the same list runs ``qemu-system-x86_64``).  Its
monitor is QEMUMachine's: a socketpair whose far end is passed as
``-chardev socket,id=NAME,fd=N -mon chardev=NAME,mode=control``, so there
is no socket file to wait for and the greeting is there as soon as the VM
is.  :attr:`VMProcess.monitor` is a connected ``qemu.qmp``
:class:`~qemu.qmp.legacy.QEMUMonitorProtocol`, with its own event loop so
that several VMs (and the test) do not share one.

Teardown is what a test runner must guarantee even when the test failed:
``quit`` over QMP, then SIGTERM, then SIGKILL to the whole process group,
with a timeout at each step; then a check that nothing is left: no process
in the VM's group, no socket file or pidfile the VM was told to create, no
``/dev/shm/emu-PID-*`` object.  Leftovers are removed and reported.

:class:`VMFactory` starts several VMs in one short run directory (unix
socket paths are limited to 108 bytes) and tears them down in reverse
order.  :func:`vm1_args` / :func:`vm2_args` build the README's two-VM
command lines.  Nothing here imports pytest: :mod:`emu.testing.pytest_plugin`
wraps it in fixtures.
"""
from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from emu.keyval import parse_pairs
from emu.testing import orphans

DEFAULT_BINARY = (sys.executable, "-m", "emu")
BINARY_ENV = "EMU_BINARY"

# QEMUMachine's default is 30 s for everything; the machine these tests run
# on is shared with busy-polling peers, so launch gets as long.
LAUNCH_TIMEOUT = 30.0
QMP_TIMEOUT = 30.0
QUIT_TIMEOUT = 15.0
TERM_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0

__all__ = ["DEFAULT_BINARY", "BINARY_ENV", "LaunchError", "VMProcess", "VMFactory", "Pair",
           "ExecuteError", "binary_from", "memory_args", "vm1_args", "vm2_args", "wait_for_path",
           "wait_until", "event_match", "monitor_client"]


class LaunchError(RuntimeError):
    """The VM exited or stayed silent before its monitor greeted us."""


def binary_from(value: str | Sequence[str] | None = None) -> list[str]:
    """The command that runs a VM: *value*, else ``$EMU_BINARY``, else
    ``python -m emu``.  A string is split the shell's way, so
    ``EMU_BINARY="python3 -m emu"`` and ``EMU_BINARY=qemu-system-x86_64``
    both work."""
    if value is None:
        value = os.environ.get(BINARY_ENV) or None
    if value is None:
        return list(DEFAULT_BINARY)
    return shlex.split(value) if isinstance(value, str) else list(value)


def event_match(event: Any, match: Any) -> bool:
    """QEMUMachine's rule: every key of *match* is in *event* with a value
    that matches recursively; ``None`` matches anything."""
    if match is None:
        return True
    if isinstance(event, dict) and isinstance(match, dict):
        return all(k in event and event_match(event[k], v) for k, v in match.items())
    return event == match


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = ""):
    """Poll *predicate* until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_for_path(path: str, vm: VMProcess | None = None, timeout: float = LAUNCH_TIMEOUT) -> None:
    """Wait for *path* to appear (a VM's listening socket); fail early if *vm* exits."""
    def there() -> bool:
        if vm is not None and not vm.is_running():
            raise LaunchError(f"{vm.name} exited ({vm.exitcode}) before creating {path}:\n"
                              f"{vm.stderr_text()}")
        return os.path.exists(path)
    wait_until(there, timeout, 0.01, path)


# -- which files a command line makes the VM create ------------------------------------

def _opts(value: str, implied: str) -> dict[str, str]:
    """QemuOpts ``implied,key=value,...`` (emu.keyval's reading: ``,,`` is a
    literal comma, a bare ``key`` is ``key=on``); enough to find paths: no
    validation, that is the VM's job."""
    return {k: "on" if v is None else v for k, v in parse_pairs(value, implied)}


_ON = ("on", "yes", "true", "y")


def created_paths(args: Sequence[str]) -> list[str]:
    """Socket files (listening chardevs and ``-qmp unix:``) and the pidfile
    that a VM with these arguments creates and must remove at exit."""
    out = []
    for opt, value in zip(args, args[1:]):
        opt = opt.lstrip("-")
        if opt == "chardev":
            kv = _opts(value, "backend")
            if kv.get("backend") == "socket" and "path" in kv and kv.get("server", "off") in _ON:
                out.append(kv["path"])
        elif opt in ("qmp", "qmp-pretty", "serial") and value.startswith("unix:"):
            kv = _opts(value[5:], "path")
            if kv.get("server", "off") in _ON:
                out.append(kv["path"])
        elif opt == "pidfile":
            out.append(value)
    return out


def _pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie (a daemon is not our
    child: init reaps it, possibly a moment after it exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies still count for killpg; look for a live member
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


# -- QMP clients ----------------------------------------------------------------------------

def _new_client(address: str | socket.socket, nickname: str | None = None) -> QEMUMonitorProtocol:
    """A legacy client on an event loop of its own.  Created inside that
    loop, it adopts it instead of the thread's (which it would otherwise
    create and leave set), so several clients and the test never share one."""
    loop = asyncio.new_event_loop()

    async def make() -> QEMUMonitorProtocol:
        return QEMUMonitorProtocol(address, nickname=nickname)
    try:
        return loop.run_until_complete(make())
    except BaseException:
        loop.close()
        raise


def _close_client(client: QEMUMonitorProtocol) -> None:
    # EOF at close means the VM has gone away: expected after quit
    # (QEMUMachine ignores it the same way).
    with contextlib.suppress(Exception):
        client.close()
    client._aloop.close()


@contextlib.contextmanager
def monitor_client(address: str | socket.socket) -> Iterator[QEMUMonitorProtocol]:
    """A ``qemu.qmp`` legacy client for another monitor of a VM (``-qmp
    unix:PATH``), not yet connected; closed, with its loop, on exit."""
    client = _new_client(address)
    try:
        yield client
    finally:
        _close_client(client)


# -- one VM -----------------------------------------------------------------------------

class VMProcess:
    """One VM process with a QMP monitor, QEMUMachine-style.

    ``args`` is what a harness would pass to ``qemu-system-x86_64``; the
    monitor options are appended.  With ``-daemonize`` the list must name a
    ``-pidfile`` (that is how the VM's pid is found, as libvirt does).
    """

    def __init__(self, args: Sequence[str], *, name: str, run_dir: str,
                 binary: Sequence[str] | None = None, monitor: bool = True,
                 env: dict[str, str] | None = None, pass_fds: Iterable[int] = (),
                 quit_timeout: float = QUIT_TIMEOUT, term_timeout: float = TERM_TIMEOUT):
        self.args = list(args)
        self.name = name
        self.run_dir = run_dir
        self.binary = binary_from(binary)
        self.env = env
        self.pass_fds = tuple(pass_fds)
        self.quit_timeout = quit_timeout
        self.term_timeout = term_timeout
        self.daemonize = "-daemonize" in self.args or "--daemonize" in self.args
        self.pidfile = self._arg("pidfile")
        if self.daemonize and not self.pidfile:
            raise ValueError("-daemonize needs -pidfile for the launcher to find the VM")
        self.monitor: QEMUMonitorProtocol | None = None
        self._want_monitor = monitor
        self.greeting: dict | None = None
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._argv: list[str] = []
        self._pid: int | None = None
        self._events: list[dict] = []
        self._out_path = os.path.join(run_dir, f"{name}.stdout")
        self._err_path = os.path.join(run_dir, f"{name}.stderr")
        self.exitcode: int | None = None
        self.parent_exitcode: int | None = None     # -daemonize: the launching parent's
        self.problems: list[str] = []
        self._torn_down = False

    def _arg(self, opt: str) -> str | None:
        for a, v in zip(self.args, self.args[1:]):
            if a.lstrip("-") == opt:
                return v
        return None

    @property
    def argv(self) -> list[str]:
        """The whole command line (binary, the caller's args, the monitor)."""
        return list(self._argv) if self._argv else self.binary + self.args

    def _command_line(self, monitor_fd: int | None) -> list[str]:
        extra = []
        if monitor_fd is not None:
            label = f"{self.name}-mon"
            extra = ["-chardev", f"socket,id={label},fd={monitor_fd}",
                     "-mon", f"chardev={label},mode=control"]
        return self.binary + self.args + extra

    @property
    def pid(self) -> int | None:
        """The VM's pid (with -daemonize, the daemon's, from the pidfile)."""
        return self._pid

    # -- life cycle ------------------------------------------------------------------------------
    def launch(self, timeout: float = LAUNCH_TIMEOUT) -> VMProcess:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already launched")
        peer = None
        if self._want_monitor:
            self._sock, peer = socket.socketpair()
        self._argv = self._command_line(peer.fileno() if peer else None)
        try:
            with open(self._out_path, "wb") as out, open(self._err_path, "wb") as err:
                self._proc = orphans.popen(       # dies with the harness
                    self._argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    pass_fds=self.pass_fds + ((peer.fileno(),) if peer else ()),
                    env=self.env, start_new_session=True)
        except BaseException:
            self._close_monitor()
            raise
        finally:
            if peer is not None:
                peer.close()
        self._pid = self._proc.pid
        try:
            if self.daemonize:
                self._await_daemon(timeout)
            if self._sock is not None:
                self._connect(timeout)
        except BaseException:
            self.shutdown(hard=True)
            raise
        return self

    def _await_daemon(self, timeout: float) -> None:
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LaunchError(f"{self.name}: -daemonize parent still running after {timeout} s")
        self.parent_exitcode = code
        if code != 0:
            raise LaunchError(f"{self.name}: exited with {code}:\n{self.stderr_text()}")
        with open(self.pidfile) as f:
            self._pid = int(f.read().split()[0])

    def _connect(self, timeout: float) -> None:
        # The greeting (or EOF, if the VM dies) makes the socket readable;
        # waiting here bounds the legacy client's connect, which has no timeout.
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            raise LaunchError(f"{self.name}: no QMP greeting within {timeout} s:\n"
                              f"{self.stderr_text()}")
        self.monitor = _new_client(self._sock, nickname=self.name)
        try:
            self.greeting = self.monitor.connect()
        except Exception as e:
            code = self._poll_exit(2.0)
            raise LaunchError(f"{self.name}: QMP negotiation failed ({e!r}); "
                              f"exit status {code}:\n{self.stderr_text()}") from None
        self.monitor.settimeout(QMP_TIMEOUT)

    def is_running(self) -> bool:
        if self.daemonize:
            return self._pid is not None and _pid_alive(self._pid)
        return self._proc is not None and self._proc.poll() is None

    def _poll_exit(self, timeout: float) -> int | None:
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = QUIT_TIMEOUT) -> int | None:
        """Wait for the VM to exit; its status (None for a daemon: not our
        child).  Raises :class:`subprocess.TimeoutExpired`."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not launched")
        if not self.daemonize:
            self.exitcode = self._proc.wait(timeout)
            return self.exitcode
        deadline = None if timeout is None else time.monotonic() + timeout
        while _pid_alive(self._pid):
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.02)
        return None

    def send_signal(self, sig: int) -> None:
        if self.is_running():
            os.kill(self._pid, sig)

    def shutdown(self, *, hard: bool = False) -> int | None:
        """Stop the VM whatever state it is in, then check what it left.

        ``quit`` (unless *hard*), SIGTERM, SIGKILL to the process group; each
        step that was needed beyond ``quit`` is recorded in :attr:`problems`
        (a VM that ignores ``quit`` is a bug), as is every leftover.
        Idempotent; returns the exit status.
        """
        if self._torn_down:
            return self.exitcode
        self._torn_down = True
        if self._proc is not None:
            self._stop(hard, self.quit_timeout, self.term_timeout)
        self._close_monitor()
        self._check_leftovers()
        return self.exitcode

    def _stop(self, hard: bool, quit_timeout: float, term_timeout: float) -> None:
        if self.is_running() and not hard and self.monitor is not None:
            with contextlib.suppress(Exception):    # a dead or wedged monitor: escalate
                self.monitor.settimeout(quit_timeout)
                self.monitor.cmd("quit")
            if self._poll_exit(quit_timeout) is None and self.is_running():
                self.problems.append(f"{self.name}: still running {quit_timeout} s after quit")
        if self.is_running() and not hard:
            self.send_signal(signal.SIGTERM)
            if self._poll_exit(term_timeout) is None and self.is_running():
                self.problems.append(f"{self.name}: ignored SIGTERM for {term_timeout} s")
        if self.is_running():
            self._killpg(self._pid)
        if not self.daemonize:
            self._poll_exit(KILL_TIMEOUT)
        # anything the VM forked that outlived it is an orphan
        for pgid in {self._proc.pid, self._pid}:
            if _group_alive(pgid):
                self.problems.append(f"{self.name}: processes left in group {pgid} (killed)")
                self._killpg(pgid)

    @staticmethod
    def _killpg(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not _group_alive(pgid), KILL_TIMEOUT, 0.02)

    def _close_monitor(self) -> None:
        if self.monitor is not None:
            _close_client(self.monitor)
            self.monitor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _check_leftovers(self) -> None:
        for path in created_paths(self.args):
            if os.path.lexists(path):
                self.problems.append(f"{self.name}: left {path} behind (removed)")
                with contextlib.suppress(OSError):
                    os.unlink(path)
        for pid in {self._pid, self._proc.pid if self._proc else None} - {None}:
            for path in glob.glob(f"/dev/shm/emu-{pid}-*"):
                self.problems.append(f"{self.name}: left shared memory {path} behind (removed)")
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # -- QMP, QEMUMachine's API ---------------------------------------------------------------------
    def _need_monitor(self) -> QEMUMonitorProtocol:
        if self.monitor is None:
            raise RuntimeError(f"{self.name} has no connected monitor")
        return self.monitor

    @staticmethod
    def _args(args_dict: dict[str, Any] | None, args: dict[str, Any]) -> dict[str, Any]:
        # as QEMUMachine: keyword names get dashes (command_line= is command-line),
        # an args_dict is sent as it is
        if args_dict is not None:
            if args:
                raise TypeError("give arguments as args_dict or as keywords, not both")
            return args_dict
        return {k.replace("_", "-"): v for k, v in args.items()}

    def qmp(self, cmd: str, args_dict: dict[str, Any] | None = None, **args: Any) -> dict:
        """The raw response: ``{"return": ...}`` or ``{"error": ...}``."""
        return self._need_monitor().cmd_raw(cmd, self._args(args_dict, args))

    def cmd(self, cmd: str, args_dict: dict[str, Any] | None = None, **args: Any) -> Any:
        """The command's return value; raises :class:`qemu.qmp.ExecuteError`."""
        return self._need_monitor().cmd(cmd, **self._args(args_dict, args))

    def hmp(self, command_line: str) -> str:
        return self.cmd("human-monitor-command", {"command-line": command_line})

    def _pull(self, timeout: float) -> dict | None:
        try:
            return self._need_monitor().pull_event(wait=float(timeout))
        except asyncio.TimeoutError:
            return None

    def get_qmp_events(self, wait: bool | float = False) -> list[dict]:
        """Every event the VM sent so far (with *wait*, at least one), cleared.

        A ``query-status`` first serves as a barrier: the events the VM sent
        before answering it are read by then, not left in the socket."""
        mon = self._need_monitor()
        if self.is_running():
            with contextlib.suppress(Exception):
                mon.cmd("query-status")
        events = self._events + mon.get_events(wait=False)
        self._events = []
        if not events and wait:
            ev = self._pull(QMP_TIMEOUT if wait is True else wait)
            events = [ev] if ev else []
        return events

    def clear_events(self) -> None:
        self.get_qmp_events()

    def event_wait(self, name: str, timeout: float = 10.0, match: dict | None = None) -> dict:
        """The first event *name* (already received or still to come) that
        matches *match* (QEMUMachine's rule, on the whole event:
        ``match={"data": {"device": "vp0"}}``); events passed over are kept
        for later waits."""
        return self.events_wait([(name, match)], timeout)

    def events_wait(self, events: Sequence[tuple[str, dict | None]], timeout: float = 10.0) -> dict:
        """The first event matching any of the ``(name, match)`` pairs."""
        def hit(ev: dict) -> bool:
            return any(ev["event"] == n and event_match(ev, m) for n, m in events)
        self._events += self._need_monitor().get_events(wait=False)
        for i, ev in enumerate(self._events):
            if hit(ev):
                return self._events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ev = self._pull(left) if left > 0 else None
            if ev is None:
                seen = [e["event"] for e in self._events]
                raise TimeoutError(f"{self.name}: no {[n for n, _ in events]} within "
                                   f"{timeout} s (saw {seen})")
            if hit(ev):
                return ev
            self._events.append(ev)

    # -- output -----------------------------------------------------------------------------
    def stderr_text(self) -> str:
        try:
            with open(self._err_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            with open(self._out_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<VMProcess {self.name} pid={self._pid} exit={self.exitcode}>"


# -- several VMs ----------------------------------------------------------------------------------

@dataclass
class Pair:
    """VM2 (vhost-pci-net, listening on ``sock``) and VM1 (virtio-net-pci
    whose vhost-user back-end is VM2)."""
    vm1: VMProcess
    vm2: VMProcess
    sock: str


class VMFactory:
    """Starts VMs in one run directory; :meth:`close` tears them all down
    (last started first) and returns what went wrong."""

    def __init__(self, binary: Sequence[str] | None = None, prefix: str = "emu-"):
        self.binary = binary_from(binary)
        # short: unix socket paths have a 108-byte limit
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.vms: list[VMProcess] = []

    def path(self, name: str) -> str:
        """A path in the run directory (for sockets, pidfiles, mem-path)."""
        return os.path.join(self.dir, name)

    def __call__(self, args: Sequence[str], *, name: str | None = None,
                 binary: Sequence[str] | None = None, launch: bool = True,
                 **kw: Any) -> VMProcess:
        name = name or f"vm{len(self.vms) + 1}"
        if any(vm.name == name for vm in self.vms):
            raise ValueError(f"a VM named {name} exists already")
        vm = VMProcess(args, name=name, run_dir=self.dir,
                       binary=self.binary if binary is None else binary, **kw)
        self.vms.append(vm)
        return vm.launch() if launch else vm

    def pair(self, *, backend: str = "shm", vm2_app: str = "echo",
             vm2_params: dict | None = None, vm1_app: str = "gen",
             vm1_params: dict | None = None, ram: str = "256M",
             vm2_extra: Sequence[str] = (), vm1_extra: Sequence[str] = (),
             connect_timeout: float = LAUNCH_TIMEOUT) -> Pair:
        """The README's two VMs (plus *vm2_extra* / *vm1_extra* options):
        VM2 first (it listens), then VM1; returns once VM2 reports
        VHOST_USER_CONNECTED (the event stays queued for the test)."""
        sock = self.path("vp.sock")
        mem_path = self.path("mem") if backend == "file" else None
        if mem_path:
            os.makedirs(mem_path, exist_ok=True)
        vm2 = self(vm2_args(sock, ram=ram, backend=backend, mem_path=mem_path, app=vm2_app,
                            params=vm2_params) + list(vm2_extra), name="vm2")
        wait_for_path(sock, vm2)
        vm1 = self(vm1_args(sock, ram=ram, backend=backend, mem_path=mem_path, app=vm1_app,
                            params=vm1_params) + list(vm1_extra), name="vm1")
        vm2._events.insert(0, vm2.event_wait("VHOST_USER_CONNECTED", connect_timeout))
        return Pair(vm1, vm2, sock)

    def close(self) -> list[str]:
        problems = []
        for vm in reversed(self.vms):
            vm.shutdown()
            problems += vm.problems
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems

    def __enter__(self) -> VMFactory:
        return self

    def __exit__(self, *exc) -> None:
        problems = self.close()
        if problems and exc[0] is None:
            raise AssertionError("; ".join(problems))


# -- the README's command lines -------------------------------------------------------------

def memory_args(backend: str = "shm", size: str = "256M", mem_path: str | None = None) -> list[str]:
    """``-m`` plus a RAM object and ``-machine memory-backend=``."""
    obj = f"memory-backend-{backend},id=mem,size={size}"
    if backend == "file":
        if not mem_path:
            raise ValueError("memory-backend-file needs mem_path")
        obj += f",mem-path={mem_path},share=on"
    return ["-m", size, "-object", obj, "-machine", "memory-backend=mem"]


def _guest(driver: str, app: str, params: dict | None) -> str:
    return ",".join([driver, f"app={app}"] + [f"{k}={v}" for k, v in (params or {}).items()])


def vm2_args(sock: str, *, ram: str = "256M", backend: str = "shm", mem_path: str | None = None,
             app: str = "echo", params: dict | None = None, name: str = "vm2",
             qmp: str | None = None) -> list[str]:
    """VM2: a vhost-pci-net device listening on *sock*, its guest running *app*."""
    return (["-name", name] + memory_args(backend, ram, mem_path)
            + ["-chardev", f"socket,id=c0,path={sock},server=on,wait=off",
               "-device", "vhost-pci-net,chardev=c0,id=vp0",
               "-guest", _guest("vhost-pci-net", app, params)]
            + (["-qmp", f"unix:{qmp},server=on,wait=off"] if qmp else []))


def vm1_args(sock: str, *, ram: str = "256M", backend: str = "shm", mem_path: str | None = None,
             app: str = "gen", params: dict | None = None, name: str = "vm1",
             mac: str = "52:54:00:00:00:01", qmp: str | None = None) -> list[str]:
    """VM1: virtio-net-pci whose vhost-user back-end is the server at *sock*."""
    if params is None:
        params = {"size": 64, "count": 1000000}
    return (["-name", name] + memory_args(backend, ram, mem_path)
            + ["-chardev", f"socket,id=c0,path={sock}",
               "-netdev", "vhost-user,id=n0,chardev=c0",
               "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
               "-guest", _guest("virtio-net", app, params)]
            + (["-qmp", f"unix:{qmp},server=on,wait=off"] if qmp else []))
