"""The domain list, the activity page, a domain's page and its Usage section are kept
rendered per content (`domains.kept_pages`), and their queries compiled once per shape
(`domains.kept_sql`). What people must notice: nothing. A second look at an unchanged page
is answered without rendering it, and anything that changed — a state, an operation, a
figure, a role, the language — shows at the very next request."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.test.signals import template_rendered
from django.urls import reverse
from django.utils import timezone

from domains.models import (
    Domain,
    DomainUsage,
    Membership,
    Operation,
    OperationStatus,
    Role,
    SavedImage,
    State,
)
from tests.helpers import client_for

# A watcher that just ran: while it is silent, every page says so and none is kept.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db,
    pytest.mark.usefixtures("watcher_beat"),
]


class Rendered:
    """Counts the templates Django renders while in the `with` block."""

    def __enter__(self):
        self.count = 0
        template_rendered.connect(self._seen)
        return self

    def _seen(self, **_kwargs):
        self.count += 1

    def __exit__(self, *exc):
        template_rendered.disconnect(self._seen)


def _detail_url(domain: Domain) -> str:
    return reverse("domain_detail", args=[domain.host.name, domain.uuid])


def _start_operation(person, domain: Domain, message: str) -> Operation:
    return Operation.objects.create(
        kind="start", user=person, domain=domain, host=domain.host, domain_uuid=domain.uuid,
        domain_name=domain.name, team=domain.team, status=OperationStatus.RUNNING,
        message=message,
    )  # fmt: skip


@pytest.mark.parametrize("which", ["list", "activity", "detail"])
def test_an_unchanged_page_is_answered_without_rendering_it_again(which, people, make_domain):
    domain = make_domain(state="running")
    _start_operation(people.olga_operator, domain, "Starting")
    url = {"list": reverse("domain_list"), "activity": reverse("activity")}.get(which)
    url = url or _detail_url(domain)
    client = client_for(people.olga_operator)
    first = client.get(url)
    second = client.get(url)  # the session's CSRF cookie is set now: from here on, kept
    with Rendered() as rendered:
        third = client.get(url)
    assert rendered.count == 0
    assert third.content == second.content
    assert first.status_code == third.status_code == 200
    assert domain.name in third.content.decode()


def test_the_kept_list_shows_every_change_at_the_next_request(people, make_domain):
    domain = make_domain(state="running")
    other = make_domain(state="shutoff")
    client = client_for(people.olga_operator)
    client.get(reverse("domain_list"))
    html = client.get(reverse("domain_list")).content.decode()
    assert domain.name in html and other.name in html

    # The watcher saw a change; the collector measured it; a filter narrows the list.
    Domain.objects.filter(pk=domain.pk).update(state=State.PAUSED, state_reason="user")
    DomainUsage.objects.create(domain=other, at=timezone.now(), cpu_pct=42.5)
    html = client.get(reverse("domain_list")).content.decode()
    assert "paused" in html and "42.5 %" in html
    only_running = client.get(reverse("domain_list"), {"f": "shutoff"}).content.decode()
    assert other.name in only_running and domain.name not in only_running

    # A role taken away shows at once, though the query's text was kept for this person.
    Membership.objects.filter(user=people.olga_operator).delete()
    html = client.get(reverse("domain_list")).content.decode()
    assert domain.name not in html and other.name not in html
    assert client.get(_detail_url(domain)).status_code == 404


def test_a_kept_page_is_for_its_own_session_and_language(people, make_domain):
    domain = make_domain(state="running")
    olga, victor = client_for(people.olga_operator), client_for(people.victor_viewer)
    for _ in range(2):
        olga.get(_detail_url(domain))
        victor.get(_detail_url(domain))
    as_olga = olga.get(_detail_url(domain)).content.decode()
    as_victor = victor.get(_detail_url(domain)).content.decode()
    assert "olga_operator" in as_olga and "victor_viewer" not in as_olga
    assert "victor_viewer" in as_victor and "olga_operator" not in as_victor
    # An operator gets buttons a viewer does not.
    assert "/shutdown/" in as_olga and "/shutdown/" not in as_victor

    # The kept page's CSRF token is this session's: its forms still post, as a browser's do.
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(people.olga_operator, backend="django.contrib.auth.backends.ModelBackend")
    for _ in range(2):
        browser.get(_detail_url(domain))
    with Rendered() as rendered:
        kept = browser.get(_detail_url(domain)).content.decode()
    assert rendered.count == 0
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', kept).group(1)
    answer = browser.post(
        reverse("set_language"), {"language": "zh-hans", "next": "/", "csrfmiddlewaretoken": token}
    )
    assert answer.status_code == 302
    assert 'lang="zh-hans"' in browser.get(_detail_url(domain)).content.decode()
    # Another session of the same person has another secret: not that kept page.
    with Rendered() as rendered:
        client_for(people.olga_operator).get(_detail_url(domain))
    assert rendered.count > 0


def test_the_kept_domain_page_shows_new_figures_a_new_operation_and_image(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    client.get(_detail_url(domain))
    assert "Measuring" in client.get(_detail_url(domain)).content.decode()
    DomainUsage.objects.create(
        domain=domain, at=timezone.now(), cpu_pct=42.5, memory_used_kib=2048,
        memory_source="guest",
    )  # fmt: skip
    html = client.get(_detail_url(domain)).content.decode()
    assert "42.5 %" in html and "Measuring" not in html
    op = _start_operation(people.olga_operator, domain, "Starting now")
    html = client.get(_detail_url(domain)).content.decode()
    assert f">#{op.pk}<" in html and "Starting now" in html

    Operation.objects.filter(pk=op.pk).update(status=OperationStatus.SUCCEEDED, message="Done")
    SavedImage.objects.create(
        host=domain.host, path="/var/lib/libvirt/save/kept.save", domain=domain,
        domain_uuid=domain.uuid, domain_name=domain.name, memory_kib=1024, team=domain.team,
    )  # fmt: skip
    html = client.get(_detail_url(domain)).content.decode()
    assert "Done" in html and "Starting now" not in html
    assert "/var/lib/libvirt/save/kept.save" in html


def test_the_kept_activity_page_shows_a_new_operation_and_audit_event(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.alice_admin)
    client.get(reverse("activity"))
    client.get(reverse("activity"))
    op = _start_operation(people.olga_operator, domain, "Starting later")
    Membership.objects.filter(user=people.victor_viewer).update(role=Role.OPERATOR)
    from domains.models import AuditEvent

    AuditEvent.objects.create(
        kind="role.changed", user=people.alice_admin, team=people.team_a,
        summary="victor_viewer is now an operator",
    )  # fmt: skip
    html = client.get(reverse("activity")).content.decode()
    assert f">#{op.pk}<" in html and "victor_viewer is now an operator" in html


def test_a_message_is_shown_once_and_the_page_after_it_is_kept_without_it(people, make_domain):
    domain = make_domain(state="shutoff")
    client = client_for(people.olga_operator)
    client.get(_detail_url(domain))
    client.get(_detail_url(domain))
    # An action leaves a message for the next page (the form posts without htmx).
    client.post(reverse("domain_action", args=[domain.host.name, domain.uuid, "autostart_on"]))
    shown = client.get(_detail_url(domain)).content.decode()
    again = client.get(_detail_url(domain)).content.decode()
    marker = 'class="messages"'
    assert marker in shown and marker not in again


def test_the_vm_page_shows_disks_network_and_addresses_and_xml_for_admins(people, make_domain):
    domain = make_domain(state="running", devices=True)
    page = client_for(people.olga_operator).get(_detail_url(domain)).content.decode()
    assert "Disks and network" in page
    assert f"/guest/{domain.name}.img" in page and "qcow2" in page and "virtio" in page
    assert "network default" in page and "plugged in" in page
    # libvirt's test driver answers interfaceAddresses with a lease of its own.
    assert re.search(r"\d+\.\d+\.\d+\.\d+/\d+", page)
    # The XML names host paths and devices: team admins and superusers only.
    assert "XML definition" not in page
    assert (
        "XML definition" in client_for(people.alice_admin).get(_detail_url(domain)).content.decode()
    )


def test_a_poll_is_answered_204_while_nothing_changed(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    client.get(reverse("domain_list"))
    page = client.get(reverse("domain_list")).content.decode()
    version = re.search(r"since=([0-9a-f]+)", page).group(1)
    poll = {"HTTP_HX_REQUEST": "true"}
    assert client.get(reverse("domain_list"), {"since": version}, **poll).status_code == 204
    Domain.objects.filter(pk=domain.pk).update(state=State.PAUSED, state_reason="user")
    changed = client.get(reverse("domain_list"), {"since": version}, **poll)
    assert changed.status_code == 200 and "paused" in changed.content.decode()
    newer = re.search(r"since=([0-9a-f]+)", changed.content.decode()).group(1)
    assert newer != version
    assert client.get(reverse("domain_list"), {"since": newer}, **poll).status_code == 204
