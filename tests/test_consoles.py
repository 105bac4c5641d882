"""Console tickets and the console proxy (issue 11), against the real proxy process.

The test driver has no console streams, so a connection that gets past the ticket and the
role checks ends at libvirt ("not supported") with the proxy's NO_CONSOLE code: that is how
these tests see a ticket accepted. A live console is proven in the QEMU tier.
"""

from __future__ import annotations

import time

import pytest
from django.urls import reverse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from domains import consoles
from domains.domxml import SimpleDomain, build_simple_domain
from domains.models import AuditEvent, Domain
from tests.helpers import client_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _consoles_closed_on_record():
    """After each test, until the proxy has put every console it opened on record as
    closed: its last audit row must not race the test database's flush (PostgreSQL
    deadlocked the flush's TRUNCATE against that INSERT's foreign-key check)."""
    yield
    wait_for(
        lambda: (
            AuditEvent.objects.filter(kind="console.opened").count()
            <= AuditEvent.objects.filter(kind="console.closed").count()
        ),
        timeout=10,
        what="the proxy's audit of the consoles it closed",
    )
    time.sleep(0.2)  # the proxy's own transaction, just committed, is over


ORIGIN = "http://127.0.0.1:8000"
BAD_TICKET, NOT_ALLOWED, NO_CONSOLE = 4401, 4403, 4502


def _console_domain(make_domain, libvirt_hosts, team="a", **devices) -> Domain:
    """A running test-driver domain with a serial console (and a display, if asked)."""
    uuid = make_domain.define("alpha", state="shutoff")
    conn = libvirt_hosts.conn("alpha")
    old = conn.lookupByUUIDString(uuid)
    name = old.name()
    old.undefine()
    spec = SimpleDomain(name=name, uuid=uuid, serial=True, **devices)
    conn.defineXML(build_simple_domain(spec)).create()
    return make_domain_row(make_domain, uuid, team)


def make_domain_row(make_domain, uuid: str, team: str) -> Domain:
    from domains import inventory

    inventory.reconcile_host(make_domain.hosts.alpha)
    row = Domain.objects.get(host=make_domain.hosts.alpha, uuid=uuid)
    row.team = {"a": make_domain.people.team_a, "b": make_domain.people.team_b}[team]
    row.save(update_fields=["team"])
    return row


def _ticket(client, domain, kind="serial"):
    url = reverse("console_ticket", args=[domain.host.name, domain.uuid]) + f"?kind={kind}"
    return client.post(url)


def _close_code(url: str, origin: str = ORIGIN) -> tuple[int, str]:
    """Connect, read until the proxy closes; its close code and reason."""
    with connect(url, origin=origin, open_timeout=5, close_timeout=5) as ws:
        try:
            while True:
                ws.recv(timeout=10)
        except Exception:  # closed: the code says why
            pass
        return ws.close_code, ws.close_reason


def test_a_ticket_opens_once_and_never_again(people, make_domain, libvirt_hosts, console_proxy):
    domain = _console_domain(make_domain, libvirt_hosts)
    answer = _ticket(client_for(people.olga_operator), domain).json()
    assert len(answer["ticket"]) >= 43 and answer["view_only"] is False
    assert answer["expires_in"] == 30 and answer["password"] == ""
    url = f"{console_proxy}?ticket={answer['ticket']}"
    code, reason = _close_code(url)
    assert code == NO_CONSOLE, (code, reason)  # past the ticket: libvirt's own refusal
    code, reason = _close_code(url)
    assert code == BAD_TICKET and "unknown, expired or used" in reason
    # Opened and closed, on record.
    events = AuditEvent.objects.filter(user=people.olga_operator, kind__startswith="console.")
    wait_for(lambda: events.filter(kind="console.closed").exists(), what="the close on record")
    closed = events.get(kind="console.closed")
    assert closed.detail["how"] == "failed" and "serial console of" in closed.summary
    assert events.filter(kind="console.opened").count() == 1


