"""What a VM made from a template gets, as its XML says: its screen where the console proxy
can reach it (the host's console address when it has one, else its own 127.0.0.1), with a
password from the start so the panel can set a fresh one for each console; and the memory
it was asked for, running."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from lxml import etree

from domains import domxml, hypervisor
from provisioning import services
from provisioning.models import Method
from tests.test_provisioning_create import make_template

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.mark.parametrize("console_address", ["", "10.0.0.2"])
def test_a_template_screen_listens_on_the_console_address(hosts, console_address):
    hosts.alpha.console_address = console_address
    hosts.alpha.save(update_fields=["console_address"])
    template = make_template(hosts, Method.KERNEL, vnc=True)
    # The hosts here are libvirt's test driver, whose domain capabilities name no
    # graphics; the host's answer where VNC is offered, as a QEMU host gives it:
    caps = hypervisor.HostCapabilities(domain_types=("qemu",), graphics=("vnc", "spice"))
    spec = services.template_to_spec(
        template, "screen-1", str(uuidlib.uuid4()), 1, 512, hosts.alpha, caps=caps
    )
    graphics = etree.fromstring(domxml.build_domain(spec).encode()).find("devices/graphics")
    assert graphics.get("listen") == (console_address or "127.0.0.1")
    assert len(graphics.get("passwd")) == 8
    # Each VM its own password.
    again = services.template_to_spec(
        template, "screen-2", str(uuidlib.uuid4()), 1, 512, hosts.alpha, caps=caps
    )
    assert again.vnc_password != spec.vnc_password


@pytest.mark.parametrize(
    "template_mib, template_current, asked, runs_with",
    [
        (512, 512, 1024, 1024),  # more than the template: all of it, not the template's 512
        (1024, 768, 1024, 768),  # the template's own size: its current memory
        (2048, 1024, 4096, 2048),  # the same share of balloon headroom
        (1024, 1024, 256, 256),
    ],
)
def test_a_vm_runs_with_the_memory_it_was_asked_for(
    hosts, template_mib, template_current, asked, runs_with
):
    template = make_template(
        hosts, Method.PXE, memory_mib=template_mib, current_memory_mib=template_current
    )
    spec = services.template_to_spec(
        template, "sized-1", str(uuidlib.uuid4()), 2, asked, hosts.alpha,
        caps=hypervisor.HostCapabilities(domain_types=("qemu",)),
    )  # fmt: skip
    root = etree.fromstring(domxml.build_domain(spec).encode())
    assert int(root.findtext("memory")) == asked * 1024
    assert int(root.findtext("currentMemory")) == runs_with * 1024
