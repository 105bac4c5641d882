"""Domain XML: the hardened parser, builders and readers. The only module using lxml.

XML is always built as a tree and serialised; never assembled with string formatting,
so names with `<`, `&` or quotes come out escaped.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import secrets
import uuid as uuidlib
from dataclasses import dataclass, fields

from django.utils.translation import gettext as _
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
        raise XMLError(_("Malformed XML: %(error)s") % {"error": exc}) from None
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
    # A disk (its image path) and a network interface (its MAC), for usage figures.
    disk: str = ""
    disk_format: str = "qcow2"  # what an internal snapshot needs
    mac: str = ""
    # A serial console (pty) and a VNC display listening on this address ("": none).
    serial: bool = False
    vnc_listen: str = ""


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
    if spec.disk:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=spec.disk_format)
        _sub(disk, "source", file=spec.disk)
        _sub(disk, "target", dev="vda", bus="virtio")
    if spec.mac:
        nic = _sub(devices, "interface", type="network")
        _sub(nic, "mac", address=spec.mac)
        _sub(nic, "source", network="default")
    if spec.serial:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
    if spec.vnc_listen:
        graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
        _sub(graphics, "listen", type="address", address=spec.vnc_listen)
    if spec.balloon:
        _sub(devices, "memballoon", model="virtio")
    return to_string(root)


def build_snapshot(name: str, description: str = "", disk_only: bool = False) -> str:
    """A <domainsnapshot> to create: its name and description, and with `disk_only` no
    memory (<memory snapshot='no'/>, for an external disk-only snapshot)."""
    root = etree.Element("domainsnapshot")
    _sub(root, "name", name)
    if description:
        _sub(root, "description", description)
    if disk_only:
        _sub(root, "memory", snapshot="no")
    return to_string(root)


def domain_name(xml: str) -> str:
    name = parse(xml).findtext("name")
    if not name:
        raise XMLError(_("The XML names no domain."))
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
    return [
        Disk(target=d.target, device=d.device, source=d.path, format=d.format or "raw",
             readonly=d.readonly)
        for d in disk_sources(xml)
    ]  # fmt: skip


@dataclass(frozen=True)
class Nic:
    target: str  # the host-side device (vnet0 …); "" when libvirt has not named one
    mac: str


def interfaces(xml: str) -> list[Nic]:
    """The domain's network interfaces, by the names their statistics are asked under."""
    result = []
    for nic in parse(xml).iterfind("devices/interface"):
        target = nic.find("target")
        mac = nic.find("mac")
        result.append(
            Nic(
                target=target.get("dev", "") if target is not None else "",
                mac=mac.get("address", "") if mac is not None else "",
            )
        )
    return result


@dataclass(frozen=True)
class DiskView:
    """A disk as the VM page shows it."""

    target: str  # vda, hdc …
    device: str  # disk, cdrom, floppy, lun
    bus: str  # virtio, sata, ide …
    source: str  # the file or device, "pool/volume", "protocol:name"; "" for an empty drive
    format: str  # qcow2, raw …; "" when not written
    readonly: bool


@dataclass(frozen=True)
class NicView:
    """A network interface as the VM page shows it."""

    mac: str
    model: str  # virtio, e1000 …; "" when libvirt chose
    type: str  # network, bridge, direct …
    source: str  # the network's, bridge's or device's name
    link: str  # "up" or "down" (<link state>; up when not written)


def device_views(xml: str) -> tuple[tuple[DiskView, ...], tuple[NicView, ...]]:
    """The disks and network interfaces of a domain XML, for the VM page."""
    root = parse(xml)
    disks = [
        DiskView(
            target=d.target, device=d.device, bus=d.bus, source=d.key or d.network,
            format=d.format, readonly=d.readonly,
        )
        for d in disk_sources(xml)
    ]  # fmt: skip
    nics = []
    for nic in root.iterfind("devices/interface"):
        mac, model, source, link = (nic.find(t) for t in ("mac", "model", "source", "link"))
        name = ""
        if source is not None:
            name = source.get("network") or source.get("bridge") or source.get("dev") or ""
        nics.append(
            NicView(
                mac=mac.get("address", "") if mac is not None else "",
                model=model.get("type", "") if model is not None else "",
                type=nic.get("type", ""),
                source=name,
                link=link.get("state", "up") if link is not None else "up",
            )
        )
    return tuple(disks), tuple(nics)


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
    # Where the screen listens: the host's loopback, or its console address.
    vnc_listen: str = "127.0.0.1"


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
    # A pty (so that libvirt's console stream can open it) whose output is also logged to
    # a file (what the tests read); the console is the same serial port.
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=g.serial_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    # A screen on the host's loopback (the console proxy reaches it through libvirt) or on
    # its console address. Started with a password nobody knows: QEMU changes a VNC password
    # on a running display only if it started with one, and the console sets a fresh one
    # per ticket.
    graphics = _sub(
        devices, "graphics", type="vnc", port="-1", autoport="yes",
        passwd=secrets.token_urlsafe(6)[:8],
    )  # fmt: skip
    _sub(graphics, "listen", type="address", address=g.vnc_listen)
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="2")
    return to_string(root)


# --- Provisioning templates: a whole domain from a spec ---------------------------------


@dataclass(frozen=True)
class DiskSpec:
    """One disk or CD-ROM of a new domain."""

    path: str  # as the host sees it; "" only for an empty CD-ROM
    device: str = "disk"  # disk | cdrom
    bus: str = "virtio"  # virtio | sata | ide | scsi
    target: str = "vda"  # vda, sda, hdc …
    format: str = "qcow2"  # qcow2 | raw; a CD-ROM is always raw
    size_bytes: int = 0  # for creating the volume; not in the domain XML
    readonly: bool = False  # a CD-ROM is always read-only


@dataclass(frozen=True)
class InterfaceSpec:
    """One network interface of a new domain."""

    type: str = "network"  # network | bridge | user | ethernet
    source: str = "default"  # network or bridge name; ignored for user/ethernet
    model: str = "virtio"
    mac: str = ""  # "" → a generated 52:54:00:xx:xx:xx


@dataclass(frozen=True)
class DomainSpec:
    """Everything a provisioning template decides about a new domain."""

    name: str
    uuid: str
    domain_type: str = "kvm"  # kvm | qemu | test
    arch: str = "x86_64"
    machine: str = "pc"
    memory_kib: int = 1048576  # <memory>: the maximum the guest boots with
    current_memory_kib: int = 0  # <currentMemory>; 0 → same as memory
    max_memory_kib: int = 0  # <maxMemory slots=…> for hot-plug; 0 → omitted
    memory_slots: int = 0
    vcpus: int = 1  # <vcpu> maximum
    vcpus_current: int = 0  # current= attribute; 0 → omitted (all)
    vcpu_placement: str = "static"  # static | auto
    cpuset: str = ""  # e.g. "1-4,^3,6"
    boot_order: tuple[str, ...] = ("hd",)  # hd | cdrom | network | fd, in order
    boot_menu: bool = False
    boot_menu_timeout_ms: int = 0  # only with boot_menu; 0 → no timeout attribute
    kernel: str = ""  # direct kernel boot when set
    initrd: str = ""
    cmdline: str = ""
    firmware: str = "bios"  # bios | uefi
    loader: str = ""  # uefi: <loader readonly='yes' type='pflash'>
    nvram_template: str = ""  # uefi: <nvram template='…'/>
    smbios_mode: str = ""  # "" | emulate | host | sysinfo
    bios_useserial: bool = False
    bios_reboot_timeout_ms: int | None = None  # -1 (never) … 65535
    clock_offset: str = "utc"  # utc | localtime
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    disks: tuple[DiskSpec, ...] = ()
    interfaces: tuple[InterfaceSpec, ...] = ()
    vnc: bool = False
    vnc_listen: str = "127.0.0.1"
    vnc_password: str = ""  # at most 8 characters: VNC's limit
    tablet: bool = False
    balloon: bool = True  # False → <memballoon model='none'/>
    balloon_period: int = 0  # seconds between balloon statistics; 0 → none
    serial_console: bool = True
    serial_log: str = ""  # when set: serial and console write to this file
    emulator: str = ""