def test_an_expired_or_made_up_ticket_is_refused(
    people, make_domain, libvirt_hosts, console_proxy, settings
):
    domain = _console_domain(make_domain, libvirt_hosts)
    settings.VMPANEL_CONSOLE_TICKET_SECONDS = 1
    ticket = _ticket(client_for(people.olga_operator), domain).json()["ticket"]
    time.sleep(1.5)
    assert _close_code(f"{console_proxy}?ticket={ticket}")[0] == BAD_TICKET
    for made_up in ("", "x" * 43, "../../etc", ticket[:-1] + "A"):
        assert _close_code(f"{console_proxy}?ticket={made_up}")[0] == BAD_TICKET


def test_a_wrong_origin_is_refused_before_the_ticket_is_spent(
    people, make_domain, libvirt_hosts, console_proxy
):
    domain = _console_domain(make_domain, libvirt_hosts)
    ticket = _ticket(client_for(people.olga_operator), domain).json()["ticket"]
    url = f"{console_proxy}?ticket={ticket}"
    for origin in ("http://evil.example", "null"):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=origin, open_timeout=5)
        assert refused.value.response.status_code == 403
    assert _close_code(url)[0] == NO_CONSOLE  # the ticket was still good


def test_a_ticket_whose_session_ended_is_refused(people, make_domain, libvirt_hosts, console_proxy):
    domain = _console_domain(make_domain, libvirt_hosts)
    client = client_for(people.olga_operator)
    ticket = _ticket(client, domain).json()["ticket"]
    client.logout()
    code, reason = _close_code(f"{console_proxy}?ticket={ticket}")
    assert code == NOT_ALLOWED and "session has ended" in reason


def test_who_gets_which_console(people, make_domain, libvirt_hosts, console_proxy):
    domain = _console_domain(make_domain, libvirt_hosts)
    assert _ticket(client_for(people.victor_viewer), domain).json()["view_only"] is True
    other = _ticket(client_for(people.bob_b), domain)
    assert other.status_code == 404 and other.json()["error"] == "No such VM."
    # A ticket is bound to the domain: it cannot be spent on another.
    assert consoles.consume("A" * 43) is None
    no_display = _ticket(client_for(people.olga_operator), domain, kind="vnc")
    assert no_display.status_code == 409 and "no VNC display" in no_display.json()["error"]
    assert _ticket(client_for(people.olga_operator), domain, kind="rdp").status_code == 400


def test_a_display_on_every_interface_gets_no_console(people, make_domain, libvirt_hosts):
    domain = _console_domain(make_domain, libvirt_hosts, vnc_listen="0.0.0.0")
    answer = _ticket(client_for(people.olga_operator), domain, kind="vnc")
    assert answer.status_code == 409
    assert "listens on every interface (0.0.0.0)" in answer.json()["error"]


def test_a_stopped_domain_has_no_console(people, make_domain):
    off = make_domain(state="shutoff")
    answer = _ticket(client_for(people.olga_operator), off)
    assert answer.status_code == 409 and "not running" in answer.json()["error"]
    page = client_for(people.olga_operator).get(
        reverse("domain_detail", args=[off.host.name, off.uuid])
    )
    assert reverse("domain_console", args=[off.host.name, off.uuid]) not in page.content.decode()


def test_a_ticket_reaches_only_the_domain_it_names(
    people, make_domain, libvirt_hosts, console_proxy
):
    mine = _console_domain(make_domain, libvirt_hosts)
    other = _console_domain(make_domain, libvirt_hosts)
    ticket = _ticket(client_for(people.olga_operator), mine).json()["ticket"]
    # The URL names no domain: whatever is added to it, the ticket's domain is the one.
    url = f"{console_proxy}?ticket={ticket}&domain={other.uuid}&uuid={other.uuid}"
    assert _close_code(url)[0] == NO_CONSOLE
    events = AuditEvent.objects.filter(kind="console.opened", user=people.olga_operator)
    assert [e.detail["domain"] for e in events] == [str(mine.uuid)]
