"""emu.spec pinned to a real peer's definition: Linux's UAPI headers.

Every integer constant an emu.spec module declares is either compared with
what the headers define (by name -- the module's prefix rule -- or by an
explicit C expression) or listed in NOT_IN_LINUX with the reason; a new
constant that is neither fails :func:`test_every_constant_is_compared_or_
explained`, so nothing in emu.spec goes unchecked by accident."""
from __future__ import annotations

import ast
import inspect

import pytest

from emu import spec
from emu.spec import pci, vhost, virtio, virtio_net, virtio_pci, virtio_ring, virtio_ring_packed

from .linux_headers import evaluate, macros

MODULES = (virtio, virtio_pci, virtio_ring, virtio_ring_packed, virtio_net, vhost, pci)

# emu name -> Linux name, by prefix: (emu prefix, Linux prefix, is a feature bit).
# Linux numbers feature bits; emu.spec holds them as masks.
RULES = {
    virtio: [("STATUS_", "VIRTIO_CONFIG_S_", False), ("F_", "VIRTIO_F_", True),
             ("F_", "VIRTIO_RING_F_", True), ("ISR_", "VIRTIO_PCI_ISR_", False)],
    virtio_pci: [("", "VIRTIO_PCI_", False)],
    virtio_ring: [("", "VRING_", False)],
    virtio_ring_packed: [("", "VRING_PACKED_", False)],
    virtio_net: [("F_", "VIRTIO_NET_F_", True), ("", "VIRTIO_NET_", False), ("", "", False)],
    vhost: [("F_", "VHOST_F_", True)],
    pci: [("", "PCI_", False)],
}

