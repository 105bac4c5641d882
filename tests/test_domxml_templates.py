"""domxml provisioning builder: every knob of DomainSpec lands in the XML, every refusal
names its field, strings round-trip escaped, and libvirt's test driver takes the result.

Unit tier: no services, no database. The built XML is read back with lxml directly.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

import libvirt
import pytest
from lxml import etree

from domains import domxml
from domains.domxml import (
    DiskSpec,
    DomainSpec,
    InterfaceSpec,
    SpecError,
    XMLError,
    build_domain,
    generate_mac,
    low_memory_warning,
    phase_one_install_xml,
    set_boot_from_disk,
    validate_spec,
    xml_diff,
)
from tests.xml_summary import read_domain_spec_summary

UUID = "4c5626aa-9ac5-2ccc-8f1e-0123456789ab"
MAC_RE = re.compile(r"52:54:00(:[0-9a-f]{2}){3}")
NASTY = "a&b <c> \"d\" 'e' ]]> &amp;"
ISO = "/var/lib/libvirt/images/debian-12-netinst.iso"
DISK = "/var/lib/libvirt/images/new.qcow2"


def spec(**changes) -> DomainSpec:
    return dataclasses.replace(DomainSpec(name="guest-1", uuid=UUID), **changes)


def build(**changes) -> etree._Element:
    """Build a spec and parse the result with plain lxml."""
    return etree.fromstring(build_domain(spec(**changes)).encode())


def boot_devs(root) -> list[str]:
    return [b.get("dev") for b in root.findall("os/boot")]


# --- defaults -------------------------------------------------------------------------


def test_defaults():
    root = build()

    assert root.tag == "domain"
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "guest-1"
    assert root.findtext("uuid") == UUID
    assert root.find("maxMemory") is None
    assert root.find("memory").text == "1048576"
    assert root.find("memory").get("unit") == "KiB"
    assert root.find("currentMemory").text == "1048576"
    assert root.find("currentMemory").get("unit") == "KiB"
    vcpu = root.find("vcpu")
    assert vcpu.text == "1"
    assert dict(vcpu.attrib) == {"placement": "static"}
    os_type = root.find("os/type")
    assert (os_type.text, os_type.get("arch"), os_type.get("machine")) == ("hvm", "x86_64", "pc")
    assert boot_devs(root) == ["hd"]
    for absent in ("loader", "nvram", "kernel", "initrd", "cmdline", "bootmenu", "smbios", "bios"):
        assert root.find(f"os/{absent}") is None, absent
    assert root.find("features/acpi") is not None
    assert root.find("features/apic") is not None
    assert root.find("clock").get("offset") == "utc"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_crash") == "destroy"
    devices = root.find("devices")
    assert devices.find("emulator") is None
    assert devices.findall("disk") == []
    assert devices.findall("interface") == []
    assert devices.find("graphics") is None
    assert devices.find("input") is None
    assert devices.find("serial").get("type") == "pty"
    assert devices.find("serial/target").get("port") == "0"
    assert devices.find("console").get("type") == "pty"
    assert devices.find("console/target").get("type") == "serial"
    assert devices.find("memballoon").get("model") == "virtio"
    assert devices.find("memballoon/stats") is None


def test_build_returns_pretty_xml_without_declaration():
    xml = build_domain(spec())
    assert xml.startswith("<domain ")
    assert "\n  <name>guest-1</name>\n" in xml


@pytest.mark.parametrize("domain_type", ["kvm", "qemu", "test"])
def test_domain_type(domain_type):
    assert build(domain_type=domain_type).get("type") == domain_type


def test_arch_and_machine():
    os_type = build(arch="aarch64", machine="virt").find("os/type")
    assert (os_type.get("arch"), os_type.get("machine")) == ("aarch64", "virt")


def test_acpi_only_for_x86():
    assert build(arch="i686").find("features/acpi") is not None
    assert build(arch="aarch64", machine="virt").find("features") is None


def test_uuid_is_written_canonically():
    root = build(uuid="4C5626AA9AC52CCC8F1E0123456789AB")
    assert root.findtext("uuid") == UUID


# --- memory ---------------------------------------------------------------------------


def test_current_memory():
    root = build(memory_kib=2097152, current_memory_kib=524288)
    assert root.find("memory").text == "2097152"
    assert root.find("currentMemory").text == "524288"


def test_max_memory_and_slots():
    root = build(memory_kib=524288, max_memory_kib=1524288, memory_slots=16)
    max_mem = root.find("maxMemory")
    assert max_mem.text == "1524288"
    assert max_mem.get("slots") == "16"
    assert max_mem.get("unit") == "KiB"
    # libvirt's order: maxMemory before memory.
    tags = [child.tag for child in root]
    assert tags.index("maxMemory") < tags.index("memory") < tags.index("currentMemory")


# --- vCPUs ----------------------------------------------------------------------------


def test_vcpus_current_placement_cpuset():
    vcpu = build(vcpus=2, vcpus_current=1, vcpu_placement="static", cpuset="1-4,^3,6").find("vcpu")
    assert vcpu.text == "2"
    assert vcpu.get("current") == "1"
    assert vcpu.get("placement") == "static"
    assert vcpu.get("cpuset") == "1-4,^3,6"


def test_vcpu_placement_auto():
    vcpu = build(vcpus=4, vcpu_placement="auto").find("vcpu")
    assert vcpu.get("placement") == "auto"
    assert vcpu.get("current") is None
    assert vcpu.get("cpuset") is None


@pytest.mark.parametrize("cpuset", ["0", "0-3", "1-4,^3,6", "0,2,4-7,^5", "16383"])
def test_valid_cpusets(cpuset):
    assert build(cpuset=cpuset).find("vcpu").get("cpuset") == cpuset


# --- boot -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [("hd",), ("cdrom",), ("hd", "cdrom"), ("hd", "network"), ("network", "hd", "cdrom", "fd"), ()],
)
def test_boot_order(order):
    assert boot_devs(build(boot_order=order)) == list(order)


def test_boot_menu_with_timeout():
    menu = build(boot_menu=True, boot_menu_timeout_ms=3000).find("os/bootmenu")
    assert menu.get("enable") == "yes"
    assert menu.get("timeout") == "3000"


def test_boot_menu_without_timeout():
    menu = build(boot_menu=True).find("os/bootmenu")
    assert dict(menu.attrib) == {"enable": "yes"}


def test_uefi_loader_and_nvram_template():
    root = build(
        firmware="uefi",
        loader="/usr/share/OVMF/OVMF_CODE.fd",
        nvram_template="/usr/share/OVMF/OVMF_VARS.fd",
    )
    loader = root.find("os/loader")
    assert loader.text == "/usr/share/OVMF/OVMF_CODE.fd"
    assert loader.get("readonly") == "yes"
    assert loader.get("type") == "pflash"
    nvram = root.find("os/nvram")
    assert nvram.get("template") == "/usr/share/OVMF/OVMF_VARS.fd"
    assert not nvram.text  # libvirt picks the per-domain file
    tags = [child.tag for child in root.find("os")]
    assert tags.index("type") < tags.index("loader") < tags.index("nvram") < tags.index("boot")


def test_uefi_without_nvram_template():
    root = build(firmware="uefi", loader="/usr/share/OVMF/OVMF_CODE.fd")
    assert root.find("os/loader") is not None
    assert root.find("os/nvram") is None


@pytest.mark.parametrize("mode", ["emulate", "host", "sysinfo"])
def test_smbios_mode(mode):
    assert build(smbios_mode=mode).find("os/smbios").get("mode") == mode


def test_bios_useserial_and_reboot_timeout():
    bios = build(bios_useserial=True, bios_reboot_timeout_ms=0).find("os/bios")
    assert bios.get("useserial") == "yes"
    assert bios.get("rebootTimeout") == "0"


def test_bios_useserial_alone():
    bios = build(bios_useserial=True).find("os/bios")
    assert dict(bios.attrib) == {"useserial": "yes"}


@pytest.mark.parametrize("timeout", [-1, 0, 5000, 65535])
def test_bios_reboot_timeout_alone(timeout):
    bios = build(bios_reboot_timeout_ms=timeout).find("os/bios")
    assert dict(bios.attrib) == {"rebootTimeout": str(timeout)}


def test_direct_kernel_boot_elements():
    root = build(
        kernel="/var/lib/libvirt/boot/vmlinuz",
        initrd="/var/lib/libvirt/boot/initrd.img",
        cmdline="console=ttyS0 console=tty",
    )
    assert root.findtext("os/kernel") == "/var/lib/libvirt/boot/vmlinuz"
    assert root.findtext("os/initrd") == "/var/lib/libvirt/boot/initrd.img"
    assert root.findtext("os/cmdline") == "console=ttyS0 console=tty"


def test_kernel_without_initrd_or_cmdline():
    root = build(kernel="/boot/vmlinuz")
    assert root.findtext("os/kernel") == "/boot/vmlinuz"
    assert root.find("os/initrd") is None
    assert root.find("os/cmdline") is None


# --- clock and lifecycle --------------------------------------------------------------


@pytest.mark.parametrize("offset", ["utc", "localtime"])
def test_clock(offset):
    assert build(clock_offset=offset).find("clock").get("offset") == offset


@pytest.mark.parametrize("action", ["destroy", "restart", "preserve", "rename-restart"])
def test_poweroff_and_reboot_actions(action):
    root = build(on_poweroff=action, on_reboot=action)
    assert root.findtext("on_poweroff") == action
    assert root.findtext("on_reboot") == action


@pytest.mark.parametrize(
    "action",
    ["destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart"],
)
def test_crash_actions(action):
    assert build(on_crash=action).findtext("on_crash") == action


# --- disks ----------------------------------------------------------------------------


def test_qcow2_virtio_disk():
    disk = build(disks=(DiskSpec(DISK, size_bytes=10 * 2**30),)).find("devices/disk")
    assert disk.get("type") == "file"
    assert disk.get("device") == "disk"
    assert disk.find("driver").get("name") == "qemu"
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == DISK
    assert disk.find("target").get("dev") == "vda"
    assert disk.find("target").get("bus") == "virtio"
    assert disk.find("readonly") is None
    # The size is for creating the volume, not part of the domain.
    assert str(10 * 2**30) not in etree.tostring(disk, encoding="unicode")


@pytest.mark.parametrize(
    "bus,target", [("virtio", "vdb"), ("sata", "sda"), ("ide", "hda"), ("scsi", "sdc")]
)
def test_raw_disk_on_each_bus(bus, target):
    disk = build(disks=(DiskSpec("/images/raw.img", bus=bus, target=target, format="raw"),)).find(
        "devices/disk"
    )
    assert disk.find("driver").get("type") == "raw"
    assert disk.find("target").get("bus") == bus
    assert disk.find("target").get("dev") == target


def test_readonly_disk():
    disk = build(disks=(DiskSpec(DISK, readonly=True),)).find("devices/disk")
    assert disk.find("readonly") is not None


def test_cdrom_is_always_readonly_and_raw():
    disk = build(disks=(DiskSpec(ISO, device="cdrom", bus="sata", target="sda"),)).find(
        "devices/disk"
    )
    assert disk.get("device") == "cdrom"
    assert disk.find("readonly") is not None
    assert disk.find("driver").get("type") == "raw"  # the default qcow2 does not apply
    assert disk.find("source").get("file") == ISO


def test_empty_cdrom_has_no_source():
    disk = build(disks=(DiskSpec("", device="cdrom", bus="ide", target="hdc"),)).find(
        "devices/disk"
    )
    assert disk.get("device") == "cdrom"
    assert disk.find("source") is None
    assert disk.find("target").get("dev") == "hdc"
    assert disk.find("readonly") is not None


def test_host_device_path_is_a_block_disk():
    disk = build(disks=(DiskSpec("/dev/sr0", device="cdrom", bus="sata", target="sdb"),)).find(
        "devices/disk"
    )
    assert disk.get("type") == "block"
    assert disk.find("source").get("dev") == "/dev/sr0"
    assert disk.find("source").get("file") is None


def test_disks_keep_their_order():
    root = build(
        disks=(
            DiskSpec(DISK),
            DiskSpec("/images/data.raw", target="vdb", format="raw"),
            DiskSpec(ISO, device="cdrom", bus="sata", target="sda"),
        )
    )
    assert [d.find("target").get("dev") for d in root.findall("devices/disk")] == [
        "vda",
        "vdb",
        "sda",
    ]


# --- interfaces -----------------------------------------------------------------------


def test_network_interface_defaults():
    nic = build(interfaces=(InterfaceSpec(),)).find("devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("source").get("network") == "default"
    assert dict(nic.find("source").attrib) == {"network": "default"}
    assert nic.find("model").get("type") == "virtio"
    assert MAC_RE.fullmatch(nic.find("mac").get("address"))


def test_bridge_interface_with_model_and_mac():
    nic = build(
        interfaces=(
            InterfaceSpec(type="bridge", source="br0", model="e1000", mac="52:54:00:AB:cd:EF"),
        )
    ).find("devices/interface")
    assert nic.get("type") == "bridge"
    assert dict(nic.find("source").attrib) == {"bridge": "br0"}
    assert nic.find("model").get("type") == "e1000"
    assert nic.find("mac").get("address") == "52:54:00:ab:cd:ef"  # lower-cased


@pytest.mark.parametrize("nic_type", ["user", "ethernet"])
def test_user_and_ethernet_interfaces_have_no_source(nic_type):
    nic = build(interfaces=(InterfaceSpec(type=nic_type, source="ignored"),)).find(
        "devices/interface"
    )
    assert nic.get("type") == nic_type
    assert nic.find("source") is None
    assert nic.find("mac") is not None


def test_given_mac_is_kept_exactly():
    nic = build(interfaces=(InterfaceSpec(mac="02:00:00:00:00:01"),)).find("devices/interface")
    assert nic.find("mac").get("address") == "02:00:00:00:00:01"


def test_generated_macs_are_valid_and_distinct():
    macs = [generate_mac() for _ in range(500)]
    for mac in macs:
        assert MAC_RE.fullmatch(mac), mac
        assert int(mac[:2], 16) % 2 == 0  # unicast
    assert len(set(macs)) > 490  # 24 random bits: a clash or two at most
    root = build(interfaces=(InterfaceSpec(), InterfaceSpec(type="user"), InterfaceSpec()))
    built = [m.get("address") for m in root.iterfind("devices/interface/mac")]
    assert len(set(built)) == 3
    assert all(MAC_RE.fullmatch(m) for m in built)


# --- other devices --------------------------------------------------------------------


def test_vnc_and_tablet():
    devices = build(vnc=True, tablet=True).find("devices")
    graphics = devices.find("graphics")
    assert graphics.get("type") == "vnc"
    assert graphics.get("autoport") == "yes"
    assert graphics.get("listen") == "127.0.0.1"
    tablet = devices.find("input")
    assert (tablet.get("type"), tablet.get("bus")) == ("tablet", "usb")


@pytest.mark.parametrize("listen", ["127.0.0.1", "::1", "192.168.1.10"])
def test_vnc_listen(listen):
    assert build(vnc=True, vnc_listen=listen).find("devices/graphics").get("listen") == listen


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
def test_vnc_never_listens_on_every_interface(listen):
    with pytest.raises(SpecError, match="every interface"):
        build(vnc=True, vnc_listen=listen)


def test_balloon_off():
    balloon = build(balloon=False).find("devices/memballoon")
    assert dict(balloon.attrib) == {"model": "none"}
    assert len(balloon) == 0


def test_balloon_stats_period():
    balloon = build(balloon_period=10).find("devices/memballoon")
    assert balloon.get("model") == "virtio"
    assert balloon.find("stats").get("period") == "10"


def test_no_serial_console():
    devices = build(serial_console=False).find("devices")
    assert devices.find("serial") is None
    assert devices.find("console") is None


def test_serial_console_to_a_file():
    devices = build(serial_log="/var/log/vmpanel/guest-1.log").find("devices")
    for tag in ("serial", "console"):
        chardev = devices.find(tag)
        assert chardev.get("type") == "file"
        assert chardev.find("source").get("path") == "/var/log/vmpanel/guest-1.log"
        assert chardev.find("source").get("append") == "on"
        assert chardev.find("target").get("port") == "0"
    assert devices.find("console/target").get("type") == "serial"


def test_emulator_comes_first_in_devices():
    devices = build(emulator="/usr/bin/qemu-system-x86_64", disks=(DiskSpec(DISK),)).find("devices")
    assert devices[0].tag == "emulator"
    assert devices[0].text == "/usr/bin/qemu-system-x86_64"


# --- the three install methods (the guide's provisioning sections) ----------------------


def test_cdrom_install():
    root = build(
        memory_kib=1048576,
        boot_order=("hd", "cdrom"),
        disks=(
            DiskSpec(DISK, size_bytes=8 * 2**30),
            DiskSpec(ISO, device="cdrom", bus="ide", target="hdc"),
        ),
        interfaces=(InterfaceSpec(),),
    )
    # The empty disk's boot sector fails first, then the CD-ROM boots.
    assert boot_devs(root) == ["hd", "cdrom"]
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == ISO
    assert cdrom.find("target").get("bus") == "ide"
    assert cdrom.find("readonly") is not None


def test_pxe_install():
    root = build(
        boot_order=("hd", "network"),
        disks=(DiskSpec(DISK),),
        interfaces=(InterfaceSpec(type="bridge", source="br0"),),
    )
    assert boot_devs(root) == ["hd", "network"]
    assert root.find("devices/interface/source").get("bridge") == "br0"


def test_kernel_install_two_phases():
    kernel_spec = spec(
        kernel="/var/lib/libvirt/boot/f11-x86_64-vmlinuz",
        initrd="/var/lib/libvirt/boot/f11-x86_64-initrd.img",
        cmdline="method=http://download.example.org/os console=ttyS0 console=tty",
        disks=(DiskSpec(DISK),),
    )
    first = phase_one_install_xml(build_domain(kernel_spec))
    root = etree.fromstring(first.encode())
    assert root.findtext("os/kernel") == kernel_spec.kernel
    assert root.findtext("os/initrd") == kernel_spec.initrd
    assert root.findtext("os/cmdline") == kernel_spec.cmdline
    assert root.findtext("on_reboot") == "destroy"

    second = etree.fromstring(set_boot_from_disk(first).encode())
    assert second.find("os/kernel") is None
    assert boot_devs(second) == ["hd"]
    assert second.findtext("on_reboot") == "restart"
    # The rest of the domain is unchanged.
    assert second.findtext("uuid") == UUID
    assert second.find("devices/disk/source").get("file") == DISK


# --- low memory warning -------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,warns",
    [
        ({"memory_kib": 512 * 1024, "boot_order": ("hd", "cdrom")}, "CD-ROM"),
        ({"memory_kib": 512 * 1024, "boot_order": ("hd", "network")}, "network"),
        (
            {"memory_kib": 2048 * 1024, "current_memory_kib": 256 * 1024, "boot_order": ("cdrom",)},
            "256 MiB",
        ),
        ({"memory_kib": 600 * 1024, "boot_order": ("hd", "cdrom")}, ""),
        ({"memory_kib": 512 * 1024, "boot_order": ("hd",)}, ""),
        ({"memory_kib": 256 * 1024, "kernel": "/boot/vmlinuz", "boot_order": ("hd",)}, ""),
    ],
)
def test_low_memory_warning(changes, warns):
    warning = low_memory_warning(spec(**changes))
    if warns:
        assert warns in warning
        assert "600 MiB" in warning
    else:
        assert warning == ""


# --- validation ---------------------------------------------------------------------------

REFUSALS = [
    # (changes, field, words the message must contain)
    ({"name": ""}, "name", "Name"),
    ({"name": "-web"}, "name", "Name"),
    ({"name": "web server"}, "name", "Name"),
    ({"name": "a<b>"}, "name", "Name"),
    ({"name": "x" * 101}, "name", "Name"),
    ({"uuid": "not-a-uuid"}, "uuid", "UUID"),
    ({"uuid": ""}, "uuid", "UUID"),
    ({"domain_type": "xen"}, "domain_type", "Domain type"),
    ({"arch": ""}, "arch", "Architecture"),
    ({"machine": "pc q35"}, "machine", "Machine type"),
    ({"memory_kib": 0}, "memory_kib", "Memory"),
    ({"memory_kib": -1}, "memory_kib", "Memory"),
    ({"memory_kib": "1024"}, "memory_kib", "whole number"),
    ({"current_memory_kib": 2 * 1048576}, "current_memory_kib", "Current memory"),
    ({"max_memory_kib": 524288, "memory_slots": 4}, "max_memory_kib", "Maximum memory"),
    ({"max_memory_kib": 4194304, "memory_slots": 0}, "memory_slots", "Memory slots"),
    ({"max_memory_kib": 4194304, "memory_slots": 256}, "memory_slots", "Memory slots"),
    ({"memory_slots": 4}, "memory_slots", "Memory slots"),
    ({"vcpus": 0}, "vcpus", "vCPUs"),
    ({"vcpus": 2, "vcpus_current": 3}, "vcpus_current", "Current vCPUs"),
    ({"vcpus_current": -1}, "vcpus_current", "Current vCPUs"),
    ({"vcpu_placement": "dynamic"}, "vcpu_placement", "vCPU placement"),
    ({"cpuset": "1-"}, "cpuset", "cpuset"),
    ({"cpuset": "a"}, "cpuset", "cpuset"),
    ({"cpuset": "1,,2"}, "cpuset", "cpuset"),
    ({"cpuset": "1 - 4"}, "cpuset", "cpuset"),
    ({"cpuset": "4-1"}, "cpuset", "backwards"),
    ({"cpuset": "^2-3,5"}, "cpuset", "single CPU"),
    ({"cpuset": "^3"}, "cpuset", "no CPU"),
    ({"cpuset": "1,^1"}, "cpuset", "no CPU"),
    ({"cpuset": "99999"}, "cpuset", "beyond"),
    ({"boot_order": ("hd", "usb")}, "boot_order", "Boot device"),
    ({"boot_order": ("hd", "cdrom", "hd")}, "boot_order", "twice"),
    ({"boot_order": "hd"}, "boot_order", "Boot order"),
    ({"boot_menu": True, "boot_menu_timeout_ms": 70000}, "boot_menu_timeout_ms", "timeout"),
    ({"initrd": "/boot/initrd.img"}, "initrd", "initrd"),
    ({"cmdline": "console=ttyS0"}, "cmdline", "kernel command line"),
    ({"kernel": "vmlinuz"}, "kernel", "absolute path"),
    ({"kernel": "/boot/vmlinuz", "initrd": "initrd.img"}, "initrd", "absolute path"),
    ({"firmware": "coreboot"}, "firmware", "Firmware"),
    ({"firmware": "uefi"}, "loader", "UEFI"),
    ({"firmware": "uefi", "loader": "OVMF_CODE.fd"}, "loader", "absolute path"),
    (
        {"firmware": "uefi", "loader": "/ovmf/CODE.fd", "nvram_template": "VARS.fd"},
        "nvram_template",
        "absolute path",
    ),
    ({"smbios_mode": "fake"}, "smbios_mode", "SMBIOS mode"),
    ({"bios_reboot_timeout_ms": -2}, "bios_reboot_timeout_ms", "BIOS reboot timeout"),
    ({"bios_reboot_timeout_ms": 65536}, "bios_reboot_timeout_ms", "BIOS reboot timeout"),
    ({"bios_useserial": True, "serial_console": False}, "bios_useserial", "serial console"),
    ({"clock_offset": "variable"}, "clock_offset", "Clock offset"),
    ({"on_poweroff": "coredump-destroy"}, "on_poweroff", "power-off"),
    ({"on_reboot": "explode"}, "on_reboot", "reboot"),
    ({"on_crash": "ignore"}, "on_crash", "crash"),
    ({"disks": (DiskSpec(DISK, bus="usb"),)}, "disks[0].bus", "bus"),
    ({"disks": (DiskSpec(DISK, device="floppy"),)}, "disks[0].device", "device"),
    ({"disks": (DiskSpec(ISO, device="cdrom"),)}, "disks[0].bus", "CD-ROM"),
    ({"disks": (DiskSpec(DISK), DiskSpec("/b.qcow2"))}, "disks[1].target", "target"),
    ({"disks": (DiskSpec(DISK, target="disk1"),)}, "disks[0].target", "target"),
    ({"disks": (DiskSpec(DISK, format="vmdk"),)}, "disks[0].format", "format"),
    ({"disks": (DiskSpec(""),)}, "disks[0].path", "CD-ROM"),
    ({"disks": (DiskSpec("images/a.qcow2"),)}, "disks[0].path", "absolute path"),
    ({"disks": (DiskSpec(DISK, size_bytes=-1),)}, "disks[0].size_bytes", "size"),
    (
        {"disks": (DiskSpec(DISK), DiskSpec("/x.iso", device="cdrom", bus="virtio", target="vdb"))},
        "disks[1].bus",
        "sata",
    ),
    ({"disks": (DISK,)}, "disks[0]", "disk"),
    ({"interfaces": (InterfaceSpec(type="vhostuser"),)}, "interfaces[0].type", "type"),
    ({"interfaces": (InterfaceSpec(source=""),)}, "interfaces[0].source", "network"),
    ({"interfaces": (InterfaceSpec(type="bridge", source=""),)}, "interfaces[0].source", "bridge"),
    (
        {"interfaces": (InterfaceSpec(type="bridge", source="br 0"),)},
        "interfaces[0].source",
        "bridge",
    ),
    ({"interfaces": (InterfaceSpec(model="e1000; rm"),)}, "interfaces[0].model", "model"),
    ({"interfaces": (InterfaceSpec(mac="52:54:00:12:34"),)}, "interfaces[0].mac", "MAC"),
    ({"interfaces": (InterfaceSpec(mac="52-54-00-12-34-56"),)}, "interfaces[0].mac", "MAC"),
    ({"interfaces": (InterfaceSpec(mac="52:54:00:12:34:5g"),)}, "interfaces[0].mac", "MAC"),
    ({"interfaces": (InterfaceSpec(mac="01:00:5e:00:00:01"),)}, "interfaces[0].mac", "multicast"),
    (
        {
            "interfaces": (
                InterfaceSpec(mac="52:54:00:12:34:56"),
                InterfaceSpec(mac="52:54:00:12:34:56"),
            )
        },
        "interfaces[1].mac",
        "MAC",
    ),
    ({"vnc": True, "vnc_listen": "localhost:5900"}, "vnc_listen", "VNC listen"),
    ({"balloon_period": -5}, "balloon_period", "Balloon"),
    ({"serial_log": "/var/log/g.log", "serial_console": False}, "serial_log", "serial"),
    ({"serial_log": "g.log"}, "serial_log", "absolute path"),
    ({"emulator": "qemu-kvm"}, "emulator", "absolute path"),
    ({"cmdline": "a\nb", "kernel": "/boot/vmlinuz"}, "cmdline", "control character"),
    ({"disks": (DiskSpec("/a\x00b"),)}, "disks[0].path", "control character"),
]


@pytest.mark.parametrize(
    "changes,field,words", REFUSALS, ids=[f"{i}-{r[1]}" for i, r in enumerate(REFUSALS)]
)
def test_validation_refuses_naming_the_field(changes, field, words):
    bad = spec(**changes)
    with pytest.raises(SpecError) as caught:
        validate_spec(bad)
    assert caught.value.field == field
    message = str(caught.value)
    assert field in message  # the attribute, for the developer…
    assert words.lower() in message.lower()  # …and plain words for the user
    # build_domain refuses the same way, before building anything.
    with pytest.raises(SpecError, match=re.escape(message)):
        build_domain(bad)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize(
    "name", ["a", "web-01", "Web_01", "db.example.org", "0day", "x" * 100, "A"]
)
def test_valid_names(name):
    assert build(name=name).findtext("name") == name


def test_settings_beside_a_switched_off_one_are_ignored():
    root = build(
        boot_menu=False,
        boot_menu_timeout_ms=3000,
        firmware="bios",
        loader="/ovmf/CODE.fd",
        nvram_template="/ovmf/VARS.fd",
        balloon=False,
        balloon_period=5,
    )
    assert root.find("os/bootmenu") is None
    assert root.find("os/loader") is None
    assert root.find("os/nvram") is None
    assert dict(root.find("devices/memballoon").attrib) == {"model": "none"}
    assert root.find("devices/memballoon/stats") is None


def test_a_cdrom_install_without_a_cdrom_is_the_callers_concern():
    validate_spec(spec(boot_order=("hd", "cdrom")))


def test_full_spec_validates():
    validate_spec(full_spec())


# --- escaping -------------------------------------------------------------------------


def test_strings_with_markup_round_trip_exactly():
    nasty_path = "/srv/" + NASTY.replace(" ", "_")
    kernel_spec = spec(
        kernel=nasty_path + "/vmlinuz",
        initrd=nasty_path + "/initrd",
        cmdline="ks=http://h/k?a=1&b=2 x=\"<y>\" z='w' " + NASTY,
        disks=(
            DiskSpec(nasty_path + "/disk.qcow2"),
            DiskSpec(nasty_path + ".iso", device="cdrom", bus="sata", target="sda"),
        ),
        serial_log=nasty_path + ".log",
        emulator=nasty_path + "/qemu",
        interfaces=(InterfaceSpec(source="net&<'\">"),),
    )
    xml = build_domain(kernel_spec)

    assert "&amp;" in xml
    assert "&lt;" in xml
    assert "<y>" not in xml and "<c>" not in xml
    root = etree.fromstring(xml.encode())
    assert root.findtext("os/kernel") == kernel_spec.kernel
    assert root.findtext("os/initrd") == kernel_spec.initrd
    assert root.findtext("os/cmdline") == kernel_spec.cmdline
    assert root.find("devices/disk/source").get("file") == kernel_spec.disks[0].path
    assert root.find("devices/serial/source").get("path") == kernel_spec.serial_log
    assert root.findtext("devices/emulator") == kernel_spec.emulator
    assert root.find("devices/interface/source").get("network") == "net&<'\">"

    summary = read_domain_spec_summary(xml)
    assert summary["cmdline"] == kernel_spec.cmdline
    assert summary["kernel"] == kernel_spec.kernel
    assert [d["source"] for d in summary["disks"]] == [d.path for d in kernel_spec.disks]
    # The phases keep them too.
    assert read_domain_spec_summary(phase_one_install_xml(xml))["cmdline"] == kernel_spec.cmdline
    assert domxml.disks(set_boot_from_disk(xml))[0].source == kernel_spec.disks[0].path


def test_uefi_paths_round_trip():
    root = build(firmware="uefi", loader="/o/C&<'\">.fd", nvram_template="/o/V&<'\">.fd")
    assert root.findtext("os/loader") == "/o/C&<'\">.fd"
    assert root.find("os/nvram").get("template") == "/o/V&<'\">.fd"


# --- readers: summary and diff ------------------------------------------------------------


def full_spec(**changes) -> DomainSpec:
    return dataclasses.replace(
        DomainSpec(
            name="full",
            uuid=UUID,
            memory_kib=2097152,
            current_memory_kib=1048576,
            vcpus=4,
            vcpus_current=2,
            boot_order=("hd", "cdrom"),
            disks=(DiskSpec(DISK), DiskSpec(ISO, device="cdrom", bus="sata", target="sda")),
            interfaces=(
                InterfaceSpec(mac="52:54:00:00:00:01"),
                InterfaceSpec(type="user", mac="52:54:00:00:00:02"),
            ),
        ),
        **changes,
    )


def test_summary_of_a_built_domain():
    summary = read_domain_spec_summary(build_domain(full_spec()))
    assert summary["name"] == "full"
    assert summary["uuid"] == UUID
    assert summary["memory_kib"] == 2097152
    assert summary["current_memory_kib"] == 1048576
    assert summary["vcpus"] == 4
    assert summary["vcpus_current"] == 2
    assert summary["boot_order"] == ["hd", "cdrom"]
    assert (summary["kernel"], summary["initrd"], summary["cmdline"]) == ("", "", "")
    assert [(d["target"], d["source"]) for d in summary["disks"]] == [("vda", DISK), ("sda", ISO)]
    assert [d["device"] for d in summary["disks"]] == ["disk", "cdrom"]
    assert [(i["type"], i["mac"]) for i in summary["interfaces"]] == [
        ("network", "52:54:00:00:00:01"),
        ("user", "52:54:00:00:00:02"),
    ]
    assert (summary["on_poweroff"], summary["on_reboot"], summary["on_crash"]) == (
        "destroy",
        "restart",
        "destroy",
    )


def test_summary_gives_effective_current_values():
    summary = read_domain_spec_summary(build_domain(spec(vcpus=3, memory_kib=524288)))
    assert summary["vcpus_current"] == 3
    assert summary["current_memory_kib"] == 524288


def test_summary_reads_other_units():
    xml = (
        "<domain type='test'><name>u</name><memory unit='MiB'>512</memory>"
        "<currentMemory unit='GiB'>1</currentMemory><vcpu>2</vcpu></domain>"
    )
    summary = read_domain_spec_summary(xml)
    assert summary["memory_kib"] == 512 * 1024
    assert summary["current_memory_kib"] == 1024 * 1024
    assert summary["boot_order"] == []


def test_summary_refuses_what_is_not_a_domain():
    with pytest.raises(XMLError, match="not a <domain>"):
        read_domain_spec_summary("<network><name>default</name></network>")
    with pytest.raises(XMLError, match="Malformed"):
        read_domain_spec_summary("<domain>")


XXE = (
    '<?xml version="1.0"?>\n'
    '<!DOCTYPE domain [<!ENTITY e SYSTEM "file:///etc/passwd">'
    '<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
    "<domain type='test'><name>&e;</name><uuid>" + UUID + "</uuid>"
    "<os><cmdline>&b;</cmdline></os></domain>"
)


def test_summary_does_not_expand_entities():
    summary = read_domain_spec_summary(XXE)
    assert "root:" not in summary["name"]
    assert summary["name"] == ""
    assert "lol" not in summary["cmdline"]
    assert summary["uuid"] == UUID


def test_diff_does_not_expand_entities():
    after = XXE.replace("<uuid>", "<title>t</title><uuid>")
    diff = xml_diff(XXE, after)
    assert "root:" not in diff
    assert "lol" not in diff
    assert "+  <title>t</title>" in diff


def test_diff_shows_a_changed_line():
    before = build_domain(full_spec())
    after = build_domain(full_spec(memory_kib=4194304))
    diff = xml_diff(before, after)
    assert diff.startswith("--- before\n+++ after\n")
    assert '-  <memory unit="KiB">2097152</memory>' in diff
    assert '+  <memory unit="KiB">4194304</memory>' in diff
    assert "<devices>" not in diff  # unchanged lines far from the change stay out
    assert len([line for line in diff.splitlines() if line[:1] in "+-"]) == 4


def test_diff_ignores_layout_and_quoting():
    one = "<domain type='test'><name>a</name></domain>"
    two = '<domain  type="test">\n    <name>a</name>\n</domain>\n'
    assert xml_diff(one, two) == ""


def test_diff_refuses_malformed_xml():
    with pytest.raises(XMLError):
        xml_diff("<domain/>", "<domain>")


# --- phases -------------------------------------------------------------------------------


def test_phase_one_ends_on_reboot_and_poweroff():
    xml = build_domain(full_spec(on_poweroff="restart", on_reboot="restart", on_crash="preserve"))
    root = etree.fromstring(phase_one_install_xml(xml).encode())
    assert root.findtext("on_reboot") == "destroy"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_crash") == "preserve"
    # Nothing else changes.
    assert boot_devs(root) == ["hd", "cdrom"]
    assert len(root.findall("devices/disk")) == 2
    diff = xml_diff(xml, phase_one_install_xml(xml))
    assert len([line for line in diff.splitlines() if line.startswith("+ ")]) == 2


def test_phase_one_adds_missing_actions_in_libvirt_order():
    xml = (
        "<domain type='test'><name>a</name><os><type>hvm</type></os>"
        "<clock offset='utc'/><devices/></domain>"
    )
    root = etree.fromstring(phase_one_install_xml(xml).encode())
    assert [c.tag for c in root] == ["name", "os", "clock", "on_poweroff", "on_reboot", "devices"]
    assert root.findtext("on_reboot") == "destroy"


def test_set_boot_from_disk():
    xml = phase_one_install_xml(
        build_domain(
            full_spec(
                kernel="/b/vmlinuz",
                initrd="/b/initrd",
                cmdline="console=ttyS0",
                boot_order=("network", "cdrom", "hd"),
                boot_menu=True,
                smbios_mode="host",
            )
        )
    )
    root = etree.fromstring(set_boot_from_disk(xml).encode())
    for gone in ("kernel", "initrd", "cmdline"):
        assert root.find(f"os/{gone}") is None
    assert boot_devs(root) == ["hd"]
    assert [c.tag for c in root.find("os")] == ["type", "boot", "bootmenu", "smbios"]
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_poweroff") == "destroy"


def test_set_boot_from_disk_drops_per_device_boot_order():
    xml = (
        "<domain type='test'><name>a</name><os><type>hvm</type></os><devices>"
        "<disk type='file' device='disk'><source file='/a'/><target dev='vda'/>"
        "<boot order='2'/></disk><interface type='user'><boot order='1'/></interface>"
        "</devices></domain>"
    )
    root = etree.fromstring(set_boot_from_disk(xml).encode())
    assert root.findall("devices/*/boot") == []
    assert boot_devs(root) == ["hd"]
    assert root.findtext("on_reboot") == "restart"


def test_set_boot_from_disk_needs_an_os_element():
    with pytest.raises(XMLError, match="<os>"):
        set_boot_from_disk("<domain type='test'><name>a</name></domain>")


def test_phases_refuse_what_is_not_a_domain():
    for editor in (set_boot_from_disk, phase_one_install_xml):
        with pytest.raises(XMLError):
            editor("<volume><name>a</name></volume>")


# --- libvirt's test driver accepts what we build ---------------------------------------------


def _test_driver_specs() -> list[DomainSpec]:
    base = {"domain_type": "test", "arch": "i686"}  # the only guest the test driver offers
    return [
        # CD-ROM install.
        spec(
            **base,
            name="cdrom-install",
            boot_order=("hd", "cdrom"),
            disks=(DiskSpec(DISK), DiskSpec(ISO, device="cdrom", bus="ide", target="hdc")),
            interfaces=(InterfaceSpec(),),
            vnc=True,
            tablet=True,
        ),
        # PXE install.
        spec(
            **base,
            name="pxe-install",
            boot_order=("hd", "network"),
            disks=(DiskSpec(DISK, bus="sata", target="sda", format="raw"),),
            interfaces=(InterfaceSpec(type="bridge", source="br0", model="e1000"),),
        ),
        # Direct kernel boot, with strings that need escaping.
        spec(
            **base,
            name="kernel-install",
            kernel="/boot/vmlinuz&1",
            initrd="/boot/initrd'<2>'",
            cmdline='ks=http://h/ks.cfg?a=1&b="2" console=ttyS0',
            disks=(DiskSpec(DISK),),
            serial_log="/tmp/kernel&install.log",
            balloon=False,
        ),
        # Every other knob at once.
        spec(
            **base,
            name="everything",
            memory_kib=2097152,
            current_memory_kib=1048576,
            max_memory_kib=4194304,
            memory_slots=4,
            vcpus=4,
            vcpus_current=2,
            cpuset="1-4,^3,6",
            boot_order=("cdrom", "hd", "network", "fd"),
            boot_menu=True,
            boot_menu_timeout_ms=3000,
            firmware="uefi",
            loader="/usr/share/OVMF/OVMF_CODE.fd",
            nvram_template="/usr/share/OVMF/OVMF_VARS.fd",
            smbios_mode="host",
            bios_useserial=True,
            bios_reboot_timeout_ms=0,
            clock_offset="localtime",
            on_poweroff="preserve",
            on_reboot="rename-restart",
            on_crash="coredump-restart",
            disks=(
                DiskSpec(DISK),
                DiskSpec("", device="cdrom", bus="scsi", target="sdb"),
                DiskSpec("/dev/sr0", device="cdrom", bus="sata", target="sda"),
            ),
            interfaces=(
                InterfaceSpec(),
                InterfaceSpec(type="user"),
                InterfaceSpec(type="ethernet", mac="52:54:00:aa:bb:cc"),
            ),
            vnc=True,
            vnc_listen="192.168.1.10",
            tablet=True,
            balloon_period=5,
            emulator="/usr/bin/test-hv",
        ),
    ]


@pytest.fixture
def test_conn():
    conn = libvirt.open("test:///default")  # private to this process
    yield conn
    conn.close()


@pytest.mark.parametrize("index", range(4), ids=["cdrom", "pxe", "kernel", "everything"])
def test_libvirt_test_driver_accepts_built_domains(test_conn, index):
    the_spec = dataclasses.replace(_test_driver_specs()[index], uuid=str(uuid.uuid4()))
    xml = build_domain(the_spec)
    flags = libvirt.VIR_DOMAIN_DEFINE_VALIDATE  # against libvirt's own schema
    dom = test_conn.defineXMLFlags(xml, flags)
    try:
        assert dom.UUIDString() == the_spec.uuid
        mine = read_domain_spec_summary(xml)
        theirs = read_domain_spec_summary(dom.XMLDesc(0))
        assert theirs == mine
        assert theirs["cmdline"] == the_spec.cmdline
        # Both phases of an install are valid documents too.
        first = phase_one_install_xml(xml)
        assert (
            read_domain_spec_summary(test_conn.defineXMLFlags(first, flags).XMLDesc(0))["on_reboot"]
            == "destroy"
        )
        second = set_boot_from_disk(first)
        after = read_domain_spec_summary(test_conn.defineXMLFlags(second, flags).XMLDesc(0))
        assert after["boot_order"] == ["hd"]
        assert after["kernel"] == ""
        assert after["on_reboot"] == "restart"
    finally:
        dom.undefine()


def test_libvirt_test_driver_boots_a_transient_phase_one(test_conn):
    the_spec = _test_driver_specs()[2]
    xml = phase_one_install_xml(build_domain(dataclasses.replace(the_spec, uuid=str(uuid.uuid4()))))
    dom = test_conn.createXML(xml, libvirt.VIR_DOMAIN_START_VALIDATE)
    try:
        assert dom.isActive()
        assert read_domain_spec_summary(dom.XMLDesc(0))["cmdline"] == the_spec.cmdline
    finally:
        dom.destroy()
