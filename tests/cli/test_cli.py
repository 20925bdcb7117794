"""The command line: every option, QEMU-style errors, whole-line checks."""
from __future__ import annotations

import pytest

from emu import cli
from emu.cli import CommandLineError, EarlyExit, parse_args
from emu.config import FilterDump, MemoryBackend, PCIAddress, SerialPort, VhostPCINet, VirtioNetPCI
from emu.launcher import monitor_endpoints

VU = ["-chardev", "socket,id=c0,path=/tmp/vu.sock", "-netdev", "vhost-user,id=n0,chardev=c0"]


def parse(line: str | list[str]):
    return parse_args(line.split() if isinstance(line, str) else line)


def error(line: str | list[str]) -> str:
    with pytest.raises(CommandLineError) as e:
        parse(line)
    return str(e.value)


# -- accepted command lines ------------------------------------------------------

def test_empty_command_line_is_a_default_machine():
    cfg = parse([])
    assert cfg.machine_type == "pc"                 # QEMU 7.2's default x86 machine
    assert cfg.ram_size == 128 << 20
    assert cfg.ram == MemoryBackend("pc.ram", "memory-backend-shm", 128 << 20, share=True)
    assert (cfg.devices, cfg.monitors, cfg.guest, cfg.start_paused) == ([], [], None, False)


def test_a_qemu_vhost_user_command_line():
    cfg = parse("-name vm1 -machine q35,accel=tcg -m 256M "
                "-object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem "
                "-chardev socket,id=char0,path=/tmp/vhost-user.sock,server=on,wait=off "
                "-netdev vhost-user,id=net0,chardev=char0,queues=2,vhost-pci=seed "
                "-device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,mq=on,vectors=0,romfile=,"
                "mrg_rxbuf=off,event_idx=off,indirect_desc=off,host_mtu=9000,rx_queue_size=1024,"
                "csum=off,id=nic0,addr=05.0,packed=on "
                "-S -display none -nodefaults -no-user-config -nographic -serial none -vga none")
    assert cfg.name == "vm1" and cfg.start_paused
    assert cfg.ram == MemoryBackend("mem", "memory-backend-memfd", 256 << 20, share=True)
    assert cfg.ram.backend == "memfd"
    ch = cfg.chardev("char0")
    assert (ch.backend, ch.path, ch.server, ch.wait, ch.fd) == ("socket", "/tmp/vhost-user.sock", True, False, None)
    nd = cfg.netdev("net0")
    assert (nd.type, nd.chardev, nd.queues, nd.vhost_pci) == ("vhost-user", "char0", 2, "seed")
    assert cfg.devices == [VirtioNetPCI(id="nic0", netdev="net0", mac="52:54:00:00:00:01",
                                        addr=PCIAddress(5, 0), vectors=0, mrg_rxbuf=False, mq=True,
                                        event_idx=False, indirect_desc=False, host_mtu=9000,
                                        rx_queue_size=1024, packed=True,
                                        features={"csum": False})]
    assert cfg.accel == ["tcg"]
    assert any("'accel'" in m and "info:" in m for m in cfg.messages)


def test_qemu_qos_test_socket_and_hubport_command_lines():
    """What QEMU's qos-test gives the binary (REQUIREMENTS §1.4), and the
    other two socket forms and the device's interface properties."""
    cfg = parse("-M pc -device virtio-net-pci,netdev=hs0,addr=04.0 -netdev socket,fd=4,id=hs0")
    nd = cfg.netdev("hs0")
    assert (nd.type, nd.fd, nd.listen, nd.connect, nd.chardev) == ("socket", 4, None, None, "")
    assert cfg.devices[0].disable_legacy == "auto" and not cfg.devices[0].disable_modern
    cfg = parse("-M pc -device virtio-net-pci,netdev=hs0,addr=04.0,disable-legacy=on "
                "-netdev hubport,hubid=0,id=hs0")
    nd = cfg.netdev("hs0")
    assert (nd.type, nd.hubid) == ("hubport", 0)
    assert cfg.devices[0].disable_legacy == "on"
    cfg = parse("-netdev socket,id=a,listen=127.0.0.1:5555 -netdev socket,id=b,connect=localhost:6"
                " -device virtio-net-pci,netdev=a,disable-modern=on -device virtio-net-pci,netdev=b"
                " -m 64M -object memory-backend-memfd,id=mem,size=64M,share=off"
                " -machine memory-backend=mem")
    assert (cfg.netdev("a").listen, cfg.netdev("b").connect) == ("127.0.0.1:5555", "localhost:6")
    assert cfg.devices[0].disable_modern                 # private RAM is fine: no vhost-user


