"""Options of the devices and the guest: -netdev, -device, -guest."""
from __future__ import annotations

from emu.cli.char_opts import isa_serial
from emu.cli.schemas import (DEVICE_ALIASES, DEVICES, DRIVER_MUST_BE_OFF, FIELD_NAMES, ISA_SERIAL,
                             MUST_BE_OFF, NETDEVS, SOCKET_NETDEV_NOT_SUPPORTED,
                             VIRTIO_NET_FEATURES)
from emu.cli.state import HELP_WORDS, EarlyExit, ParseState, option, wants_help
from emu.cli.texts import device_help
from emu.config import Device, GuestConfig, Netdev, VhostPCINet, VirtioNetPCI
from emu.guest import registry
from emu.keyval import OptionError, from_json, parse_pairs, require, split_head


@option("netdev")
def netdev(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit("Available netdev backend types:\n" + "\n".join(f"  {k}" for k in NETDEVS))
    ntype, pairs = split_head(from_json(arg), "type")
    schema = NETDEVS.get(ntype)
    if schema is None:
        raise OptionError(f"Parameter 'type' does not accept value '{ntype}'")
    values = p.opts(pairs, schema, title=f"netdev {ntype}")
    require(values, "id")
    if p.cfg.netdev(values["id"]) is not None:
        raise OptionError(f"Duplicate ID '{values['id']}' for netdev")
    nd = Netdev(values["id"], type=ntype, origin=p.origin)
    if ntype == "vhost-user":
        require(values, "chardev")
        nd.chardev, nd.queues = values["chardev"], values.get("queues", 1)
        nd.vhost_pci = values.get("vhost-pci", "auto")
    elif ntype == "socket":
        bad = next((k for k in SOCKET_NETDEV_NOT_SUPPORTED if k in values), None)
        if bad is not None:
            raise OptionError(f"Parameter '{bad}' is not supported: emu's socket netdev is a "
                              "stream (fd=, listen=, connect=)")
        if sum(k in values for k in ("fd", "listen", "connect")) != 1:
            raise OptionError("exactly one of listen=, connect=, mcast= or udp= is required")
        nd.fd, nd.listen, nd.connect = values.get("fd"), values.get("listen"), values.get("connect")
        for key in ("listen", "connect"):
            if key in values:
                host_port(key, values[key])
    else:
        require(values, "hubid")
        if "netdev" in values:
            raise OptionError("Parameter 'netdev' is not supported: emu's hub ports connect NICs")
        nd.hubid = values["hubid"]
    p.cfg.netdevs.append(nd)


def host_port(key: str, text: str) -> None:
    """``[HOST]:PORT`` as QEMU's socket netdev parses it (its error text)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or (key == "connect"
                                                                      and not host):
        raise OptionError(f"host address '{text}' doesn't contain ':' separating host from port"
                          if not sep else f"Parameter '{key}' expects [HOST]:PORT")


@option("device")
def device(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit(device_help())
    driver, pairs = split_head(from_json(arg), "driver")
    driver = DEVICE_ALIASES.get(driver, driver)
    if driver == "isa-serial":
        if wants_help(pairs):
            raise EarlyExit(ISA_SERIAL.help(driver))
        isa_serial(p, p.opts(pairs, ISA_SERIAL, owner=driver))
        return
    if wants_help(pairs):
        schema = DEVICES.get(driver)
        if schema is not None:
            raise EarlyExit(schema[0].help(driver))
    dev = parse_device(driver, pairs, p)      # -global defaults: applied by the whole-line check
    if dev.id is not None and any(d.id == dev.id for d in p.cfg.devices):
        raise OptionError(f"Duplicate ID '{dev.id}' for device")
    p.cfg.devices.append(dev)


def parse_device(driver: str, pairs: list[tuple[str, str | None]], p: ParseState | None = None,
                 globals_: list | None = None) -> Device:
    """One device's configuration from its driver and ``key=value`` pairs
    (``-device``, and QMP ``device_add`` with the same checks and texts).
    ``globals_``: the ``-global`` defaults (:class:`emu.config.GlobalProperty`)."""
    driver = DEVICE_ALIASES.get(driver, driver)
    if driver not in DEVICES:
        raise OptionError(f"'{driver}' is not a valid device model name")
    schema = DEVICES[driver][0]
    given = {k for k, _ in pairs}
    defaults = [(g.prop, g.value) for g in globals_ or () if g.driver == driver
                and g.prop not in given]
    p = p if p is not None else ParseState()
    values = p.opts(defaults + list(pairs), schema, owner=driver)
    for name, why in {**MUST_BE_OFF, **DRIVER_MUST_BE_OFF.get(driver, {})}.items():
        if values.pop(name, False):
            raise OptionError(f"Property '{driver}.{name}' doesn't take value 'on': {why}")
    for param in schema.params:
        if param.ignored:
            values.pop(param.name, None)
    fields = {FIELD_NAMES.get(k, k): v for k, v in values.items()}
    if driver == "virtio-net-pci":
        features = {f: fields.pop(f) for f in VIRTIO_NET_FEATURES if f in fields}
        return VirtioNetPCI(**fields, features=features, origin=p.origin)
    require(values, "chardev")
    return VhostPCINet(**fields, origin=p.origin)


def qmp_device_parser(driver: str, pairs: list[tuple[str, str | None]], globals_=None) -> Device:
    """QMP device_add's view of :func:`parse_device` (no parse state: its
    warnings are dropped, the monitor answers only the error)."""
    return parse_device(driver, pairs, None, globals_)


@option("guest")
def guest(p: ParseState, arg: str) -> None:
    if arg in HELP_WORDS:
        raise EarlyExit(registry.overview())
    if p.cfg.guest is not None:
        raise OptionError("only one -guest may be given")
    params: dict[str, str] = {}
    want_help = False
    for key, value in parse_pairs(arg, "driver"):
        if value is None:
            if key in HELP_WORDS:       # -guest DRIVER[,app=APP],help
                want_help = True
                continue
            raise OptionError(f"Expected '=' after parameter '{key}'")
        if key in params:
            raise OptionError(f"Parameter '{key}' given twice")
        params[key] = value
    drv = registry.driver(params.pop("driver", ""))
    app = params.pop("app", None)
    if want_help:
        raise EarlyExit(drv.help(app))
    if app is None:
        raise OptionError("Parameter 'app' is missing")
    # typed and bounded here, where the value enters, not on the guest thread
    p.cfg.guest = GuestConfig(drv.name, app, drv.check(app, params).given, origin=p.origin)