# where the headers say it another way
EXPLICIT = {
    virtio: {
        "NO_VECTOR": "VIRTIO_MSI_NO_VECTOR",
    },
    virtio_pci: {
        "CAP_ID": "offsetof(struct virtio_pci_cap, id)",
        "CAP_SIZE": "sizeof(struct virtio_pci_cap)",
        "NOTIFY_CAP_SIZE": "sizeof(struct virtio_pci_notify_cap)",
        "PCI_CFG_DATA": "offsetof(struct virtio_pci_cfg_cap, pci_cfg_data)",
        "PCI_CFG_CAP_SIZE": "sizeof(struct virtio_pci_cfg_cap)",
        "COMMON_Q_DESC": "VIRTIO_PCI_COMMON_Q_DESCLO",
        "COMMON_Q_AVAIL": "VIRTIO_PCI_COMMON_Q_AVAILLO",
        "COMMON_Q_USED": "VIRTIO_PCI_COMMON_Q_USEDLO",
        "COMMON_CFG_SIZE_1_0": "sizeof(struct virtio_pci_common_cfg)",
        # the 1.2 structure ends with le16 queue_reset
        "COMMON_CFG_SIZE": "VIRTIO_PCI_COMMON_Q_RESET + sizeof(__le16)",
        "MSI_CONFIG_VECTOR": "VIRTIO_MSI_CONFIG_VECTOR",
        "MSI_QUEUE_VECTOR": "VIRTIO_MSI_QUEUE_VECTOR",
        "CONFIG_OFF": "VIRTIO_PCI_CONFIG_OFF(0)",
        "CONFIG_OFF_MSIX": "VIRTIO_PCI_CONFIG_OFF(1)",
    },
    virtio_ring: {
        "DESC_SIZE": "sizeof(struct vring_desc)",
        "USED_ELEM_SIZE": "sizeof(struct vring_used_elem)",
        "AVAIL_ELEM_SIZE": "sizeof(((struct vring_avail *)0)->ring[0])",
        "RING_FLAGS": "offsetof(struct vring_avail, flags)",
        "RING_IDX": "offsetof(struct vring_avail, idx)",
        "RING_ENTRIES": "offsetof(struct vring_avail, ring)",
        "EVENT_SIZE": "sizeof(__virtio16)",
        "DESC_ALIGN": "VRING_DESC_ALIGN_SIZE",
        "AVAIL_ALIGN": "VRING_AVAIL_ALIGN_SIZE",
        "USED_ALIGN": "VRING_USED_ALIGN_SIZE",
        "LEGACY_ALIGN": "VIRTIO_PCI_VRING_ALIGN",
    },
    virtio_ring_packed: {
        # Linux numbers the AVAIL/USED bits; emu.spec holds masks
        "DESC_F_AVAIL": "1 << VRING_PACKED_DESC_F_AVAIL",
        "DESC_F_USED": "1 << VRING_PACKED_DESC_F_USED",
        "DESC_SIZE": "sizeof(struct vring_packed_desc)",
        "DESC_ADDR": "offsetof(struct vring_packed_desc, addr)",
        "DESC_LEN": "offsetof(struct vring_packed_desc, len)",
        "DESC_ID": "offsetof(struct vring_packed_desc, id)",
        "DESC_FLAGS": "offsetof(struct vring_packed_desc, flags)",
        "EVENT_SIZE": "sizeof(struct vring_packed_desc_event)",
        "EVENT_OFF_WRAP": "offsetof(struct vring_packed_desc_event, off_wrap)",
        "EVENT_FLAGS": "offsetof(struct vring_packed_desc_event, flags)",
        "OFFSET_MASK": "(1 << VRING_PACKED_EVENT_F_WRAP_CTR) - 1",
    },
    virtio_net: {
        "CFG_MAC": "offsetof(struct virtio_net_config, mac)",
        "CFG_STATUS": "offsetof(struct virtio_net_config, status)",
        "CFG_MAX_PAIRS": "offsetof(struct virtio_net_config, max_virtqueue_pairs)",
        "CFG_MTU": "offsetof(struct virtio_net_config, mtu)",
        "CTRL_OK": "VIRTIO_NET_OK",
        "CTRL_ERR": "VIRTIO_NET_ERR",
        "HDR_LEN_LEGACY": "sizeof(struct virtio_net_hdr)",
        "HDR_LEN_MRG": "sizeof(struct virtio_net_hdr_mrg_rxbuf)",
    },
    vhost: {},
    pci: {
        "CONFIG_SPACE_SIZE": "PCI_CFG_SPACE_EXP_SIZE",
        "CONVENTIONAL_SIZE": "PCI_CFG_SPACE_SIZE",
        "CAP_START": "PCI_STD_HEADER_SIZEOF",
        "NUM_BARS": "PCI_STD_NUM_BARS",
        "BASE_ADDRESS_END": "PCI_BASE_ADDRESS_5 + 4",
        "HEADER_TYPE_MULTI_FUNCTION": "0xff & ~PCI_HEADER_TYPE_MASK",
        "BAR_SPACE_IO": "PCI_BASE_ADDRESS_SPACE_IO",
        "BAR_MEM_TYPE_64": "PCI_BASE_ADDRESS_MEM_TYPE_64",
        "BAR_MEM_PREFETCH": "PCI_BASE_ADDRESS_MEM_PREFETCH",
        "BAR_MEM_FLAGS": "~PCI_BASE_ADDRESS_MEM_MASK",
        "BAR_IO_FLAGS": "~PCI_BASE_ADDRESS_IO_MASK",
        "MSIX_CAP_SIZE": "PCI_CAP_MSIX_SIZEOF",
        "MSIX_BIR_MASK": "PCI_MSIX_TABLE_BIR",
        "MSIX_ENTRY_ADDR_LO": "PCI_MSIX_ENTRY_LOWER_ADDR",
        "MSIX_ENTRY_ADDR_HI": "PCI_MSIX_ENTRY_UPPER_ADDR",
        "MSIX_MAX_VECTORS": "PCI_MSIX_FLAGS_QSIZE + 1",
    },
}

