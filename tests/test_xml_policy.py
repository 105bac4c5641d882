"""A team admin's raw XML cannot reach past the role: the host's emulator, platforms,
folders, and no pass-through. Superusers may, and what they waived is on record.

The rules are tested without a daemon first (sample XML), then through the service on
the test-driver hosts, where libvirt would have accepted every one of these edits.
"""

from __future__ import annotations

import pytest

from domains import domxml
from domains.models import Operation, OperationStatus
from domains.rules import edit_policy_problems
from domains.services import xmledit
from domains.services.common import ActionRefused
from provisioning import services as provisioning
from tests.helpers import wait_finished
from tests.test_provisioning_create import make_template
from tests.test_resize_and_xml import current_xml, with_description

QEMU_CAPS = """<capabilities><host/>
<guest><os_type>hvm</os_type><arch name='x86_64'>
  <emulator>/usr/bin/qemu-system-x86_64</emulator>
  <machine canonical='pc-i440fx-7.2'>pc</machine><machine>pc-i440fx-7.2</machine>
  <machine canonical='pc-q35-7.2'>q35</machine>
  <domain type='qemu'/><domain type='kvm'/>
</arch></guest></capabilities>"""
PLATFORMS = domxml.read_platforms(QEMU_CAPS)
ROOTS = ("/var/lib/libvirt/images", "/srv/iso")
SAVED = """<domain type='kvm'><name>web1</name>
<uuid>11111111-2222-3333-4444-555555555555</uuid><memory>1048576</memory>
<os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><source file='/var/lib/libvirt/images/web1.qcow2'/>
<target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/opt/legacy/tools.iso'/>
<target dev='sda' bus='sata'/></disk></devices></domain>"""

EDITS = {
    "emulator": (
        "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
        "<emulator>/bin/sh</emulator>",
    ),
    "disk": ("</devices>", "<disk type='file'><source file='/etc/shadow'/></disk></devices>"),
    "serial": (
        "</devices>",
        "<serial type='file'><source path='/etc/cron.d/evil'/><target port='0'/></serial>"
        "</devices>",
    ),
    "dotdot": ("web1.qcow2", "../../../etc/shadow"),
    "kernel": ("</os>", "<kernel>/root/vmlinuz</kernel></os>"),
    "type": ("<domain type='kvm'>", "<domain type='xen'>"),
    "machine": ("machine='pc-i440fx-7.2'", "machine='virt'"),
    "commandline": (
        "<domain type='kvm'>",
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline>",
    ),
    "hostdev": (
        "</devices>",
        "<hostdev mode='subsystem' type='pci'><source><address bus='0x00' slot='0x1f'/>"
        "</source></hostdev></devices>",
    ),
    "interface hostdev": ("</devices>", "<interface type='hostdev'/></devices>"),
    "seclabel": ("</devices>", "</devices><seclabel type='none'/>"),
    "network disk": (
        "</devices>",
        "<disk type='network'><source protocol='http' name='x'><host name='10.0.0.1'/>"
        "</source></disk></devices>",
    ),
    "script": ("</devices>", "<interface type='ethernet'><script path='x'/></interface></devices>"),
}


def _problems(edited: str, allow_hostdev: bool = False) -> list[str]:
    return edit_policy_problems(
        domxml.read_domain_reach(edited),
        domxml.read_domain_reach(SAVED),
        PLATFORMS,
        ROOTS,
        allow_hostdev,
    )


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_escalating_edit_is_named(edit):
    old, new = EDITS[edit]
    assert old in SAVED
    assert _problems(SAVED.replace(old, new, 1)), edit


def test_what_stays_inside_is_allowed():
    edited = SAVED.replace(
        "</devices>",
        "<disk type='file' device='cdrom'><source file='/srv/iso/debian.iso'/></disk>"
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        "<serial type='file'><source path='/var/lib/libvirt/images/web1.log'/></serial>"
        "</devices><description>see /etc/shadow, /root</description>",
    ).replace("machine='pc-i440fx-7.2'", "machine='q35'")
    # The saved configuration's own /opt/legacy/tools.iso stays: a superuser put it there.
    assert _problems(edited) == []


def test_host_devices_where_a_superuser_allowed_them():
    old, new = EDITS["hostdev"]
    assert _problems(SAVED.replace(old, new), allow_hostdev=True) == []


def test_the_words_say_what_and_where():
    old, new = EDITS["disk"]
    (problem,) = _problems(SAVED.replace(old, new))
    assert problem.startswith("/etc/shadow (devices/disk/source@file) is outside the folders")
    assert "/var/lib/libvirt/images, /srv/iso" in problem


# --- through the service, on the test-driver hosts -------------------------------------

TEST_DRIVER_EDITS = {
    "emulator": ("<devices>", "<devices><emulator>/bin/sh</emulator>"),
    "disk": (
        "</devices>",
        "<disk type='file' device='disk'><source file='/etc/shadow'/>"
        "<target dev='vdz' bus='virtio'/></disk></devices>",
    ),
    "serial": (
        "</devices>",
        "<serial type='file'><source path='/etc/cron.d/evil'/><target port='0'/></serial>"
        "</devices>",
    ),
    "type": ("<domain type='test'>", "<domain type='kvm'>"),
}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("edit", sorted(TEST_DRIVER_EDITS))
def test_a_team_admin_cannot_escalate_through_xml(edit, people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    before = current_xml(libvirt_hosts, domain)
    old, new = TEST_DRIVER_EDITS[edit]
    assert old in before
    edited = with_description(before.replace(old, new, 1))

    preview = xmledit.preview_domain_xml(people.alice_admin, domain, edited)
    assert preview.problem and not preview.diff
    with pytest.raises(ActionRefused) as refused:
        xmledit.edit_domain_xml(people.alice_admin, domain, edited)

    assert refused.value.status == 409
    assert refused.value.operation.status == OperationStatus.REFUSED
    assert current_xml(libvirt_hosts, domain) == before


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("edit", ["emulator", "disk", "serial"])
def test_a_superuser_may_and_it_is_on_record(
    edit, people, make_domain, libvirt_hosts, celery_worker
):
    domain = make_domain(state="shutoff")
    old, new = TEST_DRIVER_EDITS[edit]
    edited = with_description(current_xml(libvirt_hosts, domain).replace(old, new, 1))

    op = wait_finished(xmledit.edit_domain_xml(people.root, domain, edited))

    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert op.params["policy_waived"], "what the superuser waived is on record"
    assert new.split(">")[1].split("=")[-1].strip("'/") in current_xml(libvirt_hosts, domain)


@pytest.mark.integration
@pytest.mark.django_db
def test_a_template_file_outside_the_folders_is_refused_for_team_admins(people, hosts):
    template = make_template(hosts, iso_path="/etc/shadow")
    choice = provisioning.CreateChoice(persistent=True, start=False)

    with pytest.raises(ActionRefused, match="/etc/shadow"):
        provisioning.create_domain(
            people.alice_admin, template, hosts.alpha, people.team_a, "web-9", 1, 512, choice
        )
    assert not Operation.objects.exclude(status=OperationStatus.REFUSED).exists()
    # A superuser may (the template is theirs to make, and the record says who).
    op = provisioning.create_domain(
        people.root, template, hosts.alpha, people.team_a, "web-9", 1, 512, choice
    )
    assert op.status == OperationStatus.QUEUED