class SpecError(ValueError):
    """A value that cannot go into a domain: the message says which and why.

    `field` names the spec attribute at fault ("cpuset", "disks[1].bus", …) so a form can
    show the message next to the right input.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


DOMAIN_TYPES = ("kvm", "qemu", "test")
BOOT_DEVICES = ("hd", "cdrom", "network", "fd")
FIRMWARES = ("bios", "uefi")
SMBIOS_MODES = ("", "emulate", "host", "sysinfo")
CLOCK_OFFSETS = ("utc", "localtime")
VCPU_PLACEMENTS = ("static", "auto")
POWEROFF_ACTIONS = ("destroy", "restart", "preserve", "rename-restart")
REBOOT_ACTIONS = POWEROFF_ACTIONS
CRASH_ACTIONS = POWEROFF_ACTIONS + ("coredump-destroy", "coredump-restart")
DISK_DEVICES = ("disk", "cdrom")
DISK_BUSES = ("virtio", "sata", "ide", "scsi")
CDROM_BUSES = ("sata", "ide", "scsi")
DISK_FORMATS = ("qcow2", "raw")
INTERFACE_TYPES = ("network", "bridge", "user", "ethernet")
# Installers booted from a CD-ROM or the network need about this much (the guide: 600 MB).
INSTALLER_MEMORY_KIB = 600 * 1024

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # arch, machine, NIC model
_TARGET_RE = re.compile(r"(vd|sd|hd|xvd)[a-z]{1,3}")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_CPUSET_ITEM_RE = re.compile(r"(\^)?(\d+)(?:-(\d+))?")
# lxml refuses these in text and attributes; nothing in a domain needs them.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_CPUSET_MAX = 16383  # libvirt's CPU mask holds 16384 CPUs


def _size(kib: int) -> str:
    return f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need_int(field: str, label: str, value, low: int | None = None, high: int | None = None):
    if not _is_int(value):
        raise SpecError(
            _("%(label)s (%(field)s) must be a whole number, not %(value)s.")
            % {"label": label, "field": field, "value": repr(value)},
            field,
        )
    if low is not None and value < low:
        raise SpecError(
            _("%(label)s (%(field)s) must be at least %(low)s; it is %(value)s.")
            % {"label": label, "field": field, "low": low, "value": value},
            field,
        )
    if high is not None and value > high:
        raise SpecError(
            _("%(label)s (%(field)s) must be at most %(high)s; it is %(value)s.")
            % {"label": label, "field": field, "high": high, "value": value},
            field,
        )


def _need_choice(field: str, label: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise SpecError(
            _("%(label)s (%(field)s) %(value)s is not one of %(allowed)s.")
            % {"label": label, "field": field, "value": repr(value), "allowed": allowed},
            field,
        )


def _need_path(field: str, label: str, value: str) -> None:
    if not value.startswith("/"):
        raise SpecError(
            _(
                "%(label)s (%(field)s) %(value)s must be an absolute path on the host, starting "
                "with '/'."
            )
            % {"label": label, "field": field, "value": repr(value)},
            field,
        )


def _check_strings(obj, prefix: str = "") -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str) and _CONTROL_RE.search(value):
            name = prefix + f.name
            raise SpecError(
                _("%(name)s contains a control character (a tab, newline or similar); remove it.")
                % {"name": name},
                name,
            )


def _check_cpuset(cpuset: str) -> None:
    bad = SpecError(
        _(
            "cpuset %(cpuset)s is not valid: use host CPU numbers and ranges separated by "
            "commas, with ^ to exclude one, as in '1-4,^3,6'."
        )
        % {"cpuset": repr(cpuset)},
        "cpuset",
    )
    included: set[int] = set()
    excluded: set[int] = set()
    for item in cpuset.split(","):
        match = _CPUSET_ITEM_RE.fullmatch(item)
        if not match:
            raise bad
        caret, first, last = match.group(1), int(match.group(2)), match.group(3)
        end = int(last) if last is not None else first
        if caret and last is not None:
            raise SpecError(
                _("cpuset %(cpuset)s: ^ excludes a single CPU ('^3'), not a range.")
                % {"cpuset": repr(cpuset)},
                "cpuset",
            )
        if end < first:
            raise SpecError(
                _("cpuset %(cpuset)s: the range %(first)s-%(end)s runs backwards.")
                % {"cpuset": repr(cpuset), "first": first, "end": end},
                "cpuset",
            )
        if end > _CPUSET_MAX:
            raise SpecError(
                _("cpuset %(cpuset)s: CPU %(end)s is beyond the highest, %(max)s.")
                % {"cpuset": repr(cpuset), "end": end, "max": _CPUSET_MAX},
                "cpuset",
            )
        (excluded if caret else included).update(range(first, end + 1))
    if not included - excluded:
        raise SpecError(
            _("cpuset %(cpuset)s leaves no CPU to run on.") % {"cpuset": repr(cpuset)}, "cpuset"
        )


def _check_memory(spec: DomainSpec) -> None:
    _need_int("memory_kib", _("Memory"), spec.memory_kib, low=1)
    _need_int("current_memory_kib", _("Current memory"), spec.current_memory_kib, low=0)
    if spec.current_memory_kib > spec.memory_kib:
        raise SpecError(
            _(
                "Current memory (current_memory_kib, %(current)s) cannot be more than memory "
                "(memory_kib, %(memory)s)."
            )
            % {"current": _size(spec.current_memory_kib), "memory": _size(spec.memory_kib)},
            "current_memory_kib",
        )
    _need_int("max_memory_kib", _("Maximum memory"), spec.max_memory_kib, low=0)
    _need_int("memory_slots", _("Memory slots"), spec.memory_slots, low=0)
    if spec.max_memory_kib:
        if spec.max_memory_kib < spec.memory_kib:
            raise SpecError(
                _(
                    "Maximum memory for hot-plug (max_memory_kib, %(maximum)s) cannot be less "
                    "than memory (memory_kib, %(memory)s)."
                )
                % {"maximum": _size(spec.max_memory_kib), "memory": _size(spec.memory_kib)},
                "max_memory_kib",
            )
        if not 1 <= spec.memory_slots <= 255:
            raise SpecError(
                _(
                    "Memory slots (memory_slots) must be between 1 and 255 when a maximum "
                    "memory for hot-plug is set; it is %(slots)s."
                )
                % {"slots": spec.memory_slots},
                "memory_slots",
            )
    elif spec.memory_slots:
        raise SpecError(
            _("Memory slots (memory_slots) need a maximum memory for hot-plug (max_memory_kib)."),
            "memory_slots",
        )


def _check_vcpus(spec: DomainSpec) -> None:
    _need_int("vcpus", _("vCPUs"), spec.vcpus, low=1)
    _need_int("vcpus_current", _("Current vCPUs"), spec.vcpus_current, low=0)
    if spec.vcpus_current > spec.vcpus:
        raise SpecError(
            _(
                "Current vCPUs (vcpus_current, %(current)s) cannot be more than the maximum "
                "vCPUs (vcpus, %(vcpus)s)."
            )
            % {"current": spec.vcpus_current, "vcpus": spec.vcpus},
            "vcpus_current",
        )
    _need_choice("vcpu_placement", _("vCPU placement"), spec.vcpu_placement, VCPU_PLACEMENTS)
    if spec.cpuset:
        _check_cpuset(spec.cpuset)


def _check_boot(spec: DomainSpec) -> None:
    if isinstance(spec.boot_order, str):
        raise SpecError(_("Boot order (boot_order) must be a list of devices."), "boot_order")
    seen: set[str] = set()
    for dev in spec.boot_order:
        _need_choice("boot_order", _("Boot device"), dev, BOOT_DEVICES)
        if dev in seen:
            raise SpecError(
                _("Boot order (boot_order) lists %(device)s twice.") % {"device": repr(dev)},
                "boot_order",
            )
        seen.add(dev)
    _need_int("boot_menu_timeout_ms", _("Boot menu timeout"), spec.boot_menu_timeout_ms, 0, 65535)
    if spec.kernel:
        _need_path("kernel", _("Kernel"), spec.kernel)
        if spec.initrd:
            _need_path("initrd", _("Initrd"), spec.initrd)
    else:
        for name, label in (("initrd", _("An initrd")), ("cmdline", _("A kernel command line"))):
            if getattr(spec, name):
                raise SpecError(
                    _(
                        "%(label)s (%(name)s) is only used for direct kernel boot: set the "
                        "kernel path too, or leave it empty."
                    )
                    % {"label": label, "name": name},
                    name,
                )
    _need_choice("firmware", _("Firmware"), spec.firmware, FIRMWARES)
    if spec.firmware == "uefi":
        if not spec.loader:
            raise SpecError(
                _(
                    "UEFI firmware needs a loader (loader): the path of the UEFI code, "
                    "such as /usr/share/OVMF/OVMF_CODE.fd."
                ),
                "loader",
            )
        _need_path("loader", _("Loader"), spec.loader)
        if spec.nvram_template:
            _need_path("nvram_template", _("NVRAM template"), spec.nvram_template)
    _need_choice("smbios_mode", _("SMBIOS mode"), spec.smbios_mode, SMBIOS_MODES)
    if spec.bios_reboot_timeout_ms is not None:
        _need_int(
            "bios_reboot_timeout_ms",
            _("BIOS reboot timeout"),
            spec.bios_reboot_timeout_ms,
            -1,
            65535,
        )
    if spec.bios_useserial and not spec.serial_console:
        raise SpecError(
            _(
                "BIOS output on the serial port (bios_useserial) needs a serial console "
                "(serial_console)."
            ),
            "bios_useserial",
        )


def _check_disks(spec: DomainSpec) -> None:
    targets: set[str] = set()
    for i, disk in enumerate(spec.disks):
        at = f"disks[{i}]"
        if not isinstance(disk, DiskSpec):
            raise SpecError(_("%(at)s is not a disk description.") % {"at": at}, at)
        _check_strings(disk, at + ".")
        _need_choice(
            f"{at}.device", _("Disk %(n)d device") % {"n": i + 1}, disk.device, DISK_DEVICES
        )
        _need_choice(f"{at}.bus", _("Disk %(n)d bus") % {"n": i + 1}, disk.bus, DISK_BUSES)
        if disk.device == "cdrom" and disk.bus not in CDROM_BUSES:
            raise SpecError(
                _("A CD-ROM cannot sit on the %(bus)s bus (%(at)s.bus): use sata, ide or scsi.")
                % {"bus": repr(disk.bus), "at": at},
                f"{at}.bus",
            )
        if not _TARGET_RE.fullmatch(disk.target):
            raise SpecError(
                _(
                    "Disk %(n)d target (%(at)s.target) %(target)s is not a device name "
                    "such as vda, sda or hdc."
                )
                % {"n": i + 1, "at": at, "target": repr(disk.target)},
                f"{at}.target",
            )
        if disk.target in targets:
            raise SpecError(
                _("Two disks use the target %(target)s (%(at)s.target); each needs its own.")
                % {"target": repr(disk.target), "at": at},
                f"{at}.target",
            )
        targets.add(disk.target)
        if disk.device == "disk":
            _need_choice(
                f"{at}.format", _("Disk %(n)d format") % {"n": i + 1}, disk.format, DISK_FORMATS
            )
            if not disk.path:
                raise SpecError(
                    _("Disk %(n)d (%(at)s.path) needs a path; only a CD-ROM may be empty.")
                    % {"n": i + 1, "at": at},
                    f"{at}.path",
                )
        if disk.path:
            _need_path(f"{at}.path", _("Disk %(n)d path") % {"n": i + 1}, disk.path)
        _need_int(f"{at}.size_bytes", _("Disk %(n)d size") % {"n": i + 1}, disk.size_bytes, low=0)


def _check_interfaces(spec: DomainSpec) -> None:
    macs: set[str] = set()
    for i, nic in enumerate(spec.interfaces):
        at = f"interfaces[{i}]"
        if not isinstance(nic, InterfaceSpec):
            raise SpecError(_("%(at)s is not an interface description.") % {"at": at}, at)
        _check_strings(nic, at + ".")
        _need_choice(
            f"{at}.type", _("Interface %(n)d type") % {"n": i + 1}, nic.type, INTERFACE_TYPES
        )
        if nic.type == "network" and (not nic.source or "/" in nic.source):
            raise SpecError(
                _(
                    "Interface %(n)d (%(at)s.source) needs the name of a libvirt network, "
                    "such as 'default'."
                )
                % {"n": i + 1, "at": at},
                f"{at}.source",
            )
        if nic.type == "bridge" and not re.fullmatch(r"[^/\s:]{1,15}", nic.source):
            raise SpecError(
                _(
                    "Interface %(n)d (%(at)s.source) needs the name of a host bridge "
                    "(up to 15 characters, no spaces or slashes), such as 'br0'."
                )
                % {"n": i + 1, "at": at},
                f"{at}.source",
            )
        if not _TOKEN_RE.fullmatch(nic.model):
            raise SpecError(
                _(
                    "Interface %(n)d model (%(at)s.model) %(model)s is not a model name "
                    "such as virtio or e1000."
                )
                % {"n": i + 1, "at": at, "model": repr(nic.model)},
                f"{at}.model",
            )
        if nic.mac:
            if not _MAC_RE.fullmatch(nic.mac):
                raise SpecError(
                    _(
                        "Interface %(n)d MAC address (%(at)s.mac) %(mac)s is not six pairs "
                        "of hex digits separated by colons, as in 52:54:00:12:34:56."
                    )
                    % {"n": i + 1, "at": at, "mac": repr(nic.mac)},
                    f"{at}.mac",
                )
            if int(nic.mac[:2], 16) & 1:
                raise SpecError(
                    _(
                        "Interface %(n)d MAC address (%(at)s.mac) %(mac)s is a multicast "
                        "address (odd first byte); a network card needs an even first byte."
                    )
                    % {"n": i + 1, "at": at, "mac": repr(nic.mac)},
                    f"{at}.mac",
                )
            if nic.mac.lower() in macs:
                raise SpecError(
                    _("Two interfaces use the MAC address %(mac)s (%(at)s.mac).")
                    % {"mac": nic.mac.lower(), "at": at},
                    f"{at}.mac",
                )
            macs.add(nic.mac.lower())


def validate_spec(spec: DomainSpec) -> None:
    """Refuse, with a SpecError saying which field and why, what cannot go into a domain.

    Settings that only matter beside another are ignored, not refused, when that other is
    off (a template keeps them while the user toggles): the boot menu timeout without the
    boot menu, the loader and NVRAM template with BIOS firmware, the balloon statistics
    period without a balloon, the source of a user or ethernet interface.
    """
    _check_strings(spec)
    if not isinstance(spec.name, str) or not _NAME_RE.fullmatch(spec.name):
        raise SpecError(
            _(
                "Name (name) %(name)s is not allowed: use 1–100 letters, digits, dots, "
                "dashes or underscores, starting with a letter or digit."
            )
            % {"name": repr(spec.name)},
            "name",
        )
    try:
        uuidlib.UUID(spec.uuid)
    except (ValueError, TypeError, AttributeError):
        raise SpecError(
            _(
                "UUID (uuid) %(uuid)s is not a valid UUID "
                "(32 hex digits, as in 4c5626aa-9ac5-2ccc-8f1e-0123456789ab)."
            )
            % {"uuid": repr(spec.uuid)},
            "uuid",
        ) from None
    _need_choice("domain_type", _("Domain type"), spec.domain_type, DOMAIN_TYPES)
    for name, label in (("arch", _("Architecture")), ("machine", _("Machine type"))):
        if not _TOKEN_RE.fullmatch(getattr(spec, name)):
            raise SpecError(
                _("%(label)s (%(name)s) %(value)s is not a valid name.")
                % {"label": label, "name": name, "value": repr(getattr(spec, name))},
                name,
            )
    _check_memory(spec)
    _check_vcpus(spec)
    _check_boot(spec)
    _need_choice("clock_offset", _("Clock offset"), spec.clock_offset, CLOCK_OFFSETS)
    _need_choice("on_poweroff", _("Action on power-off"), spec.on_poweroff, POWEROFF_ACTIONS)
    _need_choice("on_reboot", _("Action on reboot"), spec.on_reboot, REBOOT_ACTIONS)
    _need_choice("on_crash", _("Action on crash"), spec.on_crash, CRASH_ACTIONS)
    _check_disks(spec)
    _check_interfaces(spec)
    if spec.vnc:
        try:
            listen = ipaddress.ip_address(spec.vnc_listen)
        except ValueError:
            raise SpecError(
                _(
                    "VNC listen address (vnc_listen) %(listen)s is not an IP address "
                    "such as 127.0.0.1 or the host's management address."
                )
                % {"listen": repr(spec.vnc_listen)},
                "vnc_listen",
            ) from None
        if listen.is_unspecified:
            # Every interface: anyone on the network could reach the screen around the
            # panel's consoles (and the panel refuses to open a console to it).
            raise SpecError(
                _(
                    "VNC listen address (vnc_listen) %(listen)s means every interface; "
                    "use 127.0.0.1 or the host's management address."
                )
                % {"listen": spec.vnc_listen},
                "vnc_listen",
            )
    _need_int("balloon_period", _("Balloon statistics period"), spec.balloon_period, low=0)
    if spec.serial_log:
        if not spec.serial_console:
            raise SpecError(
                _("A serial log file (serial_log) needs the serial console (serial_console) on."),
                "serial_log",
            )
        _need_path("serial_log", _("Serial log"), spec.serial_log)
    if spec.emulator:
        _need_path("emulator", _("Emulator"), spec.emulator)


def generate_mac() -> str:
    """A random MAC address in QEMU's locally administered 52:54:00 range, lower-case."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _build_os(root: etree._Element, spec: DomainSpec) -> None:
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=spec.machine)
    if spec.firmware == "uefi":
        _sub(os_el, "loader", spec.loader, readonly="yes", type="pflash")
        if spec.nvram_template:
            _sub(os_el, "nvram", template=spec.nvram_template)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    for dev in spec.boot_order:
        _sub(os_el, "boot", dev=dev)
    if spec.boot_menu:
        menu = _sub(os_el, "bootmenu", enable="yes")
        if spec.boot_menu_timeout_ms:
            menu.set("timeout", str(spec.boot_menu_timeout_ms))
    if spec.bios_useserial or spec.bios_reboot_timeout_ms is not None:
        bios = _sub(os_el, "bios")
        if spec.bios_useserial:
            bios.set("useserial", "yes")
        if spec.bios_reboot_timeout_ms is not None:
            bios.set("rebootTimeout", str(spec.bios_reboot_timeout_ms))
    if spec.smbios_mode:
        _sub(os_el, "smbios", mode=spec.smbios_mode)