def test_the_projects_own_qemu_command_line_is_accepted():
    # tests/peers/linux_guest.py's qemu_cmd(), binary path swapped
    argv = ["-machine", "q35,memory-backend=mem", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "256M",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
            "-chardev", "socket,id=c0,path=/tmp/vu.sock", "-netdev", "vhost-user,id=n0,chardev=c0,queues=1",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=,vectors=0,packed=off",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", "/boot/vmlinuz", "-initrd", "/tmp/initrd.cpio.gz", "-append", "console=ttyS0 panic=-1"]
    cfg = parse(argv)
    assert cfg.ram.id == "mem" and cfg.ram.share and cfg.no_reboot
    assert cfg.devices[0].vectors == 0 and cfg.chardev("c0").server is False
    assert not cfg.devices[0].packed
    assert all(": info: " in m for m in cfg.messages)


def test_vhost_pci_net_device_and_guest():
    cfg = parse("-chardev socket,id=vp0,path=/tmp/vp0.sock,server=on,wait=off "
                "-chardev socket,id=vp1,path=/tmp/vp1.sock,reconnect=1 "
                "-device vhost-pci-net,chardev=vp0,id=vpnet0,window=1G,queues=2,ack-timeout=250,vhost-pci=off "
                "-device vhost-pci-net,chardev=vp1,mac=52-54-00-AA-BB-CC,addr=0x1f.7 "
                "-guest vhost-pci-net,app=forward,burst=32,mode=interrupt")
    d0, d1 = cfg.devices
    assert d0 == VhostPCINet(chardev="vp0", id="vpnet0", window=1 << 30, queues=2, ack_timeout_ms=250,
                             vhost_pci="off")
    assert (d1.mac, d1.addr, d1.window) == ("52:54:00:aa:bb:cc", PCIAddress(0x1F, 7), 4 << 30)
    assert cfg.chardev("vp1").reconnect == 1
    assert (cfg.guest.driver, cfg.guest.app, cfg.guest.params) == (
        "vhost-pci-net", "forward", {"burst": 32, "mode": "interrupt"})


def test_implied_and_explicit_keys_and_comma_escaping():
    cfg = parse(["-chardev", "backend=socket,id=c0,path=/tmp/a,,b", "-netdev", "type=vhost-user,id=n0,chardev=c0",
                 "-device", "driver=virtio-net,netdev=n0", "-name", "guest=a,,b,debug-threads=on",
                 "-object", "qom-type=memory-backend-file,id=m,size=1M,mem-path=/dev/shm/x,,y"])
    assert cfg.chardev("c0").path == "/tmp/a,b"
    assert cfg.devices[0].driver == "virtio-net-pci"      # the alias resolves
    assert cfg.name == "a,b"
    assert cfg.object("m").mem_path == "/dev/shm/x,y"
    assert cfg.object("m").share is False                  # a file backend is private by default


def test_memory_size_forms():
    assert parse("-m 256").ram_size == 256 << 20            # -m's unit is M
    assert parse("-m size=1G").ram_size == 1 << 30
    assert parse("-m 512k").ram_size == 512 << 10
    # without -m, the backend gives the size
    cfg = parse("-object memory-backend-shm,id=r,size=64M -machine memory-backend=r")
    assert cfg.ram_size == 64 << 20 and cfg.ram.backend == "shm"


def test_dpdk_style_numa_memdev_and_qemu_style_mem_options():
    cfg = parse(VU + ["-m", "1024", "-object", "memory-backend-file,id=mem,size=1024M,mem-path=/dev/hugepages,share=on",
                      "-numa", "node,memdev=mem", "-mem-prealloc", "-device", "virtio-net-pci,netdev=n0"])
    assert cfg.ram.id == "mem" and cfg.ram.mem_path == "/dev/hugepages" and cfg.ram_size == 1 << 30
    cfg = parse("-m 64M -mem-path /dev/hugepages -mem-prealloc")
    assert cfg.ram == MemoryBackend("pc.ram", "memory-backend-file", 64 << 20, share=False, prealloc=True,
                                    mem_path="/dev/hugepages")
    assert parse("-mem-prealloc").ram.prealloc is True


