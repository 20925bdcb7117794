"""A command line as libvirt 9 writes it for QEMU 7.2: a pc VM with a
vhost-user NIC (``<interface type='vhostuser'>``, client mode), shared
memfd RAM (``<memoryBacking><source type='memfd'/><access mode='shared'/>``),
a pty serial port whose log goes to virtlogd through an fd set, the
monitor on a listening socket libvirt made and passes as an fd, and the
boilerplate every domain gets (the master key secret, -overcommit, -uuid,
-rtc, -boot strict, -sandbox, -msg timestamp).  JSON for -object,
-device, -netdev and -audiodev, as libvirt uses with QEMU >= 7.0; no USB
controller or balloon (``<controller type='usb' model='none'/>``,
``<memballoon model='none'/>``).  The guest program comes last, the way
``<qemu:commandline>`` passes extra arguments.
"""
from __future__ import annotations

UUID = "c7a5fdbd-edaf-9455-926a-d65c16db1809"


def libvirt_args(*, monitor_fd: int, log_fd: int, vhost_sock: str, run_dir: str,
                 guest: str = "virtio-net,app=gen,size=64,count=0") -> list[str]:
    key = f"{run_dir}/master-key.aes"
    return [
        "-name", "guest=vm1,debug-threads=on",
        "-S",
        "-object", '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"%s"}' % key,
        "-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
        "-accel", "tcg",
        "-cpu", "qemu64",
        "-m", "size=262144k",
        "-object", '{"qom-type":"memory-backend-memfd","id":"pc.ram","share":true,'
                   '"x-use-canonical-path-for-ramblock-id":false,"size":268435456}',
        "-overcommit", "mem-lock=off",
        "-smp", "1,sockets=1,cores=1,threads=1",
        "-uuid", UUID,
        "-display", "none",
        "-no-user-config",
        "-nodefaults",
        "-chardev", f"socket,id=charmonitor,fd={monitor_fd},server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-rtc", "base=utc",
        "-no-shutdown",
        "-boot", "strict=on",
        "-chardev", f"socket,id=charnet0,path={vhost_sock}",
        "-netdev", '{"type":"vhost-user","chardev":"charnet0","id":"hostnet0"}',
        "-device", '{"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0",'
                   '"mac":"52:54:00:ee:96:6b","bus":"pci.0","addr":"0x3"}',
        "-add-fd", f"set=0,fd={log_fd},opaque=serial0-log",
        "-chardev", "pty,id=charserial0,logfile=/dev/fdset/0,logappend=on",
        "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
        "-audiodev", '{"id":"audio1","driver":"none"}',
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-msg", "timestamp=on",
        "-guest", guest,
    ]