def _build_disk(devices: etree._Element, disk: DiskSpec) -> None:
    cdrom = disk.device == "cdrom"
    block = disk.path.startswith("/dev/")  # a host CD-ROM drive or a block device
    el = _sub(devices, "disk", type="block" if block else "file", device=disk.device)
    _sub(el, "driver", name="qemu", type="raw" if cdrom else disk.format)
    if disk.path:
        _sub(el, "source", **({"dev": disk.path} if block else {"file": disk.path}))
    _sub(el, "target", dev=disk.target, bus=disk.bus)
    if cdrom or disk.readonly:
        _sub(el, "readonly")


def _build_interface(devices: etree._Element, nic: InterfaceSpec) -> None:
    el = _sub(devices, "interface", type=nic.type)
    _sub(el, "mac", address=(nic.mac or generate_mac()).lower())
    if nic.type == "network":
        _sub(el, "source", network=nic.source)
    elif nic.type == "bridge":
        _sub(el, "source", bridge=nic.source)
    _sub(el, "model", type=nic.model)


def _build_chardevs(devices: etree._Element, spec: DomainSpec) -> None:
    for tag in ("serial", "console"):
        chardev = _sub(devices, tag, type="file" if spec.serial_log else "pty")
        if spec.serial_log:
            _sub(chardev, "source", path=spec.serial_log, append="on")
        _sub(chardev, "target", **({"type": "serial"} if tag == "console" else {}), port="0")


