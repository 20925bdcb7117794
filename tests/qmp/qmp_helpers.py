"""A raw QMP client (asyncio) and an in-process server with a FakeMachine."""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator

from emu.qmp import MonitorEndpoint, QmpServer

from .fakes import FakeMachine


class RawClient:
    """Speaks QMP byte by byte, so tests can send anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: str, *, sock: Any = None) -> RawClient:
        if sock is not None:
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        return cls(reader, writer)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("monitor closed the connection")
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    async def send(self, msg: Any) -> None:
        self.writer.write(msg if isinstance(msg, bytes) else json.dumps(msg).encode() + b"\n")
        await self.writer.drain()

    async def response(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next non-event message; events seen meanwhile go to .events."""
        while True:
            msg = await self.recv(timeout)
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    async def execute(self, name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": name, **extra}
        if arguments is not None:
            msg["arguments"] = arguments
        await self.send(msg)
        return await self.response()

    async def greeting_and_negotiate(self) -> dict[str, Any]:
        greeting = await self.recv()
        assert await self.execute("qmp_capabilities") == {"return": {}}
        return greeting

    async def event(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev["event"] == name:
                return self.events.pop(i)
        while True:
            msg = await self.recv(timeout)
            if msg.get("event") == name:
                return msg
            self.events.append(msg)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(path: str, *, machine_kw: dict[str, Any] | None = None,
                  **server_kw: Any) -> AsyncIterator[tuple[QmpServer, FakeMachine]]:
    server = QmpServer(**server_kw)
    machine = FakeMachine(server.emit, **(machine_kw or {}))
    server.attach(machine)
    try:
        await server.add_monitor(MonitorEndpoint("compat_monitor0", path=path, server=True, wait=False))
        yield server, machine
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def client(path: str, negotiate: bool = True) -> AsyncIterator[RawClient]:
    c = await RawClient.connect(path)
    try:
        if negotiate:
            await c.greeting_and_negotiate()
        yield c
    finally:
        await c.close()
