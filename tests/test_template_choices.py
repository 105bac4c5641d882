"""The template's choices are the values domxml validates with, so every choice builds."""

from __future__ import annotations

import uuid

import pytest

from domains import domxml
from domains.hypervisor import HostCapabilities
from domains.models import Host
from provisioning.models import Method, Template
from provisioning.services import template_to_spec

FIELDS = {
    "domain_type": domxml.DOMAIN_TYPES,
    "vcpu_placement": domxml.VCPU_PLACEMENTS,
    "firmware": domxml.FIRMWARES,
    "smbios_mode": domxml.SMBIOS_MODES,
    "clock_offset": domxml.CLOCK_OFFSETS,
    "on_poweroff": domxml.POWEROFF_ACTIONS,
    "on_reboot": domxml.REBOOT_ACTIONS,
    "on_crash": domxml.CRASH_ACTIONS,
    "disk_format": domxml.DISK_FORMATS,
    "disk_bus": domxml.DISK_BUSES,
    "net_type": domxml.INTERFACE_TYPES,
}


@pytest.mark.parametrize("field", FIELDS)
def test_choices_are_the_values_domxml_validates_with(field):
    values = tuple(value for value, _label in Template._meta.get_field(field).choices)
    assert values == FIELDS[field]


# A host that runs every domain type, so the template's own type is kept.
EVERYTHING = HostCapabilities(domain_types=domxml.DOMAIN_TYPES, graphics=("vnc",))


@pytest.mark.parametrize(
    "field,value", [(field, value) for field, values in FIELDS.items() for value in values]
)
def test_every_choice_builds(field, value):
    template = Template(
        name="t",
        method=Method.CDROM,
        iso_path="/srv/iso/x.iso",
        loader="/usr/share/OVMF/OVMF_CODE.fd",  # what uefi needs
        **{field: value},
    )
    spec = template_to_spec(
        template, "vm1", str(uuid.uuid4()), 1, 1024, Host(name="h", uri="x"), EVERYTHING
    )
    domxml.build_domain(spec)  # validates first: a SpecError fails the test
    own_disk = spec.disks[0]
    carried = {
        "disk_bus": own_disk.bus,
        "disk_format": own_disk.format,
        "net_type": spec.interfaces[0].type,
    }
    assert carried.get(field, getattr(spec, field, None)) == value


def test_template_model_defaults_build():
    spec = template_to_spec(
        Template(name="t", method=Method.PXE), "vm1", str(uuid.uuid4()), 1, 1024,
        Host(name="h", uri="x"), EVERYTHING,
    )  # fmt: skip
    domxml.validate_spec(spec)
    assert spec.domain_type == "kvm"
