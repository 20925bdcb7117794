"""The monitors, set up and greeted before anything heavy is imported.

A harness measures start-up as "exec to QMP greeting"; Python's asyncio
alone takes longer to import than QEMU takes to greet.  So, once the
command line has been checked, the launcher makes each monitor's socket
here with plain ``socket`` calls, as QEMU's chardev layer does, and sends
the greeting:

* a connected socket (``-chardev socket,fd=N`` from QEMUMachine's
  socketpair; ``-qmp unix:PATH`` as a client) and stdio: at once;
* a listening one (``server=on``, by path or fd): a thread accepts and
  greets the clients that connect while the main thread imports asyncio
  and builds the machine.

:meth:`EarlyMonitors.handover` stops the thread; the asyncio server then
adopts the sockets (:meth:`emu.qmp.server.QmpServer.adopt`) and answers
what the clients sent meanwhile, in order.  Nothing here blocks on a
peer: sends are ``MSG_DONTWAIT`` (a greeting that does not fit is left
to the server), accepts are non-blocking.  Stdlib only.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import stat
import sys
import threading

from emu.qmp.endpoint import MonitorEndpoint, MonitorSetupError
from emu.qmp.greeting import encode, greeting
from emu.unixsock import listen_unix, remove_owned

MAX_EARLY_CLIENTS = 16      # per listening monitor, as the server's MAX_SESSIONS


#: SIGTERM, SIGINT, SIGHUP received before the event loop took them over
SIGNALS: list[int] = []

#: (phase, perf_counter) of this start-up; written as the emu_startup trace
#: event once the machine runs (-trace emu_startup)
PHASES: list[tuple[str, float]] = []


def phase(name: str) -> None:
    import time
    PHASES.append((name, time.perf_counter()))


def catch_signals() -> list[int]:
    """From the first instruction on, a termination signal is kept, not
    fatal: the launcher shuts the machine down with SHUTDOWN host-signal as
    soon as it can (QEMU installs its handlers first thing, too)."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: SIGNALS.append(signum))
    return SIGNALS


def monitor_endpoints(cfg) -> list[MonitorEndpoint]:
    """Where each ``-qmp`` / ``-mon`` monitor of a parsed command line
    (an :class:`emu.config.MachineConfig`) listens or connects."""
    out = []
    for mon in cfg.monitors:
        dev = cfg.chardev(mon.chardev)
        assert dev is not None, "parse_args checked the reference"
        out.append(MonitorEndpoint(label=dev.id, path=dev.path, fd=dev.fd, stdio=dev.backend == "stdio",
                                   server=dev.server, wait=dev.server and dev.wait,
                                   reconnect=float(dev.reconnect), pretty=mon.pretty))
    return out


class EarlyMonitor:
    """One monitor's sockets until the server adopts them."""

    def __init__(self, ep: MonitorEndpoint):
        self.ep = ep
        self.listener: socket.socket | None = None
        self.owned_path: tuple[str, int, int] | None = None
        self.clients: list[tuple[socket.socket, bool]] = []    # (socket, greeted)
        self.stdio_greeted = False

    def _greet(self, sock: socket.socket) -> bool:
        data = encode(greeting(), self.ep.pretty)
        try:
            return sock.send(data, socket.MSG_DONTWAIT) == len(data)
        except OSError:
            return False            # the server greets (or finds the peer gone)

    def open(self) -> None:
        ep = self.ep
        if ep.stdio:
            try:
                os.write(1, encode(greeting(), ep.pretty))
                self.stdio_greeted = True
            except OSError:
                pass
        elif ep.fd is not None:
            self._open_fd(ep.fd)
        elif ep.server:
            self._listen(ep.path)
        else:
            self._connect(ep.path)

    def _open_fd(self, fd: int) -> None:
        # the fd is ours from here on, also when it turns out to be unusable
        try:
            st = os.fstat(fd)
        except OSError as e:
            raise MonitorSetupError(f"Unable to use fd {fd}: {e.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            os.close(fd)
            raise MonitorSetupError(f"File descriptor '{fd}' is not a socket")
        sock = socket.socket(fileno=fd)
        try:
            os.set_inheritable(fd, False)
            if sock.type != socket.SOCK_STREAM:
                raise MonitorSetupError(f"File descriptor '{fd}' is not a stream socket")
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.setblocking(False)
                self.listener = sock
            else:
                self.clients.append((sock, self._greet(sock)))
        except BaseException:
            sock.close()
            raise

    def _listen(self, path: str | None) -> None:
        assert path is not None
        try:
            self.listener, self.owned_path = listen_unix(path, MAX_EARLY_CLIENTS)
        except OSError as e:
            raise MonitorSetupError(f"Failed to bind socket to {path}: {e.strerror}") from None

    def _connect(self, path: str | None) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)          # a unix connect completes or fails at once
        except OSError as e:
            sock.close()
            if not self.ep.reconnect:
                raise MonitorSetupError(f"Failed to connect to '{path}': {e.strerror}") from None
            return                      # the server retries every reconnect= seconds
        self.clients.append((sock, self._greet(sock)))

    def accept(self) -> None:
        """Accept and greet whoever is waiting (the greeter thread)."""
        assert self.listener is not None
        while len(self.clients) < MAX_EARLY_CLIENTS:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(True)
            self.clients.append((conn, self._greet(conn)))

    def close(self) -> None:
        for conn, _ in self.clients:
            conn.close()
        self.clients = []
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        remove_owned(self.owned_path)
        self.owned_path = None