def build_domain(spec: DomainSpec) -> str:
    """The domain XML of a spec, validated first (SpecError), built as a tree with lxml.

    An interface without a MAC gets a fresh random one on every call.
    """
    validate_spec(spec)
    root = etree.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", str(uuidlib.UUID(spec.uuid)))
    if spec.max_memory_kib:
        _sub(root, "maxMemory", spec.max_memory_kib, slots=str(spec.memory_slots), unit="KiB")
    _sub(root, "memory", spec.memory_kib, unit="KiB")
    _sub(root, "currentMemory", spec.current_memory_kib or spec.memory_kib, unit="KiB")
    vcpu = _sub(root, "vcpu", spec.vcpus, placement=spec.vcpu_placement)
    if spec.cpuset:
        vcpu.set("cpuset", spec.cpuset)
    if spec.vcpus_current:
        vcpu.set("current", str(spec.vcpus_current))
    _build_os(root, spec)
    if spec.arch in ("x86_64", "i686"):
        # Without ACPI a guest ignores a clean shutdown request.
        features = _sub(root, "features")
        _sub(features, "acpi")
        _sub(features, "apic")
    _sub(root, "clock", offset=spec.clock_offset)
    _sub(root, "on_poweroff", spec.on_poweroff)
    _sub(root, "on_reboot", spec.on_reboot)
    _sub(root, "on_crash", spec.on_crash)
    devices = _sub(root, "devices")
    if spec.emulator:
        _sub(devices, "emulator", spec.emulator)
    for disk in spec.disks:
        _build_disk(devices, disk)
    for nic in spec.interfaces:
        _build_interface(devices, nic)
    if spec.serial_console:
        _build_chardevs(devices, spec)
    if spec.tablet:
        _sub(devices, "input", type="tablet", bus="usb")
    if spec.vnc:
        graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen=spec.vnc_listen)
        if spec.vnc_password:
            graphics.set("passwd", spec.vnc_password)
    balloon = _sub(devices, "memballoon", model="virtio" if spec.balloon else "none")
    if spec.balloon and spec.balloon_period:
        _sub(balloon, "stats", period=str(spec.balloon_period))
    return to_string(root)


