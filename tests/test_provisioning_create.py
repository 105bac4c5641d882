"""Creating domains from templates on the test-driver hosts, through the real worker.

Each install method, persistent and transient, started, stopped and paused; the
auto-destroy refusal of a host that cannot; the XML preview; the two phases of a direct
kernel boot (the installer's power-off is the tests' own destroy: the test driver runs no
guest) and its clean-up when phase 2 fails.
"""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from domains.models import Domain, Operation, OperationKind, OperationStatus
from domains.services.common import ActionRefused
from provisioning import services
from provisioning.models import Method, Template
from tests.helpers import client_for, live, wait_finished, wait_for

pytestmark = [pytest.mark.integration]


def make_template(hosts, method: str = Method.CDROM, **fields) -> Template:
    values = {
        "name": f"tpl-{method}",
        "method": method,
        "iso_path": "/srv/iso/debian.iso",
        "kernel": "/srv/boot/vmlinuz",
        "initrd": "/srv/boot/initrd.gz",
        "cmdline": "console=ttyS0 vmpanel.install=1",
        "base_image": "/var/lib/libvirt/images/base.qcow2",
        "vcpus_max": 4,
        "vcpus_current": 1,
        "memory_mib": 512,
        "current_memory_mib": 512,
        "min_vcpus": 1,
        "max_vcpus": 4,
        "min_memory_mib": 128,
        "max_memory_mib": 4096,
        "disk_gib": 10,
    }
    values.update(fields)
    template = Template.objects.create(**values)
    template.hosts.set([hosts.alpha, hosts.beta])
    return template


def _track(make_domain, op: Operation) -> None:
    make_domain.track(op.host.name, op.domain_uuid)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize("method", [Method.CDROM, Method.PXE, Method.DISK])
@pytest.mark.parametrize(
    "persistent,start,paused,expect",
    [
        (True, True, False, (libvirt.VIR_DOMAIN_RUNNING, True)),
        (True, False, False, (libvirt.VIR_DOMAIN_SHUTOFF, True)),
        (True, True, True, (libvirt.VIR_DOMAIN_PAUSED, True)),
        (False, True, False, (libvirt.VIR_DOMAIN_RUNNING, False)),
        (False, True, True, (libvirt.VIR_DOMAIN_PAUSED, False)),
    ],
)
def test_create_from_each_method(
    method, persistent, start, paused, expect, people, hosts, libvirt_hosts, make_domain
):
    template = make_template(hosts, method)
    choice = services.CreateChoice(persistent=persistent, start=start, paused=paused)
    op = services.create_domain(
        people.alice_admin, template, hosts.alpha, people.team_a, "made-1", 2, 512, choice
    )
    _track(make_domain, op)
    assert op.kind == OperationKind.PROVISION and op.status == OperationStatus.QUEUED
    done = wait_finished(op)
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    facts = live(libvirt_hosts.conn("alpha"), op.domain_uuid)
    assert (facts.state, facts.persistent) == expect
    assert facts.name == "made-1"
    row = wait_for(lambda: Domain.objects.filter(uuid=op.domain_uuid, team=people.team_a).first())
    assert row.vcpus == 2 and Operation.objects.get(pk=op.pk).domain == row
    # What was sent is kept: boot order of the method, sizes of the request.
    root = etree.fromstring(done.xml_after.encode())
    boots = [b.get("dev") for b in root.findall("os/boot")]
    assert boots == {"cdrom": ["hd", "cdrom"], "pxe": ["hd", "network"], "disk": ["hd"]}[method]
    assert root.find("vcpu").get("current") == "2"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_kernel_boot_runs_two_phases(people, hosts, libvirt_hosts, make_domain):
    template = make_template(hosts, Method.KERNEL)
    op = services.create_domain(
        people.root, template, hosts.alpha, people.team_a, "kern-1", 1, 256,
        services.CreateChoice(),
    )  # fmt: skip
    _track(make_domain, op)
    conn = libvirt_hosts.conn("alpha")

    def phase_one_runs():
        fresh = Operation.objects.get(pk=op.pk)
        return fresh.params.get("phase") == "1" and live(conn, op.domain_uuid)

    installer = wait_for(phase_one_runs, timeout=10, what="phase 1 running")
    assert installer.active and not installer.persistent
    assert "Phase 1" in Operation.objects.get(pk=op.pk).message
    # The installer powers off: on the test driver nothing runs, so the test does it.
    conn.lookupByUUIDString(str(op.domain_uuid)).destroy()
    done = wait_finished(op, timeout=15)
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    assert done.params["phase"] == "2"
    facts = live(conn, op.domain_uuid)
    assert facts.persistent and facts.state == libvirt.VIR_DOMAIN_RUNNING
    xml = conn.lookupByUUIDString(str(op.domain_uuid)).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    root = etree.fromstring(xml.encode())
    assert root.find("os/kernel") is None and root.find("on_reboot").text == "restart"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_kernel_boot_phase_two_failure_leaves_nothing(people, hosts, libvirt_hosts, make_domain):
    template = make_template(hosts, Method.KERNEL)
    op = services.create_domain(
        people.root, template, hosts.alpha, people.team_a, "kern-2", 1, 256,
        services.CreateChoice(),
    )  # fmt: skip
    _track(make_domain, op)
    conn = libvirt_hosts.conn("alpha")
    wait_for(lambda: live(conn, op.domain_uuid), timeout=10, what="phase 1 running")
    # Someone takes the name meanwhile: phase 2's define must fail on it.
    other = make_domain.define("alpha", name="kern-2-clash")
    conn.lookupByUUIDString(str(op.domain_uuid)).destroy()
    conn.lookupByUUIDString(other).undefine()
    conn.defineXML(make_domain.xml("kern-2", str(other)))
    done = wait_finished(op, timeout=15)
    assert done.status == OperationStatus.FAILED
    assert "Phase 2 failed" in done.error
    assert live(conn, op.domain_uuid) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_failure_leaves_no_domain(people, hosts, libvirt_hosts, make_domain):
    """A domain that libvirt refuses to start (the name taken after the check) is removed."""
    template = make_template(hosts, Method.DISK)
    make_domain.define("alpha", name="taken-later")
    # create_problems sees the name taken: a refusal on record, nothing sent.
    with pytest.raises(ActionRefused, match="has a VM named taken-later"):
        services.create_domain(
            people.root, template, hosts.alpha, people.team_a, "taken-later", 1, 256,
            services.CreateChoice(),
        )  # fmt: skip
    refused = Operation.objects.get(kind=OperationKind.PROVISION)
    assert refused.status == OperationStatus.REFUSED and not refused.task_id


