"""Resizing vCPUs and memory (live, saved, maximums) and editing the raw XML.

Integration tier: the real worker applies the changes on the test-driver hosts, and every
effect is read back through the tests' own libvirt connection. The test driver really
does setVcpusFlags/setMemoryFlags: live and saved values move apart as on QEMU, a maximum
changes only in the saved configuration, and defineXMLFlags(VALIDATE) checks libvirt's
schema. Every refusal happens before libvirt is asked to change anything: no operation is
queued, one `refused` row says why, and libvirt's view is as before.
"""

from __future__ import annotations

import re
import uuid as uuidlib

import libvirt
import pytest

from domains import domxml
from domains.models import Operation, OperationKind, OperationStatus
from domains.rules import ResizeRequest
from domains.services import resize, xmledit
from domains.services.common import ActionRefused
from tests.helpers import client_for, fresh, live, wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
SECURE = libvirt.VIR_DOMAIN_XML_SECURE


def _dom(libvirt_hosts, domain) -> libvirt.virDomain:
    # A fresh lookup every time: a virDomain caches what it read.
    return libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid))


def saved(libvirt_hosts, domain) -> tuple[int, int, int, int]:
    """(vCPUs, maximum vCPUs, memory MiB, maximum memory MiB) of the saved configuration."""
    xml = _dom(libvirt_hosts, domain).XMLDesc(INACTIVE)
    vcpu = domxml.vcpu_counts(xml)
    memory = domxml.memory_counts(xml)
    return vcpu.current, vcpu.maximum, memory.current_kib // 1024, memory.maximum_kib // 1024


def running(libvirt_hosts, domain) -> tuple[int, int, int, int]:
    """The same four numbers of the running domain, as libvirt reports them live."""
    dom = _dom(libvirt_hosts, domain)
    _state, max_kib, kib, _vcpus, _t = dom.info()
    return (
        dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE),
        dom.maxVcpus(),
        kib // 1024,
        max_kib // 1024,
    )


def everything(libvirt_hosts, domain) -> tuple:
    """All libvirt says about the domain: facts, and both XMLs (with secrets)."""
    dom = _dom(libvirt_hosts, domain)
    xmls = [dom.XMLDesc(INACTIVE | SECURE)]
    if dom.isActive():
        xmls.append(dom.XMLDesc(SECURE))
    return live(libvirt_hosts.conn("alpha"), domain.uuid), *xmls


def assert_refused_on_record(excinfo, user, domain, kind: str, says: str) -> Operation:
    """One refused row with the message, nothing queued, no task."""
    assert says in excinfo.value.message, excinfo.value.message
    op = Operation.objects.get()
    assert (op.status, op.kind, op.user, op.domain) == (OperationStatus.REFUSED, kind, user, domain)
    assert op.message == excinfo.value.message and not op.task_id
    return op


# --- resize: the page --------------------------------------------------------------


def test_resize_page_shows_the_values_and_explains_the_limits(people, make_domain):
    domain = make_domain(state="running", vcpus=2, memory_mib=384)

    page = client_for(people.olga_operator).get(f"/domains/alpha/{domain.uuid}/resize/")

    text = page.content.decode()
    assert page.status_code == 200
    assert "online the new vCPUs" in text
    assert "only change in the saved configuration and takes effect at the next boot" in text
    # The test driver's host has 16 CPUs.
    assert "Host alpha has 16 CPUs" in text and "overcommits" in text
    # The form starts from the running values, live and saved both ticked.
    assert 'name="vcpus" value="2"' in text and 'name="memory_mib" value="384"' in text
    assert 'name="vcpus_max" value="2"' in text and 'name="memory_max_mib" value="384"' in text
    assert 'name="live" id="id_live" checked' in text
    assert 'name="config" id="id_config" checked' in text


def test_resize_page_of_a_shut_off_domain_offers_the_saved_configuration(people, make_domain):
    domain = make_domain(state="shutoff")

    text = client_for(people.olga_operator).get(f"/domains/alpha/{domain.uuid}/resize/")
    text = text.content.decode()

    assert 'name="live" id="id_live">' in text  # not ticked
    assert 'name="config" id="id_config" checked' in text
    assert "shut off" in text


@pytest.mark.parametrize(
    ("who", "status"),
    [("victor_viewer", 403), ("bob_b", 404), ("nora_noteam", 404), ("alice_admin", 200)],
)
def test_resize_page_is_for_operators(who, status, people, make_domain):
    domain = make_domain(state="running")
    page = client_for(getattr(people, who)).get(f"/domains/alpha/{domain.uuid}/resize/")
    assert page.status_code == status