def low_memory_warning(spec: DomainSpec) -> str:
    """A warning when an installer booted from CD-ROM or network gets under 600 MiB, else "".

    The install method is read from the spec: no kernel, and a cdrom or network boot device.
    """
    if spec.kernel:
        return ""
    current = spec.current_memory_kib or spec.memory_kib
    if current >= INSTALLER_MEMORY_KIB:
        return ""
    if "cdrom" in spec.boot_order:
        words = _(
            "The VM starts with %(memory)s of memory. Installers booted from a CD-ROM often "
            "need about 600 MiB and may crash or fail below that; give it more memory for "
            "the install and lower it afterwards."
        )
    elif "network" in spec.boot_order:
        words = _(
            "The VM starts with %(memory)s of memory. Installers booted from the network "
            "(PXE) often need about 600 MiB and may crash or fail below that; give it more "
            "memory for the install and lower it afterwards."
        )
    else:
        return ""
    return words % {"memory": _size(current)}


def _parse_domain(xml: str) -> etree._Element:
    root = parse(xml)
    if root.tag != "domain":
        raise XMLError(_("The XML is a <%(found)s>, not a <domain>.") % {"found": root.tag})
    return root


def xml_diff(before: str, after: str) -> str:
    """A unified diff of two XML documents, both normalised through the hardened parser.

    "" when they differ only in layout or quoting.
    """
    lines = [to_string(parse(text)).splitlines() for text in (before, after)]
    return "\n".join(
        difflib.unified_diff(lines[0], lines[1], fromfile="before", tofile="after", lineterm="")
    )


# libvirt's order of the children of <domain> and <os>, to put a new element in its place.
_DOMAIN_CHILDREN = (
    "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
    "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads",
    "cputune", "numatune", "resource", "sysinfo", "bootloader", "bootloader_args", "os",
    "idmap", "features", "cpu", "clock", "on_poweroff", "on_reboot", "on_crash",
    "on_lockfailure", "pm", "perf", "devices", "seclabel",
)  # fmt: skip
_OS_CHILDREN = (
    "type", "firmware", "loader", "nvram", "kernel", "initrd", "cmdline", "dtb", "acpi",
    "boot", "bootmenu", "bios", "smbios", "init", "initarg", "initenv", "initdir",
)  # fmt: skip


def _place(parent: etree._Element, tag: str, order: tuple[str, ...]) -> etree._Element:
    """A new <tag> in `parent`, before the first child libvirt orders after it."""
    el = etree.Element(tag)
    rank = order.index(tag)
    for i, child in enumerate(parent):
        if isinstance(child.tag, str) and child.tag in order and order.index(child.tag) > rank:
            parent.insert(i, el)
            return el
    parent.append(el)
    return el


def _set_action(root: etree._Element, tag: str, action: str) -> None:
    el = root.find(tag)
    if el is None:
        el = _place(root, tag, _DOMAIN_CHILDREN)
    el.text = action


def set_boot_from_disk(xml: str) -> str:
    """The second phase of a direct kernel boot: boot the installed disk.

    Drops <kernel>, <initrd> and <cmdline>, makes hd the only boot device (per-device
    <boot order> elements go too, since libvirt refuses them beside <os><boot>), and sets
    on_reboot back to restart.
    """
    root = _parse_domain(xml)
    os_el = root.find("os")
    if os_el is None:
        raise XMLError(_("The XML definition has no <os> element."))
    for tag in ("kernel", "initrd", "cmdline", "boot"):
        for el in os_el.findall(tag):
            os_el.remove(el)
    for el in root.findall("devices/*/boot"):
        el.getparent().remove(el)
    _place(os_el, "boot", _OS_CHILDREN).set("dev", "hd")
    _set_action(root, "on_reboot", "restart")
    return to_string(root)


def phase_one_install_xml(xml: str) -> str:
    """The first phase of an install: the same domain, ended (not rebooted) by the
    installer's final reboot or power-off, so the panel can switch it to boot from disk."""
    root = _parse_domain(xml)
    _set_action(root, "on_poweroff", "destroy")
    _set_action(root, "on_reboot", "destroy")
    return to_string(root)


# --- resize readers: the vCPU and memory counts of a domain XML -----------------------


@dataclass(frozen=True)
class VcpuCounts:
    current: int
    maximum: int


@dataclass(frozen=True)
class MemoryCounts:
    current_kib: int  # <currentMemory>: what the balloon leaves the guest
    maximum_kib: int  # <memory>: what the guest boots with, the ceiling of the balloon


def vcpu_counts(xml: str) -> VcpuCounts:
    """<vcpu current='N'>M</vcpu>: N vCPUs online (M when `current` is absent) of M."""
    vcpu = parse(xml).find("vcpu")
    try:
        maximum = int((vcpu.text or "").strip()) if vcpu is not None else 1
        current = int(vcpu.get("current", maximum)) if vcpu is not None else maximum
    except ValueError:
        raise XMLError(_("The <vcpu> of the XML definition is not a number.")) from None
    return VcpuCounts(current=current, maximum=maximum)


def memory_counts(xml: str) -> MemoryCounts:
    """<memory> is the maximum, <currentMemory> the current amount (the maximum if absent)."""
    root = parse(xml)
    try:
        maximum = _kib(root.find("memory"))
        current = _kib(root.find("currentMemory")) or maximum
    except ValueError:
        raise XMLError(_("The <memory> of the XML definition is not a number.")) from None
    return MemoryCounts(current_kib=current, maximum_kib=maximum)


