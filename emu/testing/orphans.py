"""Harness processes that die with their harness.

A test run killed from outside (``timeout`` around pytest, a CI job
cancelled, SIGKILL) runs no ``finally``: without more, every emu VM,
testpmd and QEMU it started lives on, busy-polling, for good.  Each child
started here asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), in the child between fork and exec, after the
``start_new_session``/``process_group`` set-up ``subprocess`` does there:

* the request would be lost if the parent died before the child made it:
  the child then checks that its parent is still the one that forked it,
  and exits if not (the race ``setpriv --pdeathsig`` leaves open);
* the signal follows the *thread* that forked, not the process: a child
  forked by a thread that ends (a fixture's worker, a thread pool) would be
  killed with that thread, long before the harness ends.  Children are
  therefore always forked by a thread that lives as long as the process:
  the main thread, or else one spawner thread kept for the purpose;
* ``PR_SET_PDEATHSIG`` survives ``execve`` (of a non-setuid program), so it
  holds through wrappers such as ``taskset`` or ``setpriv``.

:func:`popen` is ``subprocess.Popen`` with all that; :func:`run` is
``subprocess.run``'s shape on top of it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import threading
from typing import Any, Callable, Sequence

PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the process that forked
    it dies (resolved before the fork: the child calls only prctl/getppid)."""
    parent = os.getpid()

    def preexec() -> None:
        if _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:          # the parent died before we asked
            os._exit(126)
    return preexec


_spawn_q: "queue.Queue[tuple]" = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawner_main() -> None:
    while True:
        args, kw, box, done = _spawn_q.get()
        try:
            box.append(subprocess.Popen(args, **kw))
        except BaseException as e:           # raised again in the caller's thread
            box.append(e)
        done.set()


def _forking_thread_lives_forever() -> bool:
    return threading.current_thread() is threading.main_thread()


def popen(args: Sequence[str], **kw: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **kw)`` whose child is SIGKILLed when this
    process dies, however it dies.  An own ``preexec_fn`` is run after ours."""
    theirs = kw.pop("preexec_fn", None)
    ours = die_with_parent()

    def preexec() -> None:
        ours()
        if theirs is not None:
            theirs()
    kw["preexec_fn"] = preexec
    if _forking_thread_lives_forever():
        return subprocess.Popen(args, **kw)
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_spawner_main, name="emu-spawner", daemon=True)
            _spawner.start()
    box: list = []
    done = threading.Event()
    _spawn_q.put((list(args), kw, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def run(args: Sequence[str], *, timeout: float | None = None, input: bytes | None = None,
        check: bool = False, capture_output: bool = False,
        **kw: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` through :func:`popen` (same arguments used here)."""
    if capture_output:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    with popen(args, **kw) as p:
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            p.kill()
            e.stdout, e.stderr = p.communicate()
            raise
        except BaseException:
            p.kill()
            raise
    done = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    if check:
        done.check_returncode()
    return done
