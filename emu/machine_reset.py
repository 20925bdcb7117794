"""A machine's reset, as QEMU's ``qemu_system_reset``, and what the guest
asks of the machine through the chipset (guest thread, machine lock held:
only scheduled here, carried out on the event loop)."""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

RESET_TIMEOUT = 10.0        # s a vhost-user back-end has to stop its rings at a reset
RESET_POLL = 0.002


async def system_reset(m, timeout: float | None = None) -> None:
    """The guest is halted (as QEMU pauses its vCPUs), every device and
    function goes back to power-on (BARs, command registers, virtio status
    and queues; a vhost-user back-end is told to stop its rings, and this
    returns once it has), the platform devices too; then the guest program
    boots again (firmware enumeration, drivers, its app).  RAM is kept."""
    if m.guest is not None and m.guest.alive:
        m.guest.request("halt")
        await m.guest_settled()
    with m.lock:
        m.system.reset()
    await resets_settled(m, RESET_TIMEOUT if timeout is None else timeout)
    if m.guest is not None and m.guest.alive:
        m.guest.request("boot")
        await m.guest_settled()


async def resets_settled(m, timeout: float) -> None:
    """Wait until every virtio function reads status 0 (a vhost-user
    back-end has stopped the rings), at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = [e for e in m.devices.values() if hasattr(e.function, "device")]
    while pending:
        with m.lock:
            pending = [e for e in pending if e.function.status != 0]
        if not pending:
            return
        if loop.time() >= deadline:
            log.warning("%s: reset of %s not complete after %s s", m.name,
                        ", ".join(e.id for e in pending), timeout)
            return
        await asyncio.sleep(RESET_POLL)


def guest_reset_request(m) -> None:
    """0xCF9 RST_CPU: reset on the loop, then RESET {guest: true} (QEMU's
    qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET))."""
    loop = m.loop
    if loop is None or loop.is_closed():
        return

    async def reset() -> None:
        await system_reset(m)
        m.emit("RESET", {"guest": True, "reason": "guest-reset"})
    loop.call_soon_threadsafe(lambda: loop.create_task(reset()))


def guest_power_off(m) -> None:
    """ACPI soft-off: the machine shuts down as after the guest program's power-off."""
    loop = m.loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(m.emit, "EMU_GUEST_POWEROFF", {"reason": "acpi"})