@pytest.mark.django_db
def test_autodestroy_is_refused_on_a_test_driver_host(people, hosts):
    template = make_template(hosts, Method.PXE)
    choice = services.CreateChoice(persistent=False, autodestroy=True)
    with pytest.raises(ActionRefused, match="cannot destroy VMs automatically"):
        services.create_domain(
            people.alice_admin, template, hosts.alpha, people.team_a, "auto-1", 1, 256, choice
        )
    op = Operation.objects.get()
    assert op.status == OperationStatus.REFUSED and op.kind == OperationKind.PROVISION
    assert "cannot destroy VMs automatically" in op.message


@pytest.mark.django_db
def test_only_admins_create(people, hosts):
    template = make_template(hosts, Method.PXE)
    args = (template, hosts.alpha, people.team_a, "x-1", 1, 256, services.CreateChoice())
    with pytest.raises(ActionRefused) as refused:
        services.create_domain(people.olga_operator, *args)
    assert refused.value.status == 403
    with pytest.raises(ActionRefused) as refused:
        services.create_domain(people.bob_b, *args)
    assert refused.value.status == 404
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_preview_page_shows_the_xml_and_the_low_memory_warning(people, hosts):
    template = make_template(hosts, Method.CDROM)
    client = client_for(people.alice_admin)
    data = {
        "team": people.team_a.pk,
        "host": hosts.alpha.pk,
        "name": "pre<&>",
        "vcpus": 1,
        "memory_mib": 256,
        "persistent": "on",
        "start": "on",
    }
    from django.urls import reverse

    url = reverse("template_create", args=[template.pk])
    response = client.post(url, data)
    assert response.status_code == 200
    assert "is not allowed" in response.content.decode()  # refused, never escaped into XML
    data["name"] = "pre-1"
    response = client.post(url, data)
    page = response.content.decode()
    assert response.status_code == 200 and "Create" in page
    preview = response.context["preview"]
    assert not preview.problems, preview.problems
    root = etree.fromstring(preview.xml.encode())
    assert root.findtext("name") == "pre-1" and root.get("type") == "test"
    assert "600" in preview.warning
    assert not Operation.objects.exists()  # a preview sends nothing


@pytest.mark.django_db
def test_create_page_queues_and_shows_the_phase(people, hosts):
    from django.urls import reverse

    template = make_template(hosts, Method.KERNEL)
    client = client_for(people.alice_admin)
    data = {
        "team": people.team_a.pk,
        "host": hosts.alpha.pk,
        "name": "page-1",
        "vcpus": 1,
        "memory_mib": 256,
        "persistent": "on",
        "start": "on",
        "confirm": "1",
    }
    response = client.post(reverse("template_create", args=[template.pk]), data)
    op = Operation.objects.get()
    assert response.status_code == 303
    assert response["Location"] == reverse("provision_detail", args=[op.pk])
    assert op.status == OperationStatus.QUEUED and op.team == people.team_a
    Operation.objects.filter(pk=op.pk).update(
        status=OperationStatus.RUNNING, params={**op.params, "phase": "1"}
    )
    page = client_for(people.victor_viewer).get(response["Location"], HTTP_HX_REQUEST="true")
    assert page.status_code == 200 and 'hx-trigger="every 2s"' in page.content.decode()
    assert page.context["op"].params["phase"] == "1"
    assert client_for(people.bob_b).get(response["Location"]).status_code == 404
    # Transient with auto-destroy on a test-driver host: a plain refusal, 409, on record.
    data.update(name="page-2", persistent="", autodestroy="on")
    template.method = Method.PXE
    template.save()
    response = client.post(reverse("template_create", args=[template.pk]), data)
    assert response.status_code == 409
    assert "cannot destroy VMs automatically" in response.content.decode()
    assert Operation.objects.filter(status=OperationStatus.REFUSED).count() == 1