class EarlyMonitors:
    """Every monitor of the command line, greeted or greeting."""

    def __init__(self, endpoints: list[MonitorEndpoint], origins: list[str]):
        self.monitors = [EarlyMonitor(ep) for ep in endpoints]
        self.origins = origins
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._switch = sys.getswitchinterval()

    def open(self) -> None:
        """Make the sockets and greet; raises MonitorSetupError with the
        option at fault in ``origin`` (everything made so far released)."""
        for mon, origin in zip(self.monitors, self.origins):
            self._open_one(mon, origin)
        self._start_greeter()

    def _open_one(self, mon: EarlyMonitor, origin: str) -> None:
        try:
            mon.open()
        except MonitorSetupError as e:
            e.origin = origin
            self.close()
            raise
        except OSError:
            self.close()
            raise

    def _start_greeter(self) -> None:
        listening = [m for m in self.monitors if m.listener is not None]
        if listening and self._thread is None:
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            # the main thread imports for a while: let the greeter in sooner
            sys.setswitchinterval(0.001)
            self._thread = threading.Thread(target=self._greeter, args=(listening,),
                                            name="qmp-greeter", daemon=True)
            self._thread.start()

    def reconcile(self, endpoints: list[MonitorEndpoint], origins: list[str]) -> None:
        """The monitors the parser found, in its order: those greeted
        before the parse are kept when the parser read them the same; the
        others are opened now (and greeted)."""
        self.handover()
        have = {m.ep: m for m in self.monitors}
        keep = []
        for ep in endpoints:
            mon = have.pop(ep, None)
            keep.append(mon if mon is not None else EarlyMonitor(ep))
        for stray in have.values():         # read differently by the parser: not ours
            stray.close()
        self.monitors, self.origins = keep, origins
        for mon, origin in zip(self.monitors, origins):
            if mon.listener is None and not mon.clients and not mon.stdio_greeted:
                self._open_one(mon, origin)
        self._start_greeter()

    def _greeter(self, listening: list[EarlyMonitor]) -> None:
        fds = {m.listener.fileno(): m for m in listening}
        while True:
            try:
                ready, _, _ = select.select([self._wake_r, *fds], [], [])
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.EBADF:
                    return
                raise
            if self._wake_r in ready:
                return
            for fd in ready:
                fds[fd].accept()

    def handover(self) -> list[EarlyMonitor]:
        """Stop greeting; the monitors, for the server to adopt."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
            sys.setswitchinterval(self._switch)
            # clients that connected since the greeter's last look
            for m in self.monitors:
                if m.listener is not None:
                    m.accept()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        return self.monitors

    def close(self) -> None:
        """Release everything (start-up failed before the server took over)."""
        self.handover()
        for m in self.monitors:
            m.close()

    @property
    def endpoints(self) -> list[MonitorEndpoint]:
        return [m.ep for m in self.monitors]


# -- before the command line is parsed --------------------------------------------------------

_HELP = ("help", "?")
_FLAGS = ("-h", "-help", "--help", "-version", "--version", "-daemonize", "--daemonize")
_TRUE, _FALSE = ("on", "yes", "true", "y"), ("off", "no", "false", "n")


def _pairs(text: str) -> dict[str, str] | None:
    """``k=v,k=v`` in the plainest form only (no ``,,``, no bare keys, no
    key twice); anything else: None, and the parser decides."""
    if ",," in text:
        return None
    out: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq or key in out:
            return None
        out[key] = value
    return out


def _bool(text: str | None, default: bool) -> bool | None:
    if text is None:
        return default
    return True if text in _TRUE else False if text in _FALSE else None


def prescan(argv: list[str]) -> list[MonitorEndpoint] | None:
    """The monitors of a command line, read before it is parsed, so that
    they greet before the parser is even imported (:mod:`emu.cli` costs
    tens of milliseconds).  Only the plain forms harnesses pass are
    recognised (``-qmp unix:PATH,server=on,wait=off``, ``-qmp stdio``,
    ``-chardev socket,id=ID,fd=N|path=P[,server=on,wait=off]`` with ``-mon
    chardev=ID,mode=control``); anything else -- a help form, -daemonize
    (the greeting belongs to the child), an option that may not parse as
    read here -- gives None and the monitors open after the parse.  The
    launcher compares what this found with what the parser made of the same
    line and falls back on any difference."""
    if any(a in _FLAGS or a in _HELP or a.endswith((",help", ",?")) or a.startswith(("help,", "?,"))
           for a in argv):
        return None
    chardevs: dict[str, dict[str, str]] = {}
    monitors: list[tuple[str, bool]] = []       # (chardev id, pretty)
    qmp: list[tuple[str, bool]] = []
    i = 0
    while i < len(argv):
        opt = argv[i].lstrip("-") if argv[i].startswith("-") else None
        value = argv[i + 1] if i + 1 < len(argv) else None
        if opt in ("qmp", "qmp-pretty"):
            if value is None:
                return None
            qmp.append((value, opt == "qmp-pretty"))
            monitors.append((f"compat_monitor{len(qmp) - 1}", opt == "qmp-pretty"))
        elif opt == "chardev" and value is not None and value.startswith("socket,"):
            kv = _pairs(value[len("socket,"):])
            if kv is None or "id" not in kv:
                return None
            chardevs[kv["id"]] = kv
        elif opt == "mon":
            kv = _pairs(value or "")
            if kv is None or kv.get("mode") != "control" or "chardev" not in kv \
                    or set(kv) - {"chardev", "mode", "pretty", "id"}:
                return None
            pretty = _bool(kv.get("pretty"), False)
            if pretty is None:
                return None
            monitors.append((kv["chardev"], pretty))
        i += 1
    out = []
    for n, (text, pretty) in enumerate(qmp):
        label = f"compat_monitor{n}"
        if text == "stdio":
            out.append(MonitorEndpoint(label, stdio=True, pretty=pretty))
            continue
        if not text.startswith("unix:"):
            return None
        head, _, rest = text[5:].partition(",")
        kv = _pairs(rest) if rest else {}
        if kv is None or set(kv) - {"server", "wait"} or not head:
            return None
        server, wait = _bool(kv.get("server"), False), _bool(kv.get("wait"), True)
        if server is None or wait is None or (not server and "wait" in kv):
            return None
        out.append(MonitorEndpoint(label, path=head, server=server, wait=server and wait,
                                   pretty=pretty))
    for cid, pretty in monitors:
        if cid.startswith("compat_monitor"):
            continue
        kv = chardevs.get(cid)
        if kv is None or set(kv) - {"id", "path", "fd", "server", "wait"} \
                or ("path" in kv) == ("fd" in kv):
            return None
        server, wait = _bool(kv.get("server"), False), _bool(kv.get("wait"), True)
        if server is None or wait is None or (not server and "wait" in kv):
            return None
        fd = None
        if "fd" in kv:
            if not (kv["fd"].isascii() and kv["fd"].isdigit()):
                return None
            fd = int(kv["fd"])
        out.append(MonitorEndpoint(cid, path=kv.get("path"), fd=fd, server=server,
                                   wait=server and wait, pretty=pretty))
    # the parser orders them as the options came: -qmp and -mon interleaved
    order = {cid: i for i, (cid, _) in enumerate(monitors)}
    return sorted(out, key=lambda ep: order[ep.label])


def greet_early(argv: list[str]) -> EarlyMonitors | None:
    """Open and greet the monitors :func:`prescan` finds; None if it finds
    none, cannot read the line, or a socket cannot be set up (the launcher
    then reports that error in the parser's words, with its option)."""
    endpoints = prescan(argv)
    if not endpoints:
        return None
    # from the greeting on, a harness may stop the VM at any moment
    catch_signals()
    early = EarlyMonitors(endpoints, [""] * len(endpoints))
    try:
        early.open()
    except (MonitorSetupError, OSError):
        return None          # the normal path will fail the same way, with the option named
    return early