# declared in emu.spec, not defined by the UAPI headers (compared all the
# same should a header define one of them by its rule's name)
NOT_IN_LINUX = {
    virtio: {"QUEUE_MAX_SIZE": "a spec sentence (§2.7), no macro",
             "ISR_QUEUE": "Linux names only the config bit (VIRTIO_PCI_ISR_CONFIG)",
             "F_NOTIF_CONFIG_DATA": "newer than these headers (6.1)",
             "F_NOTIFICATION_DATA": "newer than these headers (6.1)",
             "F_BAD_FEATURE": "QEMU's legacy probe (hw/virtio), not Linux's",
             "LEGACY_ONLY_FEATURES": "a spec table (§6.3), no macro"},
    virtio_pci: {"PCI_VENDOR_ID": "pci_ids.h is kernel-internal",
                 "PCI_DEVICE_ID_MODERN_BASE": "a spec sentence (§4.1.2), no macro",
                 "PCI_DEVICE_ID_LAST": "a spec sentence (§4.1.2), no macro",
                 "PCI_SUBSYSTEM_ID_MIN": "a spec sentence (§4.1.2.1), no macro",
                 "PCI_DEVICE_ID_TRANSITIONAL_BASE": "a spec table (§4.1.2.1), no macro",
                 "PCI_DEVICE_ID_TRANSITIONAL_LAST": "a spec sentence (§4.1.2.1), no macro",
                 "MODERN_REVISION": "a spec sentence (§4.1.2.1), no macro",
                 "QEMU_SUBSYSTEM_ID": "QEMU's (include/hw/pci/pci.h), not Linux's"},
    virtio_ring: {},
    virtio_ring_packed: {"DESC_ALIGN": "the spec's table (§2.8.10.1); Linux keeps it kernel-internal",
                         "EVENT_ALIGN": "the spec's table (§2.8.10.1); Linux keeps it kernel-internal"},
    virtio_net: {"VHOST_NET_BITS": "emu's split of the bits between back-end and model",
                 "DEVICE_MODEL_BITS": "emu's split of the bits between back-end and model"},
    vhost: {"F_PROTOCOL_FEATURES": "vhost-user only (QEMU's vhost-user.rst), not kernel vhost"},
    pci: {"COMMAND_WRITABLE": "the command bits emu's functions implement",
          "STATUS_W1C": "the RW1C status bits: the PCI spec's table, no macro",
          "CAP_MAX_COUNT": "Linux's walk limit (PCI_FIND_CAP_TTL) is kernel-internal",
          "MSI_ADDR_BASE": "x86 (asm/msidef.h), not a UAPI header",
          "INTX_PINS": "INTA..INTD: a spec sentence, no macro"},
}


def declared(mod) -> dict[str, int]:
    """The integer constants ``mod`` itself declares (not those it imports)."""
    names = set()
    for node in ast.parse(inspect.getsource(mod)).body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
    return {n: getattr(mod, n) for n in sorted(names)
            if n.isupper() and type(getattr(mod, n)) is int}


def candidates(mod, name: str) -> list[tuple[str, bool]]:
    return [(linux + name[len(ours):], bit) for ours, linux, bit in RULES[mod]
            if name.startswith(ours)]


def plan() -> tuple[dict[str, str], dict[str, int], list[str]]:
    """-> (C expression per 'module.NAME', emu's value per 'module.NAME',
    the constants nothing covers)."""
    defined = macros()
    exprs, ours, missing = {}, {}, []
    for mod in MODULES:
        short = mod.__name__.rsplit(".", 1)[1]
        for name, value in declared(mod).items():
            key = f"{short}.{name}"
            hit = next(((c, bit) for c, bit in candidates(mod, name) if c in defined), None)
            if name in EXPLICIT[mod]:
                exprs[key] = EXPLICIT[mod][name]
            elif hit is not None:       # also for NOT_IN_LINUX: newer headers may define it
                exprs[key] = f"1ULL << {hit[0]}" if hit[1] else hit[0]
            else:
                if name not in NOT_IN_LINUX[mod]:
                    missing.append(key)
                continue
            ours[key] = value
    return exprs, ours, missing


def test_every_constant_is_compared_or_explained():
    exprs, _, missing = plan()
    assert not missing, (f"{missing}: no Linux definition found; map it in EXPLICIT or list it "
                         "in NOT_IN_LINUX with the reason")
    assert len(exprs) > 150         # the comparison below really covers emu.spec


def test_constants_match_the_linux_headers():
    exprs, ours, _ = plan()
    theirs = evaluate(exprs)
    wrong = {k: (hex(ours[k]), hex(theirs[k]), exprs[k]) for k in exprs
             if ours[k] != theirs[k] & ((1 << 64) - 1)}
    assert not wrong, f"emu.spec disagrees with Linux (ours, theirs, expression): {wrong}"


def test_the_not_in_linux_list_is_current():
    for mod in MODULES:
        for name in NOT_IN_LINUX[mod]:
            assert name in declared(mod), f"{mod.__name__}.{name} is listed but not declared"


