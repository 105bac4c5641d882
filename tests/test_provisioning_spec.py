"""Every template knob reaches the XML: build from a template, parse back, and have
libvirt (the test driver, with VALIDATE) accept what the panel would send."""

from __future__ import annotations

import uuid as uuidlib

import libvirt
import pytest
from lxml import etree

from provisioning import services
from provisioning.models import Method
from tests.test_provisioning_create import make_template

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_every_knob_reaches_the_xml(hosts, libvirt_hosts, make_domain):
    template = make_template(
        hosts,
        Method.KERNEL,
        vcpus_max=4,
        vcpu_placement="static",
        cpuset="1-4,^3,6",
        memory_mib=1024,
        current_memory_mib=768,
        hotplug_memory_mib=4096,
        memory_slots=4,
        boot_menu=True,
        boot_menu_timeout_ms=3000,
        firmware="uefi",
        loader="/usr/share/OVMF/OVMF_CODE.fd",
        nvram_template="/usr/share/OVMF/OVMF_VARS.fd",
        smbios_mode="sysinfo",
        bios_reboot_timeout_ms=5000,
        clock_offset="localtime",
        on_poweroff="preserve",
        on_reboot="restart",
        on_crash="coredump-destroy",
        net_type="network",
        net_source="default",
        net_model="e1000",
        balloon_period=7,
        cmdline="console=ttyS0 <&'\">",
    )
    uuid = str(uuidlib.uuid4())
    view = services.preview(template, hosts.alpha, "knobs-1", 2, 1024, uuid)
    assert not view.problems, view.problems
    root = etree.fromstring(view.xml.encode())
    vcpu = root.find("vcpu")
    assert (vcpu.text, vcpu.get("current"), vcpu.get("cpuset"), vcpu.get("placement")) == (
        "4",
        "2",
        "1-4,^3,6",
        "static",
    )
    assert root.find("maxMemory").get("slots") == "4"
    assert int(root.findtext("maxMemory")) == 4096 * 1024
    assert int(root.findtext("currentMemory")) == 768 * 1024
    os_el = root.find("os")
    assert os_el.find("bootmenu").get("timeout") == "3000"
    assert os_el.find("loader").text == "/usr/share/OVMF/OVMF_CODE.fd"
    assert os_el.find("nvram").get("template") == "/usr/share/OVMF/OVMF_VARS.fd"
    assert os_el.find("smbios").get("mode") == "sysinfo"
    assert os_el.find("bios").get("rebootTimeout") == "5000"
    assert os_el.findtext("cmdline") == "console=ttyS0 <&'\">"  # escaped, parsed back
    assert root.find("clock").get("offset") == "localtime"
    assert (root.findtext("on_poweroff"), root.findtext("on_crash")) == (
        "preserve",
        "coredump-destroy",
    )
    assert root.find("devices/interface/model").get("type") == "e1000"
    assert root.find("devices/memballoon/stats").get("period") == "7"
    # libvirt's own schema check accepts it.
    make_domain.track("alpha", uuid)
    conn = libvirt_hosts.conn("alpha")
    conn.defineXMLFlags(view.xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


def test_refused_values_never_reach_xml(hosts):
    template = make_template(hosts, Method.PXE, cpuset="1-^3")
    view = services.preview(template, hosts.alpha, "bad-1", 1, 256)
    assert view.xml == "" and "cpuset" in view.problems[0]