def test_serial_ports_and_their_chardevs():
    # this project's own QEMU command lines pass -serial stdio
    cfg = parse("-serial stdio")
    assert cfg.serials == [SerialPort(0, "serial0")] and cfg.messages == []
    assert cfg.chardev("serial0").backend == "stdio"
    # QEMUMachine.set_console(console_index=1)
    cfg = parse("-serial null -chardev socket,id=console,path=/tmp/c.sock,server=on,wait=off "
                "-serial chardev:console")
    assert cfg.serials == [SerialPort(0, "serial0"), SerialPort(1, "console")]
    assert cfg.chardev("serial0").backend == "null"
    c = cfg.chardev("console")
    assert (c.backend, c.path, c.server, c.wait) == ("socket", "/tmp/c.sock", True, False)
    cfg = parse("-serial none -serial file:/tmp/console.txt -serial unix:/tmp/s.sock,server=on,wait=off "
                "-serial pty")
    assert [(s.index, s.chardev) for s in cfg.serials] == [(1, "serial1"), (2, "serial2"), (3, "serial3")]
    assert (cfg.chardev("serial1").backend, cfg.chardev("serial1").path) == ("file", "/tmp/console.txt")
    assert cfg.chardev("serial2").server and cfg.chardev("serial3").backend == "pty"
    # libvirt's form
    cfg = parse(["-chardev", "pty,id=charserial0", "-device",
                 '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}'])
    assert cfg.serials == [SerialPort(0, "charserial0", "serial0")]
    cfg = parse("-chardev file,id=f,path=/tmp/console.log,append=on -device isa-serial,chardev=f")
    assert cfg.serials == [SerialPort(0, "f")] and cfg.chardev("f").append
    # -nographic: serial0 on stdio unless -nodefaults
    assert parse("-nographic").serials == [SerialPort(0, "serial0")]
    assert parse("-nographic -nodefaults").serials == []
    assert parse("-nographic -serial none").serials == []


def test_memory_backends_and_filter_dump():
    cfg = parse(VU + ["-object", "memory-backend-file,id=f,size=2M,mem-path=/dev/hugepages,share=on,prealloc=on",
                      "-object", "filter-dump,id=d0,netdev=n0,file=/tmp/n0.pcap,maxlen=128,queue=rx"])
    assert cfg.object("f") == MemoryBackend("f", "memory-backend-file", 2 << 20, True, True, "/dev/hugepages")
    assert cfg.object("d0") == FilterDump("d0", "n0", "/tmp/n0.pcap", 128, "rx")


def test_qmp_and_mon_monitors():
    cfg = parse(["-qmp", "unix:/tmp/q.sock,server=on,wait=off", "-qmp", "stdio",
                 "-qmp-pretty", "unix:/tmp/c.sock",
                 "-chardev", "socket,id=mon,fd=7", "-mon", "chardev=mon,mode=control,pretty=on"])
    eps = monitor_endpoints(cfg)
    assert [(e.label, e.path, e.fd, e.stdio, e.server, e.wait, e.pretty) for e in eps] == [
        ("compat_monitor0", "/tmp/q.sock", None, False, True, False, False),
        ("compat_monitor1", None, None, True, False, False, False),
        ("compat_monitor2", "/tmp/c.sock", None, False, False, False, True),
        ("mon", None, 7, False, False, False, True),
    ]


def test_server_waits_by_default_and_short_forms_warn():
    cfg = parse(["-qmp", "unix:/tmp/q.sock,server"])
    assert monitor_endpoints(cfg)[0].wait is True
    cfg = parse(["-qmp", "unix:/tmp/q.sock,server,nowait"])
    assert monitor_endpoints(cfg)[0].wait is False
    assert cfg.messages == [
        "-qmp unix:/tmp/q.sock,server,nowait: warning: short-form boolean option 'server' deprecated\n"
        "Please use server=on instead",
        "-qmp unix:/tmp/q.sock,server,nowait: warning: short-form boolean option 'nowait' deprecated\n"
        "Please use wait=off instead"]


def test_flags_logging_and_trace():
    cfg = parse("-S -daemonize -pidfile /tmp/emu.pid -no-shutdown -no-reboot -D /tmp/emu.log "
                "-d guest_errors,vhost_user -trace vhost_user_wire,file=/tmp/wire.jsonl -trace enable=monitor_* "
                "-smp 2 -accel kvm -accel tcg -cpu host -kernel /boot/vmlinuz -append quiet "
                "--monitor none -parallel none")
    assert (cfg.start_paused, cfg.daemonize, cfg.pidfile, cfg.no_shutdown, cfg.no_reboot) == (
        True, True, "/tmp/emu.pid", True, True)
    assert (cfg.log_file, cfg.log_items) == ("/tmp/emu.log", ["guest_errors", "vhost_user"])
    assert (cfg.trace.events, cfg.trace.file) == (
        ["vhost_user_wire", "monitor_qmp_respond", "monitor_protocol_event_emit"], "/tmp/wire.jsonl")
    assert cfg.smp == 2 and cfg.accel == ["kvm", "tcg"]
    assert sum("info:" in m for m in cfg.messages) >= 4   # smp, accel x2, cpu, kernel, append


def test_unknown_trace_event_is_a_warning_as_in_qemu():
    cfg = parse("-trace foo")
    assert cfg.messages == ["-trace foo: warning: trace event 'foo' does not exist"]


