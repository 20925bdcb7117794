"""Whole-line checks, once every option is read (QEMU creates chardevs,
netdevs, then devices): references, ids in use, slots, RAM, the guest."""
from __future__ import annotations

from emu.cli.schemas import VIRTIO_DEVICE_OF
from emu.cli.state import ParseState
from emu.config import (DEFAULT_RAM_SIZE, Chardev, Device, FilterDump, MemoryBackend, PCIAddress,
                        SerialPort, VhostPCINet, VirtioNetPCI)
from emu.guest import registry
from emu.keyval import OptionError, from_json, parse_pairs, split_head
from emu.machines import smp as smp_rules
from emu.machines import types as machine_types


def check(p: ParseState) -> None:
    """Raise :class:`OptionError` with ``p.origin`` set to the option at fault."""
    if p.machine_accel and p.accel_option:
        p.origin = ""
        raise OptionError("The -accel and \"-machine accel=\" options are incompatible")
    cfg = p.cfg
    users: dict[str, str] = {}

    def use_chardev(cid: str, origin: str, what: str) -> Chardev:
        p.origin = origin
        dev = cfg.chardev(cid)
        if dev is None:
            raise OptionError(f'chardev "{cid}" not found')
        if cid in users:
            raise OptionError(f"chardev '{cid}' is already in use by {users[cid]}")
        users[cid] = what
        return dev

    for mon in cfg.monitors:
        dev = use_chardev(mon.chardev, mon.origin, "a monitor")
        if dev.backend not in ("socket", "stdio"):
            raise OptionError(f'chardev "{mon.chardev}": emu monitors are sockets or stdio')
    _check_serials(p, use_chardev)
    stdio = [c for c in cfg.chardevs if c.backend == "stdio" and c.id in users]
    if stdio and cfg.daemonize:
        p.origin = stdio[0].origin
        raise OptionError("cannot use stdio with -daemonize")
    if len(stdio) > 1:
        p.origin = stdio[1].origin
        raise OptionError("cannot use stdio by multiple character devices")
    if cfg.qtest is not None:
        dev = use_chardev(cfg.qtest.chardev, cfg.qtest.origin, "qtest")
        if dev.backend != "socket":
            raise OptionError(f'chardev "{cfg.qtest.chardev}" is not a unix socket')
    for nd in cfg.netdevs:
        if nd.type != "vhost-user":
            continue
        dev = use_chardev(nd.chardev, nd.origin, f"netdev '{nd.id}'")
        if dev.backend != "socket":
            raise OptionError(f'chardev "{nd.chardev}" is not a unix socket')

    # a filter-dump captures a -netdev's NIC, or a vhost-pci-net device (whose
    # back-end is the device itself: docs/harness.md)
    vhost_pci_ids = {d.id for d in cfg.devices if isinstance(d, VhostPCINet) and d.id}
    for obj in cfg.objects:
        if isinstance(obj, FilterDump) and cfg.netdev(obj.netdev) is None \
                and obj.netdev not in vhost_pci_ids:
            p.origin = obj.origin
            raise OptionError("Parameter 'netdev' expects a network backend id "
                              "(a -netdev, or a vhost-pci-net device's id)")

    mtype = machine_types.find(cfg.machine_type)
    _check_smp(p, mtype)
    _apply_globals(p)
    if cfg.devices and mtype is not None and not mtype.has_pci:
        p.origin = cfg.devices[0].origin
        raise OptionError(f"No 'PCI' bus found for device '{cfg.devices[0].driver}'")
    nics: dict[str, str] = {}
    slots: dict[PCIAddress, Device] = {}
    for i, dev in enumerate(cfg.devices):
        p.origin = dev.origin
        if isinstance(dev, VirtioNetPCI):
            if dev.netdev is None:
                pass            # a NIC with no peer: QEMU runs it (frames go nowhere)
            elif cfg.netdev(dev.netdev) is None:
                raise OptionError(f"Property '{VIRTIO_DEVICE_OF[dev.driver]}.netdev' can't find "
                                  f"value '{dev.netdev}'")
            elif dev.netdev in nics:
                raise OptionError(f"Property '{VIRTIO_DEVICE_OF[dev.driver]}.netdev' can't take "
                                  f"value '{dev.netdev}', it's in use")
            else:
                nics[dev.netdev] = dev.driver
                nd = cfg.netdev(dev.netdev)
                if dev.disable_legacy == "on" and dev.disable_modern:
                    raise OptionError("device cannot work as neither modern nor legacy mode is "
                                      "enabled")
                if dev.mq is False and nd is not None and nd.queues > 1:
                    p.info(f"netdev '{nd.id}' has {nd.queues} queue pairs but mq=off: "
                              "the guest will use one")
        else:
            ch = use_chardev(dev.chardev, dev.origin, f"device '{dev.id or dev.driver}'")
            if ch.backend != "socket":
                raise OptionError(f'chardev "{dev.chardev}" is not a unix socket')
        if dev.addr is not None:
            other = slots.get(dev.addr)
            if other is not None:
                raise OptionError(f"PCI: slot {dev.addr.slot} function {dev.addr.function} not "
                                  f"available for {dev.driver}, in use by {other.driver},"
                                  f"id \"{other.id or ''}\"")
            slots[dev.addr] = dev

    for nd in cfg.netdevs:
        if nd.id not in nics:
            # (QEMU's net_check_clients)
            cfg.messages.append(f"warning: netdev {nd.id} has no peer")
    _check_ram(p)
    _check_guest(p)


