"""A save of edited XML that is refused keeps the person's own text: refused at submit (the
panel's checks), the editor comes back with it and the reason; refused by libvirt in the
worker, the operation's page offers "Edit again", which brings it back (passwords the
record left out put back from the saved configuration)."""

from __future__ import annotations

import html

import libvirt
import pytest

from domains import domxml
from domains.models import Operation, OperationKind, OperationStatus
from tests.helpers import client_for, wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE


def _xml(libvirt_hosts, domain) -> str:
    dom = libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid))
    return dom.XMLDesc(INACTIVE_SECURE)


def _editor_text(page: str) -> str:
    """What the editor's textarea holds, as the browser shows it."""
    inside = page.split("<textarea", 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    return html.unescape(inside)


def _typed(xml: str, words: str) -> str:
    return xml.replace("</uuid>", f"</uuid>\n  <description>{words}</description>", 1)


def test_a_save_refused_at_submit_keeps_the_typed_text(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    typed = _typed(_xml(libvirt_hosts, domain), "my careful edit").replace(
        "<name>", "<name>renamed-", 1
    )

    response = client_for(people.alice_admin).post(
        f"/domains/alpha/{domain.uuid}/xml/", {"xml": typed, "save": "1"}
    )

    page = response.content.decode()
    assert response.status_code == 409
    assert "The name must stay" in page
    assert _editor_text(page) == typed


def test_a_save_libvirt_refuses_can_be_edited_again(
    people, make_domain, celery_worker, libvirt_hosts
):
    domain = make_domain(state="shutoff")
    conn = libvirt_hosts.conn("alpha")
    saved = _xml(libvirt_hosts, domain).replace(
        "</devices>", "<graphics type='vnc' port='-1' passwd='s3cret-pw'/></devices>", 1
    )
    conn.defineXML(saved)
    saved = _xml(libvirt_hosts, domain)
    typed = _typed(saved, "my careful edit").replace(
        "<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>abc</vcpu>"
    )
    assert "abc" in typed
    admin = client_for(people.alice_admin)

    response = admin.post(f"/domains/alpha/{domain.uuid}/xml/", {"xml": typed, "save": "1"})

    op = wait_finished(Operation.objects.get(kind=OperationKind.EDIT_XML))
    assert response.status_code == 303
    assert op.status == OperationStatus.FAILED and "schema" in op.error
    again = f"/domains/alpha/{domain.uuid}/xml/?again={op.pk}"
    op_page = admin.get(f"/operations/{op.pk}/").content.decode()
    assert "Edit again" in op_page and html.escape(again) in op_page
    # Whoever may not edit the XML is not offered it.
    viewer_page = client_for(people.victor_viewer).get(f"/operations/{op.pk}/").content.decode()
    assert "Edit again" not in viewer_page

    page = admin.get(again).content.decode()
    # The text as typed (as the record keeps it: the same XML, written out again), the
    # password the record left out put back; libvirt's words beside.
    assert _editor_text(page) == domxml.to_string(domxml.parse(typed))
    assert "s3cret-pw" in _editor_text(page) and "s3cret-pw" not in op.xml_after
    assert "failed to validate against schema" in page
    # The same link for someone who may not edit the XML gives nothing of it.
    refused = client_for(people.olga_operator).get(again)
    assert refused.status_code == 403 and "my careful edit" not in refused.content.decode()


def test_edit_again_of_another_domains_operation_shows_the_saved_xml(
    people, make_domain, celery_worker, libvirt_hosts
):
    one = make_domain(state="shutoff")
    other = make_domain(state="shutoff")
    typed = _typed(_xml(libvirt_hosts, one), "for the first").replace(
        "<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>abc</vcpu>"
    )
    admin = client_for(people.alice_admin)
    admin.post(f"/domains/alpha/{one.uuid}/xml/", {"xml": typed, "save": "1"})
    op = wait_finished(Operation.objects.get(kind=OperationKind.EDIT_XML))

    page = admin.get(f"/domains/alpha/{other.uuid}/xml/?again={op.pk}").content.decode()

    assert "for the first" not in page
    assert _editor_text(page) == _xml(libvirt_hosts, other)


def test_restore_secrets_puts_back_only_what_the_record_took_out():
    saved = (
        "<domain><name>a</name><devices><graphics type='vnc' passwd='one'/>"
        "<graphics type='spice' passwd='two'/></devices></domain>"
    )
    recorded = domxml.redact_secrets(saved).replace('type="spice"', 'type="spice" passwd="new"')
    back = domxml.parse(domxml.restore_secrets(recorded, saved))
    vnc, spice = back.findall("devices/graphics")
    assert vnc.get("passwd") == "one"  # taken out by the record: the saved one
    assert spice.get("passwd") == "new"  # typed anew: kept
    # An element the edit removed gets nothing back.
    gone = domxml.restore_secrets("<domain><name>a</name><devices/></domain>", saved)
    assert "one" not in gone and "two" not in gone
