"""Reads a domain XML back into plain data, so that tests can check what the builders
made (and what libvirt kept of it). Test code only: the panel itself never needs it."""

from __future__ import annotations

from domains import domxml

_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "kib": 1, "k": 1, "mib": 1024, "m": 1024,
          "gib": 1024**2, "g": 1024**2}  # fmt: skip


def _kib(el) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    return int(int(el.text.strip()) * _UNITS.get((el.get("unit") or "KiB").lower(), 1))


def _parse_domain(xml: str):
    root = domxml.parse(xml)
    if root.tag != "domain":
        raise domxml.XMLError(f"The XML is a <{root.tag}>, not a <domain>.")
    return root


def _int_text(el) -> int:
    try:
        return int((el.text or "").strip()) if el is not None else 0
    except ValueError:
        return 0


def read_domain_spec_summary(xml: str) -> dict:
    """The facts of a domain XML the tests check.

    current_memory_kib and vcpus_current are the effective values: memory and vcpus when
    the XML sets no current value.
    """
    root = _parse_domain(xml)
    vcpu = root.find("vcpu")
    vcpus = _int_text(vcpu)
    current = vcpu.get("current") if vcpu is not None else None
    memory = _kib(root.find("memory"))
    disks_out = []
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        disks_out.append(
            {
                "target": target.get("dev", "") if target is not None else "",
                "bus": target.get("bus", "") if target is not None else "",
                "device": disk.get("device", "disk"),
                "source": (source.get("file") or source.get("dev") or "")
                if source is not None
                else "",
            }
        )
    interfaces_out = []
    for nic in root.iterfind("devices/interface"):
        mac = nic.find("mac")
        source = nic.find("source")
        model = nic.find("model")
        interfaces_out.append(
            {
                "type": nic.get("type", ""),
                "mac": mac.get("address", "") if mac is not None else "",
                "source": (source.get("network") or source.get("bridge") or "")
                if source is not None
                else "",
                "model": model.get("type", "") if model is not None else "",
            }
        )
    return {
        "name": root.findtext("name") or "",
        "uuid": (root.findtext("uuid") or "").strip(),
        "memory_kib": memory,
        "current_memory_kib": _kib(root.find("currentMemory")) or memory,
        "vcpus": vcpus,
        "vcpus_current": int(current) if current and current.isdigit() else vcpus,
        "boot_order": [b.get("dev", "") for b in root.iterfind("os/boot")],
        "kernel": root.findtext("os/kernel") or "",
        "initrd": root.findtext("os/initrd") or "",
        "cmdline": root.findtext("os/cmdline") or "",
        "on_poweroff": root.findtext("on_poweroff") or "",
        "on_reboot": root.findtext("on_reboot") or "",
        "on_crash": root.findtext("on_crash") or "",
        "disks": disks_out,
        "interfaces": interfaces_out,
    }
