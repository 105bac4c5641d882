"""Domain XML: the hardened parser, builders and readers. The only module using lxml.

XML is always built as a tree and serialised; never assembled with string formatting,
so names with `<`, `&` or quotes come out escaped.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

# No entities, no network, no huge trees: the XML may come from a user.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True
)


class XMLError(ValueError):
    """The XML is not well-formed or not a domain."""


def parse(text: str) -> etree._Element:
    try:
        root = etree.fromstring(text.encode(), parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLError(f"Malformed XML: {exc}") from None
    return root


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str):
    el = etree.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


@dataclass(frozen=True)
class SimpleDomain:
    """What a minimal domain needs: enough for the test driver and the demo."""

    name: str
    uuid: str
    memory_mib: int = 512
    current_memory_mib: int | None = None
    vcpus: int = 1
    max_vcpus: int | None = None
    domain_type: str = "test"
    arch: str = "i686"
    balloon: bool = True


def build_simple_domain(spec: SimpleDomain) -> str:
    root = etree.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    _sub(root, "memory", spec.memory_mib * 1024, unit="KiB")
    current = spec.current_memory_mib or spec.memory_mib
    _sub(root, "currentMemory", current * 1024, unit="KiB")
    maximum = spec.max_vcpus or spec.vcpus
    vcpu = _sub(root, "vcpu", maximum, placement="static")
    if spec.vcpus != maximum:
        vcpu.set("current", str(spec.vcpus))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch)
    devices = _sub(root, "devices")
    if spec.balloon:
        _sub(devices, "memballoon", model="virtio")
    return to_string(root)


def build_snapshot(name: str, description: str = "") -> str:
    root = etree.Element("domainsnapshot")
    _sub(root, "name", name)
    if description:
        _sub(root, "description", description)
    return to_string(root)


def domain_name(xml: str) -> str:
    name = parse(xml).findtext("name")
    if not name:
        raise XMLError("The XML names no domain.")
    return name


@dataclass(frozen=True)
class Identity:
    name: str
    uuid: str
    memory_kib: int


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024}
_UNITS.update({"m": 1024, "mib": 1024, "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2})
_UNITS.update({"gb": 1e9 / 1024, "t": 1024**3, "tib": 1024**3, "tb": 1e12 / 1024})


def _kib(el) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    unit = (el.get("unit") or "KiB").lower()
    return int(int(el.text.strip()) * _UNITS.get(unit, 1))


def identity(xml: str) -> Identity:
    """Name, UUID and memory of a domain XML (a saved image's, say)."""
    root = parse(xml)
    return Identity(
        name=root.findtext("name") or "",
        uuid=(root.findtext("uuid") or "").strip(),
        memory_kib=_kib(root.find("memory")),
    )


@dataclass(frozen=True)
class Disk:
    target: str  # vda, hdc …
    device: str  # disk, cdrom, floppy, lun
    source: str  # a file or block path; "" for an empty CD-ROM or a network disk
    format: str  # qcow2, raw …
    readonly: bool


def disks(xml: str) -> list[Disk]:
    """The domain's disks as migration and storage checks need them."""
    result = []
    for disk in parse(xml).iterfind("devices/disk"):
        source = disk.find("source")
        path = ""
        if source is not None:
            path = source.get("file") or source.get("dev") or ""
        driver = disk.find("driver")
        target = disk.find("target")
        result.append(
            Disk(
                target=target.get("dev", "") if target is not None else "",
                device=disk.get("device", "disk"),
                source=path,
                format=driver.get("type", "raw") if driver is not None else "raw",
                readonly=disk.find("readonly") is not None,
            )
        )
    return result


def build_volume(name: str, capacity_bytes: int, fmt: str) -> str:
    """A storage volume of `capacity_bytes` in format `fmt` (for copy-storage targets)."""
    root = etree.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", capacity_bytes, unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=fmt)
    return to_string(root)


def pool_target_path(xml: str) -> str:
    return (parse(xml).findtext("target/path") or "").rstrip("/")


@dataclass(frozen=True)
class KernelBootGuest:
    """A QEMU guest booted straight from a kernel and initrd, with one qcow2 disk.

    The real-hypervisor tier's tiny guest; direct kernel boot of the provisioning
    templates grows from it. Paths are as the host's libvirtd sees them.
    """

    name: str
    uuid: str
    kernel: str
    initrd: str
    disk: str
    serial_log: str
    memory_mib: int = 128
    vcpus: int = 1
    max_vcpus: int = 2
    cmdline: str = "console=ttyS0 quiet panic=-1"
    emulator: str = "/usr/bin/qemu-system-x86_64"


def build_kernel_boot_guest(g: KernelBootGuest) -> str:
    root = etree.Element("domain", type="qemu")  # TCG: no KVM on these machines
    _sub(root, "name", g.name)
    _sub(root, "uuid", g.uuid)
    _sub(root, "memory", g.memory_mib, unit="MiB")
    _sub(root, "currentMemory", g.memory_mib, unit="MiB")
    _sub(root, "vcpu", g.max_vcpus, placement="static", current=str(g.vcpus))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", g.kernel)
    _sub(os_el, "initrd", g.initrd)
    _sub(os_el, "cmdline", g.cmdline)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    _sub(devices, "emulator", g.emulator)
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=g.disk)
    _sub(disk, "target", dev="vda", bus="virtio")
    for tag in ("serial", "console"):
        chardev = _sub(devices, tag, type="file")
        _sub(chardev, "source", path=g.serial_log, append="on")
        _sub(chardev, "target", port="0", **({"type": "serial"} if tag == "console" else {}))
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="2")
    return to_string(root)
