"""VMs made from templates show their screen where the console proxy can reach it: on the
host's console address when it has one (remote hosts), else on its own 127.0.0.1 — with a
password from the start, so the panel can set a fresh one for each console."""

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