# --- raw XML editing: what a hand-edited domain XML must be before it goes to libvirt -


def edited_domain_identity(text: str) -> Identity:
    """Name and UUID of a domain XML typed by a user; XMLError, in plain words, when it is
    malformed, is not a <domain>, or declares a DOCTYPE or entities.

    Domain XML never needs a DOCTYPE, and entities are how XXE and "billion laughs" get in:
    the hardened parser leaves them unexpanded, and they are not passed on to libvirt,
    whose own parser might treat them otherwise.
    """
    root = parse(text)
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise XMLError(_("A DOCTYPE or entity declarations are not allowed in the XML definition."))
    if any(True for _el in root.iter(etree.Entity)):
        raise XMLError(_("Entity references are not allowed in the XML definition."))
    if root.tag != "domain":
        raise XMLError(_("The XML is a <%(found)s>, not a <domain>.") % {"found": root.tag})
    return Identity(
        name=(root.findtext("name") or "").strip(),
        uuid=(root.findtext("uuid") or "").strip(),
        memory_kib=0,  # not read: the editor compares identity only
    )


# Attributes that carry a secret in domain XML: graphics passwords (VNC, SPICE, RDP) and
# any `password`-like attribute a device may grow. What libvirt shows only with
# VIR_DOMAIN_XML_SECURE.
_SECRET_ATTRIBUTES = frozenset({"passwd", "password", "passphrase"})


def _secret_attributes(root: etree._Element):
    for el in root.iter():
        if isinstance(el.tag, str):
            for name in el.attrib:
                if name.lower() in _SECRET_ATTRIBUTES:
                    yield el, name


def redact_secrets(xml: str) -> str:
    """The XML without its secrets (graphics passwords and the like), for the record.

    An edited XML is read with its secrets, so that saving keeps them; what the operation
    history shows to every member of the team must not carry them.
    """
    root = parse(xml)
    for el, name in list(_secret_attributes(root)):
        del el.attrib[name]
    return to_string(root)


def _element_path(el: etree._Element) -> tuple[tuple[str, int], ...]:
    """Where `el` sits: each ancestor's tag and its place among same-tag siblings."""
    steps = []
    while el.getparent() is not None:
        parent = el.getparent()
        same = [c for c in parent if c.tag == el.tag]
        steps.append((el.tag, same.index(el)))
        el = parent
    return tuple(reversed(steps))


def restore_secrets(redacted: str, saved: str) -> str:
    """`redacted` (a recorded edit, its secrets taken out) with the secrets of `saved` put
    back on the elements at the same place that lack them, so that editing a recorded text
    again does not drop a graphics password the person never saw removed."""
    root = parse(redacted)
    wanted: dict[tuple, dict[str, str]] = {}
    for el, name in _secret_attributes(parse(saved)):
        wanted.setdefault(_element_path(el), {})[name] = el.attrib[name]
    for el in root.iter():
        if isinstance(el.tag, str):
            for name, value in wanted.get(_element_path(el), {}).items():
                if name not in el.attrib:  # typed anew: the person's own
                    el.set(name, value)
    return to_string(root)


def secret_values(xml: str) -> list[str]:
    """The secrets written in `xml`, longest first, to scrub from text that may quote them
    (libvirt's error messages). [] for XML that does not parse."""
    try:
        root = parse(xml)
    except XMLError:
        return []
    values = {el.attrib[name] for el, name in _secret_attributes(root) if el.attrib[name]}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every one of `secrets` replaced by asterisks."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# --- host capabilities: what a host's libvirt says it offers --------------------------


@dataclass(frozen=True)
class CapabilitiesFacts:
    """The parts of a capabilities document (virConnectGetCapabilities) the panel uses."""

    # <guest><arch><domain type=…>, in the document's order without repeats: the first is
    # what the host offers first (QEMU lists qemu before kvm, the test driver only test).
    domain_types: tuple[str, ...]
    # <host><migration_features>: libvirt writes it only for drivers that migrate at all.
    migration: bool


@dataclass(frozen=True)
class DomainCapabilitiesFacts:
    """The parts of a domain capabilities document (virConnectGetDomainCapabilities)."""

    # <devices><graphics supported='yes'><enum name='type'>: vnc, spice, sdl …
    graphics: tuple[str, ...]


def _parse_root(xml: str, tag: str) -> etree._Element:
    root = parse(xml)
    if root.tag != tag:
        raise XMLError(
            _("The XML is a <%(found)s>, not a <%(tag)s>.") % {"found": root.tag, "tag": tag}
        )
    return root


def read_capabilities(xml: str) -> CapabilitiesFacts:
    """Domain types and migration support from a host's capabilities XML."""
    root = _parse_root(xml, "capabilities")
    types: list[str] = []
    for domain in root.iterfind("guest/arch/domain"):
        kind = domain.get("type", "")
        if kind and kind not in types:
            types.append(kind)
    return CapabilitiesFacts(
        domain_types=tuple(types),
        migration=root.find("host/migration_features") is not None,
    )


def read_domain_capabilities(xml: str) -> DomainCapabilitiesFacts:
    """Graphics types from a host's domain capabilities XML.

    A device kind with supported='no' offers nothing, whatever values it lists.
    """
    root = _parse_root(xml, "domainCapabilities")
    graphics: tuple[str, ...] = ()
    el = root.find("devices/graphics")
    if el is not None and el.get("supported") == "yes":
        graphics = tuple(
            (value.text or "").strip()
            for value in el.iterfind("enum[@name='type']/value")
            if (value.text or "").strip()
        )
    return DomainCapabilitiesFacts(graphics=graphics)


# --- what a domain reaches on its host: read for the edit policy (rules.py) ------------


@dataclass(frozen=True)
class Platform:
    """One domain type on one architecture a host runs, with its emulators and machines
    (capabilities' <guest><arch><domain>)."""

    domain_type: str
    arch: str
    os_type: str
    emulators: tuple[str, ...]
    machines: tuple[str, ...]


def read_platforms(xml: str) -> tuple[Platform, ...]:
    """Every (domain type, architecture) of a host's capabilities XML. A <domain> may name
    an emulator and machines of its own; otherwise its <arch>'s apply."""
    root = _parse_root(xml, "capabilities")
    found: list[Platform] = []

    def machines_of(el: etree._Element) -> list[str]:
        names = []
        for machine in el.iterfind("machine"):
            names += [(machine.text or "").strip(), machine.get("canonical", "")]
        return [n for n in names if n]

    for guest in root.iterfind("guest"):
        os_type = (guest.findtext("os_type") or "").strip()
        for arch in guest.iterfind("arch"):
            arch_emulator = (arch.findtext("emulator") or "").strip()
            for domain in arch.iterfind("domain"):
                emulator = (domain.findtext("emulator") or "").strip() or arch_emulator
                found.append(
                    Platform(
                        domain_type=domain.get("type", ""),
                        arch=arch.get("name", ""),
                        os_type=os_type,
                        emulators=(emulator,) if emulator else (),
                        machines=tuple(machines_of(domain) or machines_of(arch)),
                    )
                )
    return tuple(found)