def test_nic_without_netdev_runs_and_a_netdev_without_nic_warns():
    # (QEMU 7.2's net_check_clients runs before -device NICs exist: only
    # netdevs without a NIC are reported)
    cfg = parse("-device virtio-net-pci,id=lonely")
    assert cfg.messages == [] and cfg.devices[0].netdev is None
    cfg = parse("-chardev socket,id=c,path=/tmp/x.sock -netdev vhost-user,id=hs0,chardev=c")
    assert cfg.messages == ["warning: netdev hs0 has no peer"]


# -- errors: exact text, as `emu: <text>` ---------------------------------------------

ERRORS = [
    ("-bogus", "-bogus: invalid option"),
    ("-m", "-m: requires an argument"),
    ("disk.img", "disk.img: emu takes no disk image argument"),
    ("-m 12Q", "-m 12Q: Parameter 'size' expects a non-negative number below 2^64\n"
               "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."),
    ("-m foo=1", "-m foo=1: Invalid parameter 'foo'"),
    ("-m 5k", "-m 5k: Parameter 'size' expects a positive multiple of 4096"),
    ("-name foo,bar=1", "-name foo,bar=1: Invalid parameter 'bar'"),
    ("-machine bogus", "-machine bogus: unsupported machine type\nUse -machine help to list supported machines"),
    ("-machine q35,foo=bar", "-machine q35,foo=bar: Property 'q35-machine.foo' not found"),
    ("-machine q35,accel=tcg -accel tcg", 'The -accel and "-machine accel=" options are incompatible'),
    ("-accel foo", "-accel foo: invalid accelerator foo"),
    ("-smp abc", "-smp abc: Parameter 'cpus' expects integer"),
    ("-object bogus,id=x", "-object bogus,id=x: Parameter 'qom-type' does not accept value 'bogus'"),
    ("-object memory-backend-memfd,id=m", "-object memory-backend-memfd,id=m: Parameter 'size' is missing"),
    ("-object memory-backend-memfd,size=1M", "-object memory-backend-memfd,size=1M: Parameter 'id' is missing"),
    ("-object memory-backend-memfd,id=m,size=1Z",
     "-object memory-backend-memfd,id=m,size=1Z: Parameter 'size' expects a size value"),
    ("-object memory-backend-memfd,id=m,size=1M,bogus=2",
     "-object memory-backend-memfd,id=m,size=1M,bogus=2: Invalid parameter 'bogus'"),
    ("-object memory-backend-memfd,id=m,size=1M,share=maybe",
     "-object memory-backend-memfd,id=m,size=1M,share=maybe: Parameter 'share' expects 'on' or 'off'"),
    ("-object memory-backend-file,id=m,size=1M",
     "-object memory-backend-file,id=m,size=1M: Parameter 'mem-path' is missing"),
    ("-object memory-backend-shm,id=m,size=1M,share=off",
     "-object memory-backend-shm,id=m,size=1M,share=off: memory-backend-shm is always shared: "
     "share=off is not supported"),
    ("-object memory-backend-memfd,id=m,size=1M,hugetlb=on",
     "-object memory-backend-memfd,id=m,size=1M,hugetlb=on: hugetlb=on is not supported; "
     "use memory-backend-file,mem-path=<hugetlbfs mount>"),
    ("-object memory-backend-memfd,id=m,size=1M -object memory-backend-shm,id=m,size=1M",
     "-object memory-backend-shm,id=m,size=1M: Duplicate ID 'm' for object"),
    ("-object memory-backend-memfd,id=1m,size=1M", "-object memory-backend-memfd,id=1m,size=1M: "
     "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter."),
    ("-object filter-dump,id=f", "-object filter-dump,id=f: Parameter 'netdev' is missing"),
    ("-object filter-dump,id=f,netdev=zz,file=/tmp/p",
     "-object filter-dump,id=f,netdev=zz,file=/tmp/p: Parameter 'netdev' expects a network backend id "
     "(a -netdev, or a vhost-pci-net device's id)"),
    ("-chardev bogus,id=c", "-chardev bogus,id=c: 'bogus' is not a valid char driver name"),
    ("-chardev socket,path=/tmp/x", "-chardev socket,path=/tmp/x: chardev: no id specified"),
    ("-chardev socket,id=c", "-chardev socket,id=c: Exactly one of 'path' or 'fd' option required"),
    ("-chardev socket,id=c,path=/tmp/x,fd=3",
     "-chardev socket,id=c,path=/tmp/x,fd=3: Exactly one of 'path' or 'fd' option required"),
    ("-chardev socket,id=c,fd=abc", "-chardev socket,id=c,fd=abc: Unable to parse FD number abc"),
    ("-chardev socket,id=c,fd=-1", "-chardev socket,id=c,fd=-1: Unable to parse FD number -1"),
    ("-chardev socket,id=c,path=/tmp/x,server=maybe",
     "-chardev socket,id=c,path=/tmp/x,server=maybe: Parameter 'server' expects 'on' or 'off'"),
    ("-chardev socket,id=c,path=/tmp/x,server=on,bogus=1",
     "-chardev socket,id=c,path=/tmp/x,server=on,bogus=1: Invalid parameter 'bogus'"),
    ("-chardev socket,id=c,path=/tmp/x,server=on,reconnect=1",
     "-chardev socket,id=c,path=/tmp/x,server=on,reconnect=1: "
     "'reconnect' option is incompatible with socket in server listen mode"),
    ("-chardev socket,id=c,path=/tmp/x,wait=off",
     "-chardev socket,id=c,path=/tmp/x,wait=off: 'wait' option is incompatible with socket in client connect mode"),
    ("-chardev socket,id=c,host=localhost,port=4444",
     "-chardev socket,id=c,host=localhost,port=4444: Parameter 'host' is not supported: emu chardevs are "
     "unix sockets (path=) or inherited sockets (fd=)"),
    ("-chardev socket,id=c,path=/a -chardev socket,id=c,path=/b",
     "-chardev socket,id=c,path=/b: Duplicate ID 'c' for chardev"),
    ("-netdev bogus,id=n", "-netdev bogus,id=n: Parameter 'type' does not accept value 'bogus'"),
    ("-netdev user,id=n", "-netdev user,id=n: Parameter 'type' does not accept value 'user'"),
    ("-netdev vhost-user,id=n", "-netdev vhost-user,id=n: Parameter 'chardev' is missing"),
    ("-netdev vhost-user,chardev=c", "-netdev vhost-user,chardev=c: Parameter 'id' is missing"),
    ("-netdev vhost-user,id=n,chardev=c", '-netdev vhost-user,id=n,chardev=c: chardev "c" not found'),
    ("-netdev vhost-user,id=n,chardev=c,bogus=1", "-netdev vhost-user,id=n,chardev=c,bogus=1: Invalid parameter 'bogus'"),
    ("-netdev vhost-user,id=n,chardev=c,queues=x", "-netdev vhost-user,id=n,chardev=c,queues=x: "
     "Parameter 'queues' expects integer"),
    ("-netdev vhost-user,id=n,chardev=c,queues=0", "-netdev vhost-user,id=n,chardev=c,queues=0: "
     "Parameter 'queues' expects a value in the range [1, 1024]"),
    ("-netdev vhost-user,id=n,chardev=c,vhost-pci=maybe", "-netdev vhost-user,id=n,chardev=c,vhost-pci=maybe: "
     "Parameter 'vhost-pci' does not accept value 'maybe'"),
    ("-chardev stdio,id=c -netdev vhost-user,id=n,chardev=c",
     '-netdev vhost-user,id=n,chardev=c: chardev "c" is not a unix socket'),
    ("-chardev socket,id=c,path=/x -netdev vhost-user,id=n,chardev=c -netdev vhost-user,id=n,chardev=c",
     "-netdev vhost-user,id=n,chardev=c: Duplicate ID 'n' for netdev"),
    ("-chardev socket,id=c,path=/x -netdev vhost-user,id=a,chardev=c -netdev vhost-user,id=b,chardev=c",
     "-netdev vhost-user,id=b,chardev=c: chardev 'c' is already in use by netdev 'a'"),
    ("-device foo", "-device foo: 'foo' is not a valid device model name"),
    ("-device ,x=1", "-device ,x=1: '' is not a valid device model name"),
    ("-device virtio-net-pci,,x", "-device virtio-net-pci,,x: 'virtio-net-pci,x' is not a valid device model name"),
    ("-device virtio-net-pci,bar=1", "-device virtio-net-pci,bar=1: Property 'virtio-net-pci.bar' not found"),
    ("-device vhost-pci-net,chardev=c,netdev=n", "-device vhost-pci-net,chardev=c,netdev=n: "
     "Property 'vhost-pci-net.netdev' not found"),
    ("-device virtio-net-pci,netdev=x", "-device virtio-net-pci,netdev=x: Property 'virtio-net-device.netdev' can't find value 'x'"),
    ("-device virtio-net-pci,mac=zz", "-device virtio-net-pci,mac=zz: Property 'virtio-net-device.mac' doesn't take value 'zz'"),
    ("-device virtio-net-pci,mac=52:54:00:12:34:56x",
     "-device virtio-net-pci,mac=52:54:00:12:34:56x: Property 'virtio-net-device.mac' doesn't take value '52:54:00:12:34:56x'"),
    ("-device virtio-net-pci,mac=52:54-00:12:34:56",
     "-device virtio-net-pci,mac=52:54-00:12:34:56: Property 'virtio-net-device.mac' doesn't take value '52:54-00:12:34:56'"),
    ("-device virtio-net-pci,addr=0x20", "-device virtio-net-pci,addr=0x20: Property 'virtio-net-pci.addr' doesn't take value '0x20'"),
    ("-device virtio-net-pci,addr=3.8", "-device virtio-net-pci,addr=3.8: Property 'virtio-net-pci.addr' doesn't take value '3.8'"),
    ("-device virtio-net-pci,mrg_rxbuf=maybe", "-device virtio-net-pci,mrg_rxbuf=maybe: Parameter 'mrg_rxbuf' expects 'on' or 'off'"),
    ("-device virtio-net-pci,vectors=-1", "-device virtio-net-pci,vectors=-1: Parameter 'vectors' expects a value in the range [0, 2048]"),
    ("-device virtio-net-pci,vectors=x", "-device virtio-net-pci,vectors=x: Parameter 'vectors' expects integer"),
    ("-device virtio-net-pci,host_mtu=99999999999",
     "-device virtio-net-pci,host_mtu=99999999999: Parameter 'host_mtu' expects a value in the range [68, 65535]"),
    ("-device virtio-net-pci,rx_queue_size=300",
     "-device virtio-net-pci,rx_queue_size=300: Parameter 'rx_queue_size' expects a power of 2 between 256 and 1024"),
    ("-device virtio-net-pci,id=", "-device virtio-net-pci,id=: Parameter 'id' expects an identifier\n"
     "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."),
    ("-device virtio-net-pci,netdev", "-device virtio-net-pci,netdev: Expected '=' after parameter 'netdev'"),
    ("-device virtio-net-pci,netdev=a,netdev=b", "-device virtio-net-pci,netdev=a,netdev=b: Parameter 'netdev' given twice"),
    ("-device virtio-net-pci,packed=maybe", "-device virtio-net-pci,packed=maybe: "
     "Parameter 'packed' expects 'on' or 'off'"),
    ("-device vhost-pci-net,chardev=c,disable-modern=on", "-device vhost-pci-net,chardev=c,disable-modern=on: "
     "Property 'vhost-pci-net.disable-modern' doesn't take value 'on': vhost-pci-net is modern-only"),
    ("-device virtio-net-pci,disable-legacy=maybe", "-device virtio-net-pci,disable-legacy=maybe: "
     "Parameter 'disable-legacy' does not accept value 'maybe'"),
    ("-netdev hubport,id=h,hubid=0 -device virtio-net-pci,netdev=h,disable-legacy=on,disable-modern=on",
     "-device virtio-net-pci,netdev=h,disable-legacy=on,disable-modern=on: device cannot work as "
     "neither modern nor legacy mode is enabled"),
    ("-netdev socket,id=s", "-netdev socket,id=s: exactly one of listen=, connect=, mcast= or "
     "udp= is required"),
    ("-netdev socket,id=s,fd=3,listen=:1", "-netdev socket,id=s,fd=3,listen=:1: exactly one of "
     "listen=, connect=, mcast= or udp= is required"),
    ("-netdev socket,id=s,fd=x", "-netdev socket,id=s,fd=x: Unable to parse FD number x"),
    ("-netdev socket,id=s,mcast=230.0.0.1:1234", "-netdev socket,id=s,mcast=230.0.0.1:1234: "
     "Parameter 'mcast' is not supported: emu's socket netdev is a stream (fd=, listen=, connect=)"),
    ("-netdev socket,id=s,listen=1234", "-netdev socket,id=s,listen=1234: host address '1234' "
     "doesn't contain ':' separating host from port"),
    ("-netdev socket,id=s,connect=:1234", "-netdev socket,id=s,connect=:1234: "
     "Parameter 'connect' expects [HOST]:PORT"),
    ("-netdev hubport,id=h", "-netdev hubport,id=h: Parameter 'hubid' is missing"),
    ("-netdev hubport,id=h,hubid=x", "-netdev hubport,id=h,hubid=x: Parameter 'hubid' expects integer"),
    ("-netdev hubport,id=h,hubid=0,netdev=s", "-netdev hubport,id=h,hubid=0,netdev=s: "
     "Parameter 'netdev' is not supported: emu's hub ports connect NICs"),
    ("-device virtio-net-pci,id=a -device vhost-pci-net,id=a,chardev=c -chardev socket,id=c,path=/x",
     "-device vhost-pci-net,id=a,chardev=c: Duplicate ID 'a' for device"),
    (VU + ["-device", "virtio-net-pci,netdev=n0", "-device", "virtio-net-pci,netdev=n0"],
     "-device virtio-net-pci,netdev=n0: Property 'virtio-net-device.netdev' can't take value 'n0', it's in use"),
    ("-device vhost-pci-net,id=v", "-device vhost-pci-net,id=v: Parameter 'chardev' is missing"),
    ("-device vhost-pci-net,chardev=c", '-device vhost-pci-net,chardev=c: chardev "c" not found'),
    ("-device vhost-pci-net,chardev=c,window=3G -chardev socket,id=c,path=/x",
     "-device vhost-pci-net,chardev=c,window=3G: Parameter 'window' expects a power of two of at least 2M"),
    (VU + ["-device", "vhost-pci-net,chardev=c0"],
     "-device vhost-pci-net,chardev=c0: chardev 'c0' is already in use by netdev 'n0'"),
    ("-chardev socket,id=a,path=/a -chardev socket,id=b,path=/b -device vhost-pci-net,chardev=a,addr=3 "
     "-device vhost-pci-net,chardev=b,addr=03.0,id=x",
     '-device vhost-pci-net,chardev=b,addr=03.0,id=x: PCI: slot 3 function 0 not available for vhost-pci-net, '
     'in use by vhost-pci-net,id ""'),
    ("-machine none -device virtio-net-pci", "-device virtio-net-pci: No 'PCI' bus found for device 'virtio-net-pci'"),
    ("-machine memory-backend=nope", "-machine memory-backend=nope: Memory backend 'nope' not found"),
    (VU + ["-object", "filter-dump,id=d,netdev=n0,file=/p", "-machine", "memory-backend=d"],
     "-machine memory-backend=d: 'd' is not a memory backend"),
    ("-object memory-backend-memfd,id=m,size=128M -machine memory-backend=m -m 256M",
     "-machine memory-backend=m: Machine memory size does not match the size of the memory backend"),
    (VU + ["-object", "memory-backend-file,id=m,size=1M,mem-path=/dev/shm/r", "-machine", "memory-backend=m",
           "-device", "virtio-net-pci,netdev=n0"],
     "-object memory-backend-file,id=m,size=1M,mem-path=/dev/shm/r: vhost-user needs guest RAM shared with "
     "the back-end: set share=on on memory backend 'm'"),
    ("-guest virtio-net", "-guest virtio-net: Parameter 'app' is missing"),
    ("-guest bogus,app=gen", "-guest bogus,app=gen: Parameter 'driver' does not accept value 'bogus'"),
    ("-guest virtio-net,app=bogus", "-guest virtio-net,app=bogus: Parameter 'app' does not accept value 'bogus'"),
    ("-guest virtio-net,app=gen,rate", "-guest virtio-net,app=gen,rate: Expected '=' after parameter 'rate'"),
    ("-guest vhost-pci-net,app=gen", "-guest vhost-pci-net,app=gen: unknown app 'gen' for driver vhost-pci-net "
     "(have echo, forward, responder, sink)"),
    ("-guest vhost-pci-net,app=forward,poll=on", "-guest vhost-pci-net,app=forward,poll=on: Invalid parameter 'poll'"),
    ("-guest virtio-net,app=gen", "-guest virtio-net,app=gen: app=gen needs a virtio-net-pci device"),
    ("-chardev socket,id=c,path=/x -device vhost-pci-net,chardev=c -guest vhost-pci-net,app=forward",
     "-guest vhost-pci-net,app=forward: app=forward needs two vhost-pci-net devices"),
    ("-guest virtio-net,app=gen -guest virtio-net,app=sink", "-guest virtio-net,app=sink: only one -guest may be given"),
    ("-qmp foo", "-qmp foo: 'foo' is not a valid char driver"),
    ("-qmp stdio,server=on", "-qmp stdio,server=on: 'stdio,server=on' is not a valid char driver"),
    ("-qmp tcp:localhost:4444,server=on", "-qmp tcp:localhost:4444,server=on: 'tcp' monitors are not supported "
     "by emu: use unix:PATH or stdio"),
    ("-qmp unix:/tmp/q.sock,server=on,wait=off,foo=1", "-qmp unix:/tmp/q.sock,server=on,wait=off,foo=1: "
     "Invalid parameter 'foo'"),
    ("-qmp stdio -daemonize", "-qmp stdio: cannot use stdio with -daemonize"),
    ("-mon chardev=zz,mode=control", '-mon chardev=zz,mode=control: chardev "zz" not found'),
    ("-mon mode=control", "-mon mode=control: Parameter 'chardev' is missing"),
    ("-chardev socket,id=c,path=/x -mon chardev=c,mode=bogus",
     "-mon chardev=c,mode=bogus: Parameter 'mode' does not accept value 'bogus'"),
    ("-chardev socket,id=c,path=/x -mon chardev=c",
     "-mon chardev=c: emu has no human monitor: use mode=control (QMP) and human-monitor-command"),
    ("-chardev socket,id=c,path=/x -mon chardev=c,mode=control -mon chardev=c,mode=control",
     "-mon chardev=c,mode=control: chardev 'c' is already in use by a monitor"),
    ("-monitor stdio", "-monitor stdio: emu has no human monitor: use -qmp and human-monitor-command"),
    ("-numa node", "-numa node: Parameter 'memdev' is missing"),
    ("-numa dist,src=0,dst=1,val=20", "-numa dist,src=0,dst=1,val=20: Parameter 'type' does not accept value 'dist'"),
    ("-object memory-backend-shm,id=a,size=1M -numa node,memdev=a -numa node,memdev=a",
     "-numa node,memdev=a: emu supports one NUMA node"),
    ("-object memory-backend-shm,id=a,size=1M -object memory-backend-shm,id=b,size=1M "
     "-numa node,memdev=a -machine memory-backend=b",
     "-machine memory-backend=b: '-machine memory-backend' and '-numa memdev' properties are mutually exclusive"),
    ("-numa node,memdev=nope", "-numa node,memdev=nope: Memory backend 'nope' not found"),
    (VU + ["-mem-path", "/dev/hugepages", "-device", "virtio-net-pci,netdev=n0"],
     "vhost-user needs guest RAM shared with the back-end: set share=on on memory backend 'pc.ram'"),
    ("-display gtk", "-display gtk: Parameter 'type' does not accept value 'gtk'"),
    ("-d bogus", "-d bogus: unknown log item 'bogus' (-d help lists them)"),
    ("-trace vhost_user_wire,events=/nonexistent", "-trace vhost_user_wire,events=/nonexistent: "
     "cannot open trace events file '/nonexistent': No such file or directory"),
    ("-trace vhost_user_wire,bogus=/x", "-trace vhost_user_wire,bogus=/x: Invalid parameter 'bogus'"),
]


