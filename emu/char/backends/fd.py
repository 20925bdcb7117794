"""``file``, ``stdio`` and ``pty`` chardevs: output by a writer thread with
blocking writes (stdout shares its open file description with the terminal
and stderr), input by a reader thread."""
from __future__ import annotations

import asyncio
import errno
import os
import select
import sys
import threading
from typing import Callable

from emu.char.backends.base import READ_CHUNK, Backend, ChardevError, log
from emu.config import Chardev
from emu.fdset import FdSets, open_path



# -- files, stdio, ptys (threads) -------------------------------------------------------------

class FdBackend(Backend):
    """Output by a writer thread (blocking writes), input by a reader thread."""

    def __init__(self, cfg: Chardev, fdsets: FdSets | None = None,
                 opener: Callable[[str, int], int] | None = None):
        super().__init__(cfg)
        self.fdsets = fdsets
        #: (path, flags) -> fd for files this backend creates (the launcher's,
        #: which removes them again if start-up fails)
        self.opener = opener or (lambda path, flags: open_path(path, flags, 0o666, fdsets))
        self.out_fd = -1
        self.in_fd = -1
        self._extra_fds: list[int] = []
        self._wake = threading.Condition(self._lock)
        self._room = threading.Event()
        self._room.set()
        self._threads: list[threading.Thread] = []
        self.broken = False

    def _open_fds(self) -> None:
        raise NotImplementedError

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        await super().open(loop)
        self._open_fds()
        if self.out_fd >= 0:
            self._spawn(self._writer, "out")
        if self.in_fd >= 0:
            self._spawn(self._reader, "in")

    def _spawn(self, target: Callable[[], None], what: str) -> None:
        t = threading.Thread(target=target, name=f"chardev-{self.id}-{what}", daemon=True)
        t.start()
        self._threads.append(t)

    def _wake_writer(self) -> None:
        with self._wake:
            self._wake.notify()

    def _writer(self) -> None:
        while True:
            with self._wake:
                while not self._out and not self.closed:
                    self._wake.wait()
                if not self._out and self.closed:
                    return
                chunk = bytes(self._out[:READ_CHUNK * 4])
            try:
                n = os.write(self.out_fd, chunk)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                # a closed pipe, a full disk, a hung-up pty: the console goes quiet
                log.warning("chardev %s: write failed: %s; its output is dropped", self.id, e)
                self.broken = True
                with self._lock:
                    self.dropped += len(self._out)
                    self._out.clear()
                    self.closed = True
                return
            self._consumed(n)

    def write(self, data: bytes) -> int:
        if self.broken:
            self.dropped += len(data)
            return len(data)
        return super().write(data)

    def rx_room_changed(self) -> None:
        self._room.set()

    def _reader(self) -> None:
        fd = self.in_fd
        while not self.closed:
            room = self.frontend.rx_room() if self.frontend is not None else READ_CHUNK
            if room <= 0:
                self._room.clear()
                if self.frontend is not None and self.frontend.rx_room() <= 0:
                    self._room.wait(0.2)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(fd, min(room, READ_CHUNK))
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                return                      # EIO: a pty nobody holds open
            if not data:
                return                      # end of input (stdin closed)
            if self.frontend is not None:
                self.frontend.receive(data)

    async def close(self) -> None:
        with self._wake:
            self.closed = True
            self._wake.notify_all()
        self._room.set()
        for t in self._threads:
            # a writer blocked on a peer that never reads is left behind (daemon)
            await asyncio.get_running_loop().run_in_executor(None, t.join, 1.0)
        for fd in {self.out_fd, self.in_fd, *self._extra_fds} - {-1}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.out_fd = self.in_fd = -1
        self._extra_fds = []


class FileBackend(FdBackend):
    kind = "file"

    def _open_fds(self) -> None:
        c = self.cfg
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if c.append else os.O_TRUNC)
        try:
            self.out_fd = self.opener(c.path, flags)
        except OSError as e:
            raise ChardevError(f"Could not open '{c.path}': {e.strerror}") from None


class StdioBackend(FdBackend):
    kind = "stdio"

    def _open_fds(self) -> None:
        # duplicates: closing the chardev leaves the process's stdio alone
        self.out_fd = os.dup(1)
        self.in_fd = os.dup(0)
        for fd in (self.out_fd, self.in_fd):
            os.set_inheritable(fd, False)


class PtyBackend(FdBackend):
    kind = "pty"

    def __init__(self, cfg: Chardev, fdsets: FdSets | None = None, opener=None):
        super().__init__(cfg, fdsets, opener)
        self.pty_path = ""

    def _open_fds(self) -> None:
        import tty
        master, slave = os.openpty()
        for fd in (master, slave):
            os.set_inheritable(fd, False)
        tty.setraw(slave)           # bytes pass unchanged, as QEMU's raw pty
        self.pty_path = os.ttyname(slave)
        self.out_fd = master
        self.in_fd = os.dup(master)
        os.set_inheritable(self.in_fd, False)
        # our own hold on the slave: the master neither fails (EIO) nor
        # blocks for good before a terminal program opens it
        self._extra_fds = [slave]
        print(f"char device redirected to {self.pty_path} (label {self.id})", file=sys.stderr)

    def filename(self) -> str:
        return f"pty:{self.pty_path}"