@dataclass(frozen=True)
class DomainReach:
    """What a domain XML makes its host do or touch, beyond the guest itself.

    `paths` are (where, absolute path) for every host path the XML names, outside its
    description and metadata: disks, CD-ROMs, kernel, initrd, loader, nvram, serial and
    console files and sockets, filesystems, device backends. The other fields hold the
    parts a team admin may not add or change, each as its serialised XML.
    """

    domain_type: str
    arch: str
    machine: str
    emulator: str
    paths: tuple[tuple[str, str], ...]
    network_disks: tuple[str, ...]  # disks served over the network (rbd, iscsi, nbd, http…)
    foreign: tuple[str, ...]  # elements in another namespace (qemu:commandline …)
    hostdevs: tuple[str, ...]  # host devices passed through to the guest
    seclabels: tuple[str, ...]  # security labels (type='none' turns confinement off)
    scripts: tuple[str, ...]  # interface scripts, run on the host


# Elements whose text or subtree is the user's prose or data, never a host path.
_NOT_HOST_PATHS = frozenset({"description", "title", "metadata", "emulator"})


def _where(el: etree._Element, root: etree._Element) -> str:
    parts = []
    while el is not None and el is not root:
        parts.append(el.tag if isinstance(el.tag, str) else "?")
        el = el.getparent()
    return "/".join(reversed(parts))


def read_domain_reach(xml: str) -> DomainReach:
    """`DomainReach` of a domain XML (parsed with the hardened parser)."""
    root = _parse_domain_root(xml)
    paths: list[tuple[str, str]] = []
    foreign: list[str] = []

    def walk(el: etree._Element) -> None:
        for child in el:
            if not isinstance(child.tag, str):
                continue  # comments, processing instructions
            if child.tag.startswith("{"):
                foreign.append(to_string(child))
                continue
            if child.tag in _NOT_HOST_PATHS:
                continue
            where = _where(child, root)
            for name, value in child.attrib.items():
                if value.strip().startswith("/"):
                    paths.append((f"{where}@{name}", value.strip()))
            text = (child.text or "").strip()
            if text.startswith("/"):
                paths.append((where, text))
            walk(child)

    walk(root)
    os_type = root.find("os/type")
    return DomainReach(
        domain_type=root.get("type", ""),
        arch=os_type.get("arch", "") if os_type is not None else "",
        machine=os_type.get("machine", "") if os_type is not None else "",
        emulator=(root.findtext("devices/emulator") or "").strip(),
        paths=tuple(paths),
        network_disks=tuple(to_string(d) for d in root.iterfind("devices/disk[@type='network']")),
        foreign=tuple(foreign),
        hostdevs=tuple(
            to_string(el)
            for el in root.iter("hostdev", "interface")
            if el.tag == "hostdev" or el.get("type") == "hostdev"
        ),
        seclabels=tuple(to_string(el) for el in root.iter("seclabel")),
        scripts=tuple(to_string(el) for el in root.iterfind("devices/interface/script")),
    )


# What a domain only reads and may share with others: the files it boots from.
_SHARED_OS_FILES = frozenset({"os/kernel", "os/initrd", "os/loader", "os/dtb"})


def private_paths(xml: str, shareable: bool = True) -> frozenset[str]:
    """The host paths a domain keeps to itself: every path `read_domain_reach` finds but
    those it only reads, which other domains may read too (a CD-ROM or read-only disk,
    a disk's backing image, the kernel, initrd and firmware it boots from), and the
    terminals the host hands a running domain (a pty's /dev/pts/N, another host's
    number for another domain). Another domain that names one of these reaches this
    one's data: its disks, its logs, its firmware variables, its sockets. Without
    `shareable`, its disks marked <shareable/> (shared on purpose) are left out too."""
    root = _parse_domain_root(xml)
    paths: set[str] = set()

    def shared(el: etree._Element, where: str) -> bool:
        if where in _SHARED_OS_FILES or el.tag == "backingStore":
            return True
        if where.startswith("devices/") and el.get("type") == "pty":
            return True
        return where == "devices/disk" and (
            el.get("device", "disk") in ("cdrom", "floppy")
            or el.find("readonly") is not None
            or (not shareable and el.find("shareable") is not None)
        )

    def walk(el: etree._Element) -> None:
        for child in el:
            if not isinstance(child.tag, str) or child.tag.startswith("{"):
                continue
            if child.tag in _NOT_HOST_PATHS:
                continue
            where = _where(child, root)
            if shared(child, where):
                continue
            for value in child.attrib.values():
                if value.strip().startswith("/"):
                    paths.add(value.strip())
            text = (child.text or "").strip()
            if text.startswith("/"):
                paths.add(text)
            walk(child)

    walk(root)
    return frozenset(paths)


def _parse_domain_root(xml: str) -> etree._Element:
    return _parse_root(xml, "domain")


# --- consoles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Graphics:
    type: str  # vnc, spice …
    listen: tuple[str, ...]  # the addresses it listens on ("" for none given)
    port: int  # -1 while autoport has not chosen one


@dataclass(frozen=True)
class ConsoleDevices:
    graphics: tuple[Graphics, ...]
    serial: bool  # a serial port or console libvirt can open a stream to


# Addresses that mean "every interface": a display there can be reached around the panel.
ANY_ADDRESS = frozenset({"0.0.0.0", "::", "[::]", "*"})


def console_devices(xml: str) -> ConsoleDevices:
    """The domain's displays and whether it has a text console (live XML)."""
    root = parse(xml)
    graphics = []
    for g in root.iterfind("devices/graphics"):
        listen = [g.get("listen") or ""]
        listen += [el.get("address") or "" for el in g.iterfind("listen")]
        graphics.append(
            Graphics(
                type=g.get("type", ""),
                listen=tuple(sorted({a for a in listen if a})),
                port=int(g.get("port") or -1)
                if (g.get("port") or "-1").lstrip("-").isdigit()
                else -1,
            )
        )
    serial = any(
        el.get("type") == "pty"
        for el in [*root.iterfind("devices/serial"), *root.iterfind("devices/console")]
    )
    return ConsoleDevices(graphics=tuple(graphics), serial=serial)


def graphics_listen_moved(xml: str, old: str, new: str) -> str | None:
    """The domain XML with every display listening on `old` listening on `new` instead, or
    None when none listens on `old`."""
    root = parse(xml)
    moved = False
    for g in root.iterfind("devices/graphics"):
        if g.get("listen") == old:
            g.set("listen", new)
            moved = True
        for listen in g.iterfind("listen"):
            if listen.get("address") == old:
                listen.set("address", new)
                moved = True
    return to_string(root) if moved else None


def vnc_password_update(xml: str, password: str, valid_to: str) -> str:
    """The domain's <graphics type='vnc'> with a new password valid until `valid_to`
    (libvirt's YYYY-MM-DDTHH:MM:SS, UTC), for updateDeviceFlags on the live domain."""
    for g in parse(xml).iterfind("devices/graphics"):
        if g.get("type") == "vnc":
            g.set("passwd", password)
            g.set("passwdValidTo", valid_to)
            return to_string(g)
    raise ValueError("no VNC display")


# --- snapshots and clones -----------------------------------------------------------------


