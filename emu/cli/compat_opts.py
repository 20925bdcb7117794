"""The options a VM manager passes to every QEMU (libvirt's boilerplate):
-msg, -uuid, -sandbox, -overcommit, -rtc, -boot, -nic, -add-fd, -audiodev.

Those that mean something to emu are recorded (-msg, -uuid, -add-fd);
the others are accepted with an ``info:`` note saying emu ignores them,
so that a manager's command line parses unchanged and its log says what
had no effect.
"""
from __future__ import annotations

from emu.cli.schemas import ADD_FD, AUDIODEV, BOOT, MSG, NIC, OVERCOMMIT, RTC, SANDBOX, UUID
from emu.cli.state import ParseState, option
from emu.keyval import OptionError, require

_UUID_HEX = "0123456789abcdefABCDEF"


@option("msg")
def msg(p: ParseState, arg: str) -> None:
    values = p.opts(arg, MSG)
    p.cfg.msg_timestamp = values.get("timestamp", p.cfg.msg_timestamp)
    p.cfg.msg_guest_name = values.get("guest-name", p.cfg.msg_guest_name)


@option("uuid")
def uuid(p: ParseState, arg: str) -> None:
    text = p.opts(arg, UUID)["uuid"]
    # QEMU's qemu_uuid_parse(): 8-4-4-4-12 hex digits
    parts = text.split("-")
    if [len(x) for x in parts] != [8, 4, 4, 4, 12] or any(c not in _UUID_HEX for c in "".join(parts)):
        raise OptionError("Fail to parse UUID string")
    p.cfg.uuid = text.lower()


@option("sandbox")
def sandbox(p: ParseState, arg: str) -> None:
    if p.opts(arg, SANDBOX).get("enable"):
        p.info("emu installs no seccomp filter: -sandbox has no effect")


@option("overcommit")
def overcommit(p: ParseState, arg: str) -> None:
    values = p.opts(arg, OVERCOMMIT)
    if values.get("mem-lock"):
        raise OptionError("mem-lock=on is not supported by emu: guest memory is not locked")


@option("rtc")
def rtc(p: ParseState, arg: str) -> None:
    p.opts(arg, RTC)        # the info note names the parameters


@option("boot")
def boot(p: ParseState, arg: str) -> None:
    p.opts(arg, BOOT)


@option("nic")
def nic(p: ParseState, arg: str) -> None:
    p.opts(arg, NIC)        # only "none": a NIC in emu is -netdev vhost-user + -device


@option("audiodev")
def audiodev(p: ParseState, arg: str) -> None:
    from emu.keyval import from_json
    values = p.opts(from_json(arg), AUDIODEV)
    require(values, "id")
    p.info("emu has no audio: -audiodev has no effect")


@option("add-fd")
def add_fd(p: ParseState, arg: str) -> None:
    """QEMU's checks and texts (softmmu/vl.c parse_add_fd).  Only looked
    at here (fcntl F_GETFD): the launcher takes the fd over."""
    values = p.opts(arg, ADD_FD)
    fd, set_id = values.get("fd", -1), values.get("set", -1)
    if fd < 0:
        raise OptionError("fd option is required and must be non-negative")
    if fd <= 2:
        raise OptionError("fd cannot be a standard I/O stream")
    import fcntl
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        flags = -1
    # an fd inherited across exec() has FD_CLOEXEC clear
    if flags == -1 or flags & fcntl.FD_CLOEXEC or any(fd == f for s in p.cfg.fdsets.values()
                                                       for f, _ in s):
        raise OptionError("fd is not valid or already in use")
    if set_id < 0:
        raise OptionError("set option is required and must be non-negative")
    p.cfg.fdsets.setdefault(set_id, []).append((fd, values.get("opaque")))