def test_viewer_post_is_refused_on_record_and_outsider_gets_404(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    before = everything(libvirt_hosts, domain)
    data = {"vcpus": 1, "vcpus_max": 4, "memory_mib": 256, "memory_max_mib": 256}

    outsider = client_for(people.bob_b).post(f"/domains/alpha/{domain.uuid}/resize/", data)
    assert outsider.status_code == 404 and not Operation.objects.exists()

    viewer = client_for(people.victor_viewer).post(f"/domains/alpha/{domain.uuid}/resize/", data)
    assert viewer.status_code == 403
    op = Operation.objects.get()
    assert (op.kind, op.status, op.user) == (
        OperationKind.RESIZE,
        OperationStatus.REFUSED,
        people.victor_viewer,
    )
    assert everything(libvirt_hosts, domain) == before


def test_detail_panel_offers_resize_to_operators_and_xml_to_admins(people, make_domain):
    domain = make_domain(state="running")
    url = f"/domains/alpha/{domain.uuid}/"
    resize, xml = f"{url}resize/", f"{url}xml/"

    viewer = client_for(people.victor_viewer).get(url).content.decode()
    operator = client_for(people.olga_operator).get(url).content.decode()
    admin = client_for(people.alice_admin).get(url).content.decode()

    assert resize not in viewer and xml not in viewer
    assert resize in operator and xml not in operator
    assert (
        resize in admin
        and xml in admin
        and "Edit XML…" in admin
        and "Change vCPUs or memory…" in admin
    )


# --- resize: the work, read back from libvirt ---------------------------------------


def test_resize_saved_configuration_with_new_maximums(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="shutoff", vcpus=1, memory_mib=256)
    assert saved(libvirt_hosts, domain) == (1, 1, 256, 256)

    response = client_for(people.olga_operator).post(
        f"/domains/alpha/{domain.uuid}/resize/",
        {"vcpus": 3, "vcpus_max": 4, "memory_mib": 384, "memory_max_mib": 512, "config": "on"},
    )

    op = Operation.objects.get(kind=OperationKind.RESIZE)
    assert response.status_code == 303 and response["Location"] == f"/operations/{op.pk}/"
    op = wait_finished(op)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    # The maximums went first, so the counts could rise to them.
    assert saved(libvirt_hosts, domain) == (3, 4, 384, 512)
    assert op.params == {
        "vcpus": 3, "vcpus_max": 4, "memory_mib": 384, "memory_max_mib": 512,
        "live": False, "config": True,
    }  # fmt: skip
    assert "maximum vCPUs 4" in op.message and "memory 384 MiB" in op.message
    # The record keeps the saved configuration before and after.
    assert domxml.vcpu_counts(op.xml_before) == domxml.VcpuCounts(1, 1)
    assert domxml.vcpu_counts(op.xml_after) == domxml.VcpuCounts(3, 4)
    assert domxml.memory_counts(op.xml_after).maximum_kib == 512 * 1024
    row = fresh(domain)
    assert (row.vcpus, row.memory_kib, row.max_memory_kib) == (3, 384 * 1024, 512 * 1024)
    # The operation page shows it.
    page = client_for(people.victor_viewer).get(f"/operations/{op.pk}/").content.decode()
    assert "XML before" in page and "XML after" in page


def test_resize_live_only_leaves_the_saved_configuration(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="running", vcpus=2, memory_mib=512)
    assert running(libvirt_hosts, domain) == (2, 2, 512, 512)

    op = resize.resize_domain(
        people.olga_operator,
        domain,
        ResizeRequest(vcpus=1, memory_mib=300, live=True, config=False),
    )

    op = wait_finished(op)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert running(libvirt_hosts, domain) == (1, 2, 300, 512)
    assert saved(libvirt_hosts, domain) == (2, 2, 512, 512)
    assert "(live)" in op.message
    assert (fresh(domain).vcpus, fresh(domain).memory_kib) == (1, 300 * 1024)


def test_resize_live_and_saved_with_a_new_maximum_for_the_next_boot(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="running", vcpus=2, memory_mib=512)

    op = resize.resize_domain(
        people.olga_operator,
        domain,
        ResizeRequest(
            vcpus=1, vcpus_max=6, memory_mib=256, memory_max_mib=1024, live=True, config=True
        ),
    )

    op = wait_finished(op)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    # Live: the counts changed, the maximums did not (they wait for the next boot) …
    assert running(libvirt_hosts, domain) == (1, 2, 256, 512)
    # … which the saved configuration holds.
    assert saved(libvirt_hosts, domain) == (1, 6, 256, 1024)
    assert "live and in the saved configuration" in op.message
    assert "from the next boot" in op.message
    # After a power cycle the new maximums are the running ones.
    dom = _dom(libvirt_hosts, domain)
    dom.destroy()
    dom.create()
    assert running(libvirt_hosts, domain) == (1, 6, 256, 1024)


def test_lowering_a_maximum_below_the_count_lowers_the_count_first(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="shutoff", vcpus=4, memory_mib=512)

    op = resize.resize_domain(
        people.olga_operator,
        domain,
        ResizeRequest(vcpus=2, vcpus_max=2, memory_mib=256, memory_max_mib=256, config=True),
    )

    op = wait_finished(op)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert saved(libvirt_hosts, domain) == (2, 2, 256, 256)


def test_transient_domain_resizes_live(people, make_domain, celery_worker, libvirt_hosts):
    domain = make_domain(state="running", persistent=False, vcpus=2)

    page = client_for(people.olga_operator).get(f"/domains/alpha/{domain.uuid}/resize/")
    assert 'name="config" id="id_config">' in page.content.decode()  # not ticked
    op = wait_finished(
        resize.resize_domain(people.olga_operator, domain, ResizeRequest(vcpus=1, live=True))
    )

    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert running(libvirt_hosts, domain)[0] == 1


# --- resize: every refusal, before libvirt ------------------------------------------


REFUSALS = {
    "live on a shut-off domain": (
        {"state": "shutoff"},
        {"vcpus": 1, "memory_mib": 200, "live": True},
        "a live change needs it running",
    ),
    "saved configuration of a transient domain": (
        {"state": "running", "persistent": False},
        {"memory_mib": 200, "config": True},
        "temporary: it has no saved configuration",
    ),
    "maximum of a transient domain": (
        {"state": "running", "persistent": False},
        {"vcpus_max": 4, "live": True},
        "maximums change only in a saved configuration",
    ),
    "no vCPU": ({"state": "shutoff"}, {"vcpus": 0, "config": True}, "vCPUs must be at least 1"),
    "no memory": (
        {"state": "shutoff"},
        {"memory_mib": 0, "config": True},
        "Memory must be at least 1",
    ),
    "vCPUs above the saved maximum": (
        {"state": "shutoff", "vcpus": 2},
        {"vcpus": 3, "config": True},
        "3 vCPUs is more than the maximum of 2 in the saved configuration",
    ),
    "vCPUs above the new maximum": (
        {"state": "shutoff", "vcpus": 2},
        {"vcpus": 5, "vcpus_max": 4, "config": True},
        "5 vCPUs is more than the maximum of 4",
    ),
    "vCPUs above the running maximum": (
        {"state": "running", "vcpus": 2},
        {"vcpus": 3, "vcpus_max": 4, "live": True, "config": True},
        "more than the running VM's maximum of 2",
    ),
    "memory above the saved maximum": (
        {"state": "shutoff", "memory_mib": 256},
        {"memory_mib": 300, "config": True},
        "300 MiB is more than the maximum memory of 256 MiB",
    ),
    "memory above the running maximum": (
        {"state": "running", "memory_mib": 256},
        {"memory_mib": 300, "live": True},
        "more than the running VM's maximum memory of 256 MiB",
    ),
    "new maximum below the saved vCPUs": (
        {"state": "shutoff", "vcpus": 4},
        {"vcpus_max": 2, "config": False},
        "new maximum of 2 vCPUs is below the 4 vCPUs",
    ),
    "new maximum memory below the saved memory": (
        {"state": "shutoff", "memory_mib": 512},
        {"memory_max_mib": 256},
        "new maximum memory of 256 MiB is below the 512 MiB",
    ),
    "nowhere to change": (
        {"state": "running"},
        {"vcpus": 1, "memory_mib": 128},
        "Choose where the change goes",
    ),
    "nothing to change": (
        {"state": "running", "vcpus": 1, "memory_mib": 256},
        {
            "vcpus": 1,
            "vcpus_max": 1,
            "memory_mib": 256,
            "memory_max_mib": 256,
            "live": True,
            "config": True,
        },
        "Nothing to change",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_resize_refusal(case, people, make_domain, libvirt_hosts):
    kwargs, request, says = REFUSALS[case]
    domain = make_domain(**kwargs)
    before = everything(libvirt_hosts, domain)

    with pytest.raises(ActionRefused) as excinfo:
        resize.resize_domain(people.olga_operator, domain, ResizeRequest(**request))

    assert excinfo.value.status == 409
    op = assert_refused_on_record(excinfo, people.olga_operator, domain, "resize", says)
    assert op.params["live"] == bool(request.get("live"))
    assert everything(libvirt_hosts, domain) == before


def test_resize_refusal_is_shown_on_the_page(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff", vcpus=2)
    before = everything(libvirt_hosts, domain)

    response = client_for(people.olga_operator).post(
        f"/domains/alpha/{domain.uuid}/resize/",
        {"vcpus": 3, "vcpus_max": 2, "memory_mib": 256, "memory_max_mib": 256, "config": "on"},
    )

    assert response.status_code == 409
    text = response.content.decode()
    assert "Not sent to libvirt" in text and "raise the maximum as well" in text
    assert Operation.objects.get().status == OperationStatus.REFUSED
    assert everything(libvirt_hosts, domain) == before


def test_resize_above_the_team_quota_is_refused_before_libvirt(
    people, make_domain, libvirt_hosts, celery_worker
):
    """Issue 13: a bigger VM counts against its team's quota as a new one does; growth
    beyond it is refused with the numbers, a change within it goes through, and a team
    already over its limits may still make a VM smaller."""
    from provisioning.models import Quota
    from provisioning.services import usage

    domain = make_domain(state="shutoff", vcpus=2, memory_mib=256)
    used = usage(people.team_a)
    Quota.objects.update_or_create(
        team=people.team_a,
        defaults={"max_vcpus": used.vcpus, "max_memory_mib": used.memory_mib + 128},
    )
    before = everything(libvirt_hosts, domain)

    with pytest.raises(ActionRefused) as excinfo:
        resize.resize_domain(
            people.olga_operator, domain,
            ResizeRequest(memory_mib=512, memory_max_mib=512, config=True),
        )  # fmt: skip
    says = f"would use {used.memory_mib + 256} of {used.memory_mib + 128} MiB of memory"
    assert_refused_on_record(excinfo, people.olga_operator, domain, "resize", says)
    assert everything(libvirt_hosts, domain) == before

    op = wait_finished(
        resize.resize_domain(
            people.olga_operator, domain,
            ResizeRequest(memory_mib=384, memory_max_mib=512, config=True),
        )
    )  # fmt: skip
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert saved(libvirt_hosts, domain)[2:] == (384, 512)

    Quota.objects.filter(team=people.team_a).update(max_vcpus=1)  # now over the limit
    op = wait_finished(
        resize.resize_domain(
            people.olga_operator, fresh(domain), ResizeRequest(vcpus=1, config=True)
        )
    )
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)


def test_resize_form_wants_whole_numbers(people, make_domain):
    domain = make_domain(state="shutoff")
    response = client_for(people.olga_operator).post(
        f"/domains/alpha/{domain.uuid}/resize/",
        {"vcpus": "two", "vcpus_max": 2, "memory_mib": 256, "memory_max_mib": 256},
    )
    assert response.status_code == 400 and "whole number" in response.content.decode()
    assert not Operation.objects.exists()


def test_resize_while_busy_is_refused(people, make_domain):
    domain = make_domain(state="shutoff")
    busy = Operation.objects.create(
        kind=OperationKind.START, user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, team=domain.team, status=OperationStatus.RUNNING,
    )  # fmt: skip

    with pytest.raises(ActionRefused) as excinfo:
        resize.resize_domain(people.olga_operator, domain, ResizeRequest(vcpus_max=2))

    assert f"busy with operation #{busy.pk}" in excinfo.value.message


# --- raw XML --------------------------------------------------------------------------


def current_xml(libvirt_hosts, domain) -> str:
    return _dom(libvirt_hosts, domain).XMLDesc(INACTIVE | SECURE)


def with_description(xml: str, text: str = "edited by hand") -> str:
    return xml.replace("</uuid>", f"</uuid>\n  <description>{text}</description>", 1)


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("olga_operator", 403),
        ("victor_viewer", 403),
        ("bob_b", 404),
        ("nora_noteam", 404),
        ("alice_admin", 200),
        ("root", 200),
    ],
)
def test_xml_page_is_for_team_admins(who, status, people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    page = client_for(getattr(people, who)).get(f"/domains/alpha/{domain.uuid}/xml/")
    assert page.status_code == status
    if status == 200:
        text = page.content.decode()
        assert "<textarea" in text and f"&lt;uuid&gt;{domain.uuid}&lt;/uuid&gt;" in text


def test_xml_post_by_an_operator_is_refused_on_record(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    before = everything(libvirt_hosts, domain)
    xml = with_description(current_xml(libvirt_hosts, domain))

    response = client_for(people.olga_operator).post(
        f"/domains/alpha/{domain.uuid}/xml/", {"xml": xml, "save": "1"}
    )

    assert response.status_code == 403
    op = Operation.objects.get()
    assert (op.kind, op.status) == (OperationKind.EDIT_XML, OperationStatus.REFUSED)
    assert everything(libvirt_hosts, domain) == before


def test_xml_preview_shows_the_diff_and_changes_nothing(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    before = everything(libvirt_hosts, domain)
    xml = with_description(current_xml(libvirt_hosts, domain))

    response = client_for(people.alice_admin).post(
        f"/domains/alpha/{domain.uuid}/xml/", {"xml": xml, "preview": "1"}
    )

    text = response.content.decode()
    assert response.status_code == 200
    assert '<span class="diff-add">+  &lt;description&gt;edited by hand' in text
    # The textarea keeps what was typed, for the save that follows.
    assert "edited by hand&lt;/description&gt;" in text.split("<textarea", 1)[1]
    assert not Operation.objects.exists()
    assert everything(libvirt_hosts, domain) == before


def test_xml_save_redefines_and_keeps_before_after_and_diff(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="shutoff", memory_mib=256)
    old = current_xml(libvirt_hosts, domain)
    xml = with_description(old).replace(
        "<memory unit='KiB'>262144</memory>", "<memory unit='KiB'>524288</memory>"
    )
    assert "524288" in xml

    response = client_for(people.alice_admin).post(
        f"/domains/alpha/{domain.uuid}/xml/", {"xml": xml, "save": "1"}
    )

    op = Operation.objects.get(kind=OperationKind.EDIT_XML)
    assert response.status_code == 303 and response["Location"] == f"/operations/{op.pk}/"
    op = wait_finished(op)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    now = current_xml(libvirt_hosts, domain)
    assert "<description>edited by hand</description>" in now
    assert domxml.memory_counts(now).maximum_kib == 512 * 1024
    assert "edited by hand" not in op.xml_before and "edited by hand" in op.xml_after
    assert "+  <description>edited by hand</description>" in op.params["diff"]
    assert '-  <memory unit="KiB">262144</memory>' in op.params["diff"]
    assert fresh(domain).max_memory_kib == 512 * 1024
    # The whole team sees the change on the operation page, as a diff.
    page = client_for(people.victor_viewer).get(f"/operations/{op.pk}/").content.decode()
    assert "Changes to the saved configuration" in page and "diff-add" in page
    assert "diff=" not in page  # not repeated among the parameters


def test_xml_save_of_a_running_domain_waits_for_the_next_boot(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="running")
    xml = with_description(current_xml(libvirt_hosts, domain), "for the next boot")

    op = wait_finished(xmledit.edit_domain_xml(people.alice_admin, domain, xml))

    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert "next boot" in op.message
    dom = _dom(libvirt_hosts, domain)
    assert "for the next boot" in dom.XMLDesc(INACTIVE)
    assert "for the next boot" not in dom.XMLDesc(0)


def test_schema_invalid_xml_fails_in_libvirt_and_changes_nothing(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="shutoff")
    before = everything(libvirt_hosts, domain)
    xml = current_xml(libvirt_hosts, domain)
    bad = xml.replace("<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>abc</vcpu>")
    assert bad != xml

    op = wait_finished(xmledit.edit_domain_xml(people.alice_admin, domain, bad))

    assert op.status == OperationStatus.FAILED
    assert "failed to validate against schema" in op.error  # libvirt's own words
    assert op.error_code == libvirt.VIR_ERR_XML_INVALID_SCHEMA
    assert "nothing was changed" in op.message
    assert everything(libvirt_hosts, domain) == before
    # The record keeps what was tried.
    assert "abc" in op.xml_after and op.xml_before


XML_REFUSALS = {
    "malformed": (lambda x: x.replace("</name>", "</nam>", 1), "Malformed XML"),
    "not a domain": (lambda x: "<network><name>n</name></network>", "not a <domain>"),
    "another UUID": (
        lambda x: re.sub("<uuid>[^<]*</uuid>", f"<uuid>{uuidlib.uuid4()}</uuid>", x),
        "The UUID must stay",
    ),
    "no UUID": (lambda x: x.split("<uuid>")[0] + x.split("</uuid>")[1], "The UUID must stay"),
    "another name": (lambda x: x.replace("<name>", "<name>renamed-", 1), "The name must stay"),
    "the same XML": (lambda x: x, "nothing to change"),
    "external entity (XXE)": (
        lambda x: (
            '<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
            + with_description(x, "&xxe;")
        ),
        "DOCTYPE or entity declarations are not allowed",
    ),
    "entity expansion": (
        lambda x: (
            '<!DOCTYPE domain [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
            + with_description(x, "&b;&b;&b;")
        ),
        "DOCTYPE or entity declarations are not allowed",
    ),
}


@pytest.mark.parametrize("case", list(XML_REFUSALS))
def test_xml_refusal(case, people, make_domain, libvirt_hosts):
    edit, says = XML_REFUSALS[case]
    domain = make_domain(state="shutoff")
    before = everything(libvirt_hosts, domain)
    xml = edit(current_xml(libvirt_hosts, domain))

    with pytest.raises(ActionRefused) as excinfo:
        xmledit.edit_domain_xml(people.alice_admin, domain, xml)

    assert excinfo.value.status == 409
    assert_refused_on_record(excinfo, people.alice_admin, domain, "edit_xml", says)
    assert everything(libvirt_hosts, domain) == before


def test_xxe_is_not_expanded_in_preview_or_save(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    before = everything(libvirt_hosts, domain)
    xml = '<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n' + with_description(
        current_xml(libvirt_hosts, domain), "&xxe;"
    )
    client = client_for(people.alice_admin)
    url = f"/domains/alpha/{domain.uuid}/xml/"

    preview = client.post(url, {"xml": xml, "preview": "1"})
    save = client.post(url, {"xml": xml, "save": "1"})

    for response in (preview, save):
        text = response.content.decode()
        assert "root:x:0" not in text
        assert "DOCTYPE or entity declarations are not allowed" in text
    assert save.status_code == 409
    assert Operation.objects.get().status == OperationStatus.REFUSED  # the save, on record
    assert everything(libvirt_hosts, domain) == before


def test_malformed_xml_says_the_parsers_message_on_the_page(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    xml = current_xml(libvirt_hosts, domain).replace("</name>", "", 1)

    response = client_for(people.alice_admin).post(
        f"/domains/alpha/{domain.uuid}/xml/", {"xml": xml, "preview": "1"}
    )

    text = response.content.decode()
    assert "Malformed XML" in text and "line" in text
    assert "What saving changes" not in text


def test_transient_domain_has_no_xml_to_edit(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running", persistent=False)
    xml = with_description(_dom(libvirt_hosts, domain).XMLDesc(SECURE))

    page = client_for(people.alice_admin).get(f"/domains/alpha/{domain.uuid}/xml/")
    assert "temporary" in page.content.decode() and "<textarea" not in page.content.decode()
    with pytest.raises(ActionRefused) as excinfo:
        xmledit.edit_domain_xml(people.alice_admin, domain, xml)
    assert_refused_on_record(excinfo, people.alice_admin, domain, "edit_xml", "temporary")
    assert (
        "Edit XML…"
        not in client_for(people.alice_admin).get(f"/domains/alpha/{domain.uuid}/").content.decode()
    )


def test_graphics_password_is_kept_by_the_edit_but_not_shown_in_the_record(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="shutoff")
    conn = libvirt_hosts.conn("alpha")
    xml = current_xml(libvirt_hosts, domain).replace(
        "</devices>", "<graphics type='vnc' port='-1' passwd='s3cret-pw'/></devices>", 1
    )
    conn.defineXML(xml)
    assert "s3cret-pw" in current_xml(libvirt_hosts, domain)

    # The editor shows the password, so that saving keeps it.
    page = client_for(people.alice_admin).get(f"/domains/alpha/{domain.uuid}/xml/")
    assert "s3cret-pw" in page.content.decode()
    op = wait_finished(xmledit.edit_domain_xml(people.alice_admin, domain, with_description(xml)))

    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert "s3cret-pw" in current_xml(libvirt_hosts, domain)
    for text in (op.xml_before, op.xml_after, op.params["diff"]):
        assert "s3cret-pw" not in text
    viewer = client_for(people.victor_viewer).get(f"/operations/{op.pk}/").content.decode()
    assert "s3cret-pw" not in viewer