def snapshot_facts(xml: str) -> dict:
    """What a <domainsnapshot> (libvirt's getXMLDesc) says of itself: name, description,
    created_at (unix seconds), state (libvirt's words: running, paused, shutoff,
    disk-snapshot …), memory (it holds the guest's memory, so a revert brings the guest
    back running or paused), disk_only (an external disk-only snapshot) and parent (its
    parent's name, "" for a root)."""
    root = _parse_root(xml, "domainsnapshot")
    state = (root.findtext("state") or "").strip()
    created = (root.findtext("creationTime") or "").strip()
    memory_el = root.find("memory")
    memory_mode = memory_el.get("snapshot", "") if memory_el is not None else ""
    external_disks = any(disk.get("snapshot") == "external" for disk in root.iterfind("disks/disk"))
    if memory_mode:
        memory = memory_mode in ("internal", "external")
    else:
        # Older libvirt writes no <memory>: its snapshots of a running or paused guest
        # held the memory.
        memory = state in ("running", "paused")
    return {
        "name": (root.findtext("name") or "").strip(),
        "description": root.findtext("description") or "",
        "created_at": int(created) if created.isdigit() else 0,
        "state": state,
        "memory": memory,
        "disk_only": state == "disk-snapshot" or (memory_mode == "no" and external_disks),
        "parent": (root.findtext("parent/name") or "").strip(),
    }


@dataclass(frozen=True)
class DiskSource:
    """One <disk> of a domain as snapshots and clones see it."""

    target: str  # vda, hdc …
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, volume, network …
    path: str  # <source file> or <source dev>; "" otherwise
    pool: str  # <source pool> of a volume disk
    volume: str  # <source volume> of a volume disk
    format: str  # <driver type>, "" when not written
    writable: bool  # device='disk', neither <readonly/> nor <shareable/>
    bus: str = ""  # <target bus>: virtio, sata …
    readonly: bool = False
    network: str = ""  # "protocol:name" of a network disk

    @property
    def key(self) -> str:
        """How `clone_xml`'s `paths` name this disk's source: its path, or "pool/volume"
        for a volume disk; "" when it has none (an empty drive, a network disk)."""
        if self.path:
            return self.path
        if self.pool and self.volume:
            return f"{self.pool}/{self.volume}"
        return ""


def disk_sources(xml: str) -> list[DiskSource]:
    """Every <disk> of a domain XML with its source, format and whether the guest writes
    to it."""
    result = []
    for disk in parse(xml).iterfind("devices/disk"):
        source = disk.find("source")
        driver = disk.find("driver")
        target = disk.find("target")
        device = disk.get("device", "disk")
        get = source.get if source is not None else (lambda _name, default="": default)
        result.append(
            DiskSource(
                target=target.get("dev", "") if target is not None else "",
                device=device,
                type=disk.get("type", "file"),
                path=get("file", "") or get("dev", ""),
                pool=get("pool", ""),
                volume=get("volume", ""),
                format=driver.get("type", "") if driver is not None else "",
                writable=device == "disk"
                and disk.find("readonly") is None
                and disk.find("shareable") is None,
                bus=target.get("bus", "") if target is not None else "",
                readonly=disk.find("readonly") is not None,
                network=f"{get('protocol', '')}:{get('name', '')}" if get("protocol", "") else "",
            )
        )
    return result


def disk_formats(xml: str) -> list[tuple[str, str, bool]]:
    """(target, <driver type> or "", writable) of every disk: what decides whether an
    internal snapshot can hold them (only qcow2 can)."""
    return [(d.target, d.format, d.writable) for d in disk_sources(xml)]


def volume_format(xml: str) -> str:
    """A storage volume's format (<target><format type>), "" when it does not say."""
    el = parse(xml).find("target/format")
    return el.get("type", "") if el is not None else ""


def clone_xml(xml: str, new_name: str, new_uuid: str, paths: dict[str, str]) -> str:
    """A copy of a domain's XML to define as a new domain.

    New <name> and <uuid> (and the SMBIOS UUID where the XML sets one, which libvirt
    requires to match); no <mac> on any <interface> (libvirt makes new ones); an empty
    <genid> (libvirt makes a new one). Each disk whose source `paths` names (by
    `DiskSource.key`) gets the new path — a volume disk keeps its pool and takes the new
    path's last part as its volume name — and loses a <backingStore> it had, since the copy
    stands alone. An <nvram> that names a file loses it: libvirt makes a fresh one from its
    template (the <nvram template> kept where there is one). A serial port's log file and a
    file-backed serial or console get a file of their own (the original's name replaced by
    the new one in the file name). Everything else is kept as it is: graphics passwords
    (read the XML with VIR_DOMAIN_XML_SECURE), security labels, the
    description.
    """
    root = _parse_domain_root(xml)
    name = root.find("name")
    if name is None:
        name = etree.Element("name")
        root.insert(0, name)
    name_before = (name.text or "").strip()
    name.text = new_name
    uuid_el = root.find("uuid")
    if uuid_el is None:
        uuid_el = etree.Element("uuid")
        name.addnext(uuid_el)
    uuid_el.text = new_uuid
    for entry in root.iterfind("sysinfo/system/entry[@name='uuid']"):
        entry.text = new_uuid
    genid = root.find("genid")
    if genid is not None:
        genid.text = None
    for mac in root.findall("devices/interface/mac"):
        mac.getparent().remove(mac)
    for nvram in root.findall("os/nvram"):
        names_file = bool((nvram.text or "").strip()) or nvram.find("source") is not None
        if not names_file:
            continue
        if nvram.get("template"):
            nvram.text = None
            for child in list(nvram):
                nvram.remove(child)
        else:
            nvram.getparent().remove(nvram)
    for disk, facts in zip(root.iterfind("devices/disk"), disk_sources(xml), strict=True):
        new_path = paths.get(facts.key) if facts.key else None
        if new_path is None:
            continue
        source = disk.find("source")
        if facts.volume:
            source.set("volume", new_path.rstrip("/").rsplit("/", 1)[-1])
        elif source.get("file") is not None:
            source.set("file", new_path)
        else:
            source.set("dev", new_path)
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    # A character device's file (a serial port's <log>, a file-backed serial or console):
    # the copy writes a file of its own, not into its original's.
    old_name = name_before
    for chardev in (*root.iterfind("devices/serial"), *root.iterfind("devices/console")):
        for element, attribute in ((chardev.find("log"), "file"), (chardev.find("source"), "path")):
            if element is None or not element.get(attribute):
                continue
            if attribute == "path" and chardev.get("type") != "file":
                continue  # a pty's path is the host's to choose
            element.set(attribute, _renamed_file(element.get(attribute), old_name, new_name))
    return to_string(root)


def _renamed_file(path: str, old_name: str, new_name: str) -> str:
    """`path` for a copy named `new_name`: its original's name replaced in the file name,
    or the new name put in front of it."""
    folder, _sep, base = path.rpartition("/")
    rest = base[len(old_name) :] if old_name and base.startswith(old_name) else None
    if rest is not None and (not rest or not rest[0].isalnum()):
        base = new_name + rest  # a-serial.log → b-serial.log
    else:
        base = f"{new_name}-{base}"
    return f"{folder}/{base}" if folder or path.startswith("/") else base