@pytest.mark.parametrize("line, message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_errors(line, message):
    assert error(line) == message


def test_main_prints_emu_prefix_and_exits_1(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["-device", "virtio-net-pci,bar=1"], run=lambda cfg: pytest.fail("must not run"))
    assert e.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == "emu: -device virtio-net-pci,bar=1: Property 'virtio-net-pci.bar' not found\n"
    assert captured.out == ""


def test_die(capsys):
    with pytest.raises(SystemExit) as e:
        cli.die("-qmp unix:/x: Failed to connect to '/x': No such file or directory")
    assert e.value.code == 1
    assert capsys.readouterr().err == "emu: -qmp unix:/x: Failed to connect to '/x': No such file or directory\n"


def test_main_runs_the_config_and_prints_messages(capsys):
    seen = []
    assert cli.main(["-name", "vm", "-trace", "nope"], run=lambda cfg: seen.append(cfg) or 7) == 7
    assert seen[0].name == "vm"
    assert capsys.readouterr().err == "emu: -trace nope: warning: trace event 'nope' does not exist\n"


def test_version(capsys):
    assert cli.main(["-version"], run=lambda cfg: pytest.fail("must not run")) == 0
    assert capsys.readouterr().out == "emu version 0.1.0\nQEMU emulator version 7.2.0 (emu 0.1.0)\n"


@pytest.mark.parametrize("argv, expect", [
    (["-help"], "usage: emu [options]"),
    (["-h"], "-guest virtio-net|vhost-pci-net"),
    (["-device", "help"], 'name "vhost-pci-net", bus PCI'),
    (["-device", "virtio-net-pci,help"], "mrg_rxbuf=<on|off>"),
    (["-device", "vhost-pci-net,help"], "window=<size>"),
    (["-machine", "help"], "q35"),
    (["-object", "help"], "memory-backend-shm"),
    (["-object", "memory-backend-file,help"], "mem-path=<str>"),
    (["-chardev", "help"], "socket"),
    (["-netdev", "help"], "vhost-user"),
    (["-d", "help"], "guest_errors"),
    (["-trace", "help"], "vhost_user_wire"),
    (["-accel", "help"], "tcg"),
    (["-guest", "help"], "responder"),
])
def test_help_texts_exit_0(argv, expect):
    with pytest.raises(EarlyExit) as e:
        parse_args(argv)
    assert e.value.status == 0 and expect in e.value.text


def test_device_help_lists_both_models_like_qemu():
    text = cli.device_help()
    assert 'name "virtio-net-pci", bus PCI, alias "virtio-net", desc "' in text
    assert 'name "vhost-pci-net", bus PCI, desc "' in text


def test_a_failing_command_line_creates_nothing(tmp_path):
    sock = tmp_path / "q.sock"
    with pytest.raises(CommandLineError):
        parse_args(["-qmp", f"unix:{sock},server=on,wait=off", "-device", "bogus"])
    assert list(tmp_path.iterdir()) == []