def test_common_config_field_widths():
    """COMMON_FIELD_SIZES against struct virtio_pci_common_cfg (the 64-bit
    queue addresses are its _lo/_hi pairs; the 1.2 fields after it are le16)."""
    members = {
        virtio_pci.COMMON_DFSELECT: ["device_feature_select"],
        virtio_pci.COMMON_DF: ["device_feature"],
        virtio_pci.COMMON_GFSELECT: ["guest_feature_select"],
        virtio_pci.COMMON_GF: ["guest_feature"],
        virtio_pci.COMMON_MSIX: ["msix_config"],
        virtio_pci.COMMON_NUMQ: ["num_queues"],
        virtio_pci.COMMON_STATUS: ["device_status"],
        virtio_pci.COMMON_CFGGENERATION: ["config_generation"],
        virtio_pci.COMMON_Q_SELECT: ["queue_select"],
        virtio_pci.COMMON_Q_SIZE: ["queue_size"],
        virtio_pci.COMMON_Q_MSIX: ["queue_msix_vector"],
        virtio_pci.COMMON_Q_ENABLE: ["queue_enable"],
        virtio_pci.COMMON_Q_NOFF: ["queue_notify_off"],
        virtio_pci.COMMON_Q_DESC: ["queue_desc_lo", "queue_desc_hi"],
        virtio_pci.COMMON_Q_AVAIL: ["queue_avail_lo", "queue_avail_hi"],
        virtio_pci.COMMON_Q_USED: ["queue_used_lo", "queue_used_hi"],
    }
    exprs = {}
    for off, fields in members.items():
        exprs[f"off{off}"] = f"offsetof(struct virtio_pci_common_cfg, {fields[0]})"
        exprs[f"size{off}"] = " + ".join(
            f"sizeof(((struct virtio_pci_common_cfg *)0)->{f})" for f in fields)
    exprs["ndata"] = "VIRTIO_PCI_COMMON_Q_RESET - VIRTIO_PCI_COMMON_Q_NDATA"
    got = evaluate(exprs)
    want = dict(virtio_pci.COMMON_FIELD_SIZES)
    for off in members:
        assert got[f"off{off}"] == off
        assert want.pop(off) == got[f"size{off}"], hex(off)
    assert want.pop(virtio_pci.COMMON_Q_NDATA) == got["ndata"]
    assert want == {virtio_pci.COMMON_Q_RESET: 2}


@pytest.mark.parametrize("align", [4096, 64])
def test_ring_layout_is_vring_init(align):
    """ring_sizes / ring_layout against Linux's vring_init and vring_size
    (the legacy layout: used ring on the next ``align`` boundary)."""
    nums = [1, 2, 4, 256, 1024, virtio.QUEUE_MAX_SIZE]
    prelude = "static struct vring vr;\n#define BASE ((char *)0x100000)\n"
    exprs = {}
    for n in nums:
        init = f"(vring_init(&vr, {n}, BASE, {align}), 0)"
        exprs[f"desc{n}"] = f"{init} + ((char *)vr.desc - BASE)"
        exprs[f"avail{n}"] = f"{init} + ((char *)vr.avail - BASE)"
        exprs[f"avail_end{n}"] = f"{init} + ((char *)&vring_used_event(&vr) + 2 - BASE)"
        exprs[f"used{n}"] = f"{init} + ((char *)vr.used - BASE)"
        exprs[f"size{n}"] = f"vring_size({n}, {align})"
    got = evaluate(exprs, prelude)
    for n in nums:
        desc, avail, used, total = virtio_ring.ring_layout(0, n, align)
        d_size, a_size, u_size = virtio_ring.ring_sizes(n)
        assert (desc, avail, used) == (got[f"desc{n}"], got[f"avail{n}"], got[f"used{n}"])
        assert d_size == avail - desc and avail + a_size == got[f"avail_end{n}"]
        assert used + u_size == got[f"size{n}"]           # vring_size ends at avail_event
        assert total == -(-got[f"size{n}"] // align) * align


def test_struct_formats_match():
    got = evaluate({"config": "offsetof(struct virtio_net_config, mtu) + 2",
                    "ctrl_hdr": "sizeof(struct virtio_net_ctrl_hdr)",
                    "used_ring": "offsetof(struct vring_used, ring)",
                    "used_idx": "offsetof(struct vring_used, idx)"})
    assert virtio_net.CONFIG.size == got["config"]
    assert virtio_net.CTRL_HDR.size == got["ctrl_hdr"]
    # the device area's header is laid out as the driver area's
    assert (virtio_ring.RING_IDX, virtio_ring.RING_ENTRIES) == (got["used_idx"], got["used_ring"])


def test_spec_is_the_floor():
    """emu.spec imports nothing else of emu."""
    for mod in (spec,) + MODULES:
        for node in ast.walk(ast.parse(inspect.getsource(mod))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for n in names:
                assert not n.startswith("emu") or n == "emu.spec" or n.startswith("emu.spec."), \
                    f"{mod.__name__} imports {n}"