def _check_serials(p: ParseState, use_chardev) -> None:
    cfg = p.cfg
    if p.nographic and not p.nodefaults and p.serial_index == 0 and not cfg.serials \
            and not any(c.backend == "stdio" for c in cfg.chardevs):
        # QEMU's -nographic default: serial0 on stdio (emu has no monitor to mux in)
        cfg.chardevs.append(Chardev("serial0", "stdio", origin="-nographic"))
        cfg.serials.append(SerialPort(0, "serial0", origin="-nographic"))
    mtype = machine_types.find(cfg.machine_type)
    if cfg.serials and mtype is not None and not mtype.has_pci:
        # QEMU's none machine has no ISA bus: -serial is left unused
        p.origin = cfg.serials[0].origin
        if cfg.serials[0].origin.startswith("-device"):
            raise OptionError("No 'ISA' bus found for device 'isa-serial'")
        p.info(f"machine '{cfg.machine_type}' has no serial port: -serial is not used")
        cfg.serials.clear()
        return
    for port in cfg.serials:
        use_chardev(port.chardev, port.origin, f"serial{port.index}")
    serial = {port.chardev for port in cfg.serials}
    for c in cfg.chardevs:
        if c.logfile is not None and c.id not in serial:
            p.origin = c.origin
            p.info(f"logfile= is kept for serial ports' chardevs only: '{c.id}' logs nothing")


def _check_smp(p: ParseState, mtype) -> None:
    """-smp against the machine type (QEMU's machine_parse_smp_config)."""
    if mtype is None:
        return
    name = mtype.aliases[0] if mtype.aliases else mtype.name
    p.origin = ""
    try:
        topo, warnings = smp_rules.parse(p.smp_values, name, getattr(mtype, "cpu_max", 1))
    except smp_rules.SmpError as e:
        raise OptionError(str(e)) from None
    p.cfg.messages += [f"warning: {w}" for w in warnings]
    p.cfg.smp, p.cfg.max_cpus = topo.cpus, topo.max_cpus
    if topo.max_cpus > 1:
        p.cfg.messages.append(f"{p.smp_origin}: info: emu runs one guest driver thread; "
                              f"the CPU count is what the firmware interfaces report")


def _apply_globals(p: ParseState) -> None:
    """Parse every -device again with the -global defaults of its driver
    (a -global may come after the -device it applies to)."""
    from emu.cli.device_opts import parse_device
    cfg = p.cfg
    drivers = {g.driver for g in cfg.globals}
    for i, dev in enumerate(cfg.devices):
        if dev.driver not in drivers or not dev.origin.startswith("-device "):
            continue
        p.origin = dev.origin
        for g in cfg.globals:
            if g.driver == dev.driver:
                try:
                    parse_device(g.driver, [(g.prop, g.value)])
                except OptionError as e:
                    p.origin = ""
                    raise OptionError(f"can't apply global {g.driver}.{g.prop}={g.value}: "
                                      f"{e}") from None
        driver, pairs = split_head(from_json(dev.origin[len("-device "):]), "driver")
        cfg.devices[i] = parse_device(driver, pairs, p, cfg.globals)


def _check_ram(p: ParseState) -> None:
    cfg = p.cfg
    if cfg.memory_backend is not None:
        p.origin = p.numa_origin or p.machine_origin
        obj = cfg.object(cfg.memory_backend)
        if obj is None:
            raise OptionError(f"Memory backend '{cfg.memory_backend}' not found")
        if not isinstance(obj, MemoryBackend):
            raise OptionError(f"'{cfg.memory_backend}' is not a memory backend")
        if p.numa_origin is not None:
            # (QEMU's numa_complete_configuration: the nodes make up -m, 128M by default)
            ram = cfg.ram_size if p.ram_size_given else DEFAULT_RAM_SIZE
            if obj.size != ram:
                p.origin = ""
                raise OptionError(f"total memory for NUMA nodes (0x{obj.size:x}) should equal "
                                  f"RAM size (0x{ram:x})")
        elif p.ram_size_given and obj.size != cfg.ram_size:
            raise OptionError("Machine memory size does not match the size of the memory backend")
        cfg.ram_size = obj.size
    vhost_user = {nd.id for nd in cfg.netdevs if nd.type == "vhost-user"}
    if not cfg.ram.share and any(isinstance(d, VirtioNetPCI) and d.netdev in vhost_user
                                 for d in cfg.devices):
        p.origin = cfg.ram.origin
        raise OptionError(f"vhost-user needs guest RAM shared with the back-end: "
                          f"set share=on on memory backend '{cfg.ram.id}'")


def _check_guest(p: ParseState) -> None:
    g = p.cfg.guest
    if g is None:
        return
    p.origin = g.origin
    if p.cfg.qtest_accel:
        raise OptionError("no guest program runs under the qtest accelerator: "
                          "the qtest client drives the devices")
    drv = registry.driver(g.driver)
    drv.check_devices(g.app, sum(d.driver == drv.device for d in p.cfg.devices))
