"""Secrets in domain XML (graphics passwords) never reach the record, on any path: a
queued edit, a task queue that does not answer, a failed define."""

from __future__ import annotations

import pytest

from domains import domxml
from domains.models import Operation, OperationStatus
from domains.services import xmledit
from tests.helpers import client_for
from tests.test_resize_and_xml import current_xml, with_description

PASSWORD = "s3cret-pw-4711"
GRAPHICS = f"<graphics type='vnc' port='-1' passwd='{PASSWORD}'/></devices>"


def _every_text(op: Operation) -> str:
    return " ".join(
        [str(op.params), op.xml_before, op.xml_after, op.message, op.error, str(op.progress_detail)]
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker_down")
def test_an_xml_edit_the_queue_never_got_keeps_no_password(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    libvirt_hosts.conn("alpha").defineXML(
        current_xml(libvirt_hosts, domain).replace("</devices>", GRAPHICS, 1)
    )
    xml = with_description(current_xml(libvirt_hosts, domain))
    assert PASSWORD in xml  # the editor's XML carries it, so that saving keeps it

    op = xmledit.edit_domain_xml(people.alice_admin, domain, xml)

    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED and "does not answer" in op.message
    assert PASSWORD not in _every_text(op)
    assert "edited by hand" in op.xml_after  # what was submitted, without the password
    for who in ("victor_viewer", "olga_operator", "alice_admin", "root"):
        page = client_for(getattr(people, who)).get(f"/operations/{op.pk}/")
        assert page.status_code == 200
        assert PASSWORD not in page.content.decode(), who


def test_every_secret_attribute_is_redacted():
    xml = (
        "<domain><devices>"
        f"<graphics type='vnc' passwd='{PASSWORD}'/>"
        "<graphics type='spice' passwd='other-secret' passwdValidTo='2030-01-01T00:00:00'/>"
        "<disk><auth username='u'><secret type='iscsi' usage='x'/></auth>"
        "<source password='disk-secret'/></disk>"
        "</devices></domain>"
    )
    redacted = domxml.redact_secrets(xml)
    for secret in (PASSWORD, "other-secret", "disk-secret"):
        assert secret not in redacted
    assert "passwdValidTo" in redacted and 'usage="x"' in redacted  # not secrets


def test_error_text_is_scrubbed_of_the_xml_secrets():
    xml = f"<domain><devices><graphics type='vnc' passwd='{PASSWORD}'/></devices></domain>"
    said = f"XML error: cannot use '{PASSWORD}' here"
    assert domxml.scrub(said, domxml.secret_values(xml)) == "XML error: cannot use '***' here"
    assert domxml.secret_values("<domain") == []  # not XML: nothing to find
