"""Pages that update themselves (issue 13, item 3): an open page asks every second whether
what it shows changed (`?since=<its version>`). "No" (204) is answered before the session,
the user and the view are loaded when the database's change count shows nothing was
written since that very request was confirmed (`domains.kept_pages`). What people must
notice: only that it is quick. Whatever wrote since — the watcher, a worker in another
process, an audit row, a role taken away, a session ended, a bulk update(), raw SQL, a
write that committed after the poll looked — shows at the next poll."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from types import SimpleNamespace

import libvirt
import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from domains import inventory, kept_pages, runner
from domains.models import (
    Domain,
    DomainUsage,
    Operation,
    OperationStatus,
    Role,
)
from domains.services import hosts as host_services
from provisioning import services as provisioning
from provisioning.models import RequestState
from tests.helpers import client_for, wait_finished, wait_for
from tests.test_provisioning_create import make_template

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("watcher_beat"),
]

POLL = {"HTTP_HX_REQUEST": "true"}


def _version(html: str) -> str | None:
    found = re.search(r"since=([0-9a-f]+)", html)
    return found.group(1) if found else None


class OpenPage:
    """A page open in someone's browser: loaded, then asking every so often."""

    def __init__(self, client: Client, url: str):
        self.client, self.url = client, url
        client.get(url)  # the session's CSRF cookie: from here on the page is kept
        self.version = _version(client.get(url).content.decode())
        assert self.version, "the page does not update itself"

    def poll(self):
        response = self.client.get(self.url, {"since": self.version}, **POLL)
        if response.status_code == 200:
            self.version = _version(response.content.decode()) or self.version
        return response


def _open(person, url: str) -> OpenPage:
    page = OpenPage(client_for(person), url)
    assert page.poll().status_code == 204  # looked at the whole way, and confirmed
    return page


def _detail_url(domain: Domain) -> str:
    return reverse("domain_detail", args=[domain.host.name, domain.uuid])


def _urls(domain: Domain) -> dict[str, str]:
    return {
        "list": reverse("domain_list"),
        "activity": reverse("activity"),
        "detail": _detail_url(domain),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["list", "activity", "detail"])
def test_an_unchanged_page_is_answered_with_one_query(which, people, make_domain):
    domain = make_domain(state="running")
    page = _open(people.alice_admin, _urls(domain)[which])
    with CaptureQueriesContext(connection) as queries:
        assert page.poll().status_code == 204
    # The change count, and nothing else: no session, no user, no view.
    assert len(queries) == 1, [q["sql"] for q in queries.captured_queries]


def _running_operation(person, domain: Domain) -> Operation:
    return Operation.objects.create(
        kind="start", user=person, domain=domain, host=domain.host, domain_uuid=domain.uuid,
        domain_name=domain.name, team=domain.team, status=OperationStatus.RUNNING,
        message="Starting",
    )  # fmt: skip


def _watcher_saw_a_pause(ctx):
    """libvirt changed; the watcher's reconcile wrote the inventory (bulk_update)."""
    ctx.libvirt_hosts.conn("alpha").lookupByUUIDString(str(ctx.domain.uuid)).suspend()
    inventory.reconcile_host(ctx.domain.host)
    return "paused"


def _operation_finished(ctx):
    """The runner's own record of the end (Model.save with update_fields)."""
    runner._finish(ctx.operation, OperationStatus.SUCCEEDED, "Started at last")
    return "Started at last"


def _bulk_update(ctx):
    Domain.objects.filter(pk=ctx.domain.pk).update(name="renamed-in-bulk")
    return "renamed-in-bulk"


def _raw_sql(ctx):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE domains_domain SET name = %s WHERE id = %s", ["renamed-by-sql", ctx.domain.pk]
        )
    return "renamed-by-sql"


def _collector_figures(ctx):
    DomainUsage.objects.bulk_create(
        [DomainUsage(domain=ctx.domain, at=timezone.now(), cpu_pct=42.5, memory_used_kib=2048)],
        update_conflicts=True,
        unique_fields=["domain"],
        update_fields=["at", "cpu_pct", "memory_used_kib"],
    )
    return "42.5 %"


CHANGES = {
    "the watcher": (_watcher_saw_a_pause, ["list", "detail"]),
    "an operation's end": (_operation_finished, ["activity", "detail"]),
    "a bulk update()": (_bulk_update, ["list", "detail"]),
    "raw SQL": (_raw_sql, ["list", "detail"]),
    "the collector": (_collector_figures, ["list"]),
}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change,which",
    [(name, which) for name, (_, pages) in CHANGES.items() for which in pages],
)
def test_a_change_made_any_way_shows_at_the_next_poll(
    change, which, people, make_domain, libvirt_hosts
):
    domain = make_domain(state="running")
    ctx = SimpleNamespace(domain=domain, people=people, libvirt_hosts=libvirt_hosts)
    ctx.operation = _running_operation(people.olga_operator, domain)
    page = _open(people.alice_admin, _urls(domain)[which])
    assert page.poll().status_code == 204  # answered early

    shown = CHANGES[change][0](ctx)

    changed = page.poll()
    assert changed.status_code == 200 and shown in changed.content.decode()
    assert page.poll().status_code == 204  # and unchanged again from there


@pytest.mark.django_db
def test_an_audit_event_shows_on_the_open_activity_page(people, make_domain):
    page = _open(people.alice_admin, reverse("activity"))
    host_services.set_membership(
        people.alice_admin, people.team_a, people.victor_viewer, Role.OPERATOR
    )
    changed = page.poll()
    assert changed.status_code == 200 and "victor_viewer" in changed.content.decode()


@pytest.mark.django_db
def test_a_role_taken_away_shows_at_the_next_poll(people, make_domain):
    domain = make_domain(state="running")
    on_list = _open(people.olga_operator, reverse("domain_list"))
    on_page = _open(people.olga_operator, _detail_url(domain))
    assert on_list.poll().status_code == on_page.poll().status_code == 204

    host_services.remove_membership(people.alice_admin, people.team_a, people.olga_operator)

    listed = on_list.poll()
    assert listed.status_code == 200 and domain.name not in listed.content.decode()
    assert on_page.poll().status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["signed out in another tab", "sessions cleared", "disabled"])
def test_a_session_that_ended_is_sent_to_sign_in_at_the_next_poll(how, people, make_domain):
    page = _open(people.olga_operator, reverse("domain_list"))
    assert page.poll().status_code == 204
    session_key = page.client.session.session_key
    if how == "signed out in another tab":
        other = Client()
        other.cookies = page.client.cookies  # the same session
        other.logout()
    elif how == "sessions cleared":  # an administrator's "sign everyone out"
        Session.objects.filter(session_key=session_key).delete()
    else:
        get_user_model().objects.filter(pk=people.olga_operator.pk).update(is_active=False)
    answer = page.poll()
    assert answer.status_code == 204 and "/login/" in answer["HX-Redirect"]


@pytest.mark.django_db
def test_a_session_that_expires_is_sent_to_sign_in_at_the_next_poll(people, make_domain):
    """Nothing is written when a session's time runs out."""
    page = _open(people.olga_operator, reverse("domain_list"))
    ends = timezone.now() + timedelta(seconds=1.5)
    Session.objects.filter(session_key=page.client.session.session_key).update(expire_date=ends)
    assert page.poll().status_code == 204  # looked at again (a write), confirmed till then
    with CaptureQueriesContext(connection) as early:
        assert page.poll().status_code == 204
    assert len(early) == 1
    time.sleep(max(0.0, (ends - timezone.now()).total_seconds()) + 0.1)
    answer = page.poll()
    assert answer.status_code == 204 and "/login/" in answer["HX-Redirect"]


@pytest.mark.django_db
def test_a_vm_page_looks_again_once_its_live_read_is_old(people, make_domain, settings):
    """What libvirt says that the inventory does not hold is read again after
    VMPANEL_LIVE_CACHE_SECONDS: an open VM page is not told "unchanged" from memory for
    longer than that."""
    settings.VMPANEL_LIVE_CACHE_SECONDS = 1
    domain = make_domain(state="running")
    page = _open(people.olga_operator, _detail_url(domain))
    with CaptureQueriesContext(connection) as early:
        assert page.poll().status_code == 204
    time.sleep(1.1)
    with CaptureQueriesContext(connection) as looked:
        # Looked again: unchanged (204), or changed if a usage tick fell between the two
        # polls (a running VM without figures shows its screen as of the last tick).
        assert page.poll().status_code in (200, 204)
    assert len(early) == 1 and len(looked) > 1


@pytest.mark.django_db(transaction=True)
def test_a_write_that_commits_after_the_poll_looked_shows_at_the_next_poll(people, make_domain):
    """Another process's transaction is in flight while the page polls (the poll cannot
    see its rows yet); once it commits, the next poll must show it, not "unchanged"."""
    domain = make_domain(state="running")
    page = _open(people.olga_operator, reverse("domain_list"))
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute(
                "UPDATE domains_domain SET name = %s WHERE id = %s", ["late-writer", domain.pk]
            )
        for _ in range(2):  # still in flight: unchanged, as far as anyone can see
            assert page.poll().status_code == 204
        other.commit()
    finally:
        other.close()
    changed = page.poll()
    assert changed.status_code == 200 and "late-writer" in changed.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_another_persons_action_done_by_the_worker_shows_on_an_open_page(
    people, make_domain, libvirt_hosts, settings
):
    """The worker is another process: its writes (the operation's end, the inventory
    refresh) reach the page through the count in the database."""
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    domain = make_domain(state="running")
    page = _open(people.victor_viewer, _detail_url(domain))
    client_for(people.olga_operator).post(
        reverse("domain_action", args=[domain.host.name, str(domain.uuid), "suspend"])
    )
    wait_finished(Operation.objects.get(domain=domain, kind="suspend"), timeout=20)

    def shows_paused():
        response = page.poll()
        return response.status_code == 200 and "paused" in response.content.decode()

    # The first poll after the write shows it; a few more only if the refresh came later.
    wait_for(shows_paused, timeout=5, what="the page shows the VM paused")
    dom = libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid))
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED


@pytest.mark.django_db
def test_a_watcher_pass_that_finds_nothing_new_leaves_open_pages_confirmed(
    people, make_domain, libvirt_hosts
):
    """The inventory's pass rewrites "seen at" times every few seconds: alone, they do not
    count as a change (kept_pages.QUIET_COLUMNS), so open lists stay answered with one
    query; what the pass does change still shows."""
    domain = make_domain(state="running")
    inventory.reconcile_host(domain.host)
    page = _open(people.alice_admin, reverse("domain_list"))
    before = kept_pages.change_count()
    inventory.reconcile_host(domain.host)  # nothing new in libvirt
    assert kept_pages.change_count() == before
    with CaptureQueriesContext(connection) as queries:
        assert page.poll().status_code == 204
    assert len(queries) == 1
    assert Domain.objects.get(pk=domain.pk).last_seen_at > domain.last_seen_at

    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).suspend()
    inventory.reconcile_host(domain.host)
    response = page.poll()
    assert response.status_code == 200 and "paused" in response.content.decode()


@pytest.mark.django_db
def test_every_table_pages_read_bumps_the_count_and_a_rebuilt_one_again_after_migrate():
    assert kept_pages.untracked_tables() == []
    # A migration that rebuilds a table (SQLite) drops its triggers: every migrate puts them
    # back (post_migrate).
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for event in ("insert", "update", "delete"):
                cursor.execute(f'DROP TRIGGER "vmpanel_change_count_{event}_domains_domain"')
        else:
            cursor.execute("DROP TRIGGER vmpanel_change_count ON domains_domain")
    assert kept_pages.untracked_tables() == ["domains_domain"]
    kept_pages.on_migrate(using="default")
    assert kept_pages.untracked_tables() == []


# --- the request page --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("decision", ["approved", "rejected"])
def test_the_request_page_shows_a_decision_made_by_someone_else(decision, people, hosts):
    template = make_template(hosts)
    req = provisioning.submit_request(
        people.victor_viewer, people.team_a, template, "asked-for", 1, 256, "testing"
    )
    url = reverse("request_detail", args=[req.pk])
    mine = _open(people.victor_viewer, url)
    deciding = _open(people.alice_admin, url)
    assert "Approve" in deciding.client.get(url).content.decode()

    if decision == "approved":
        provisioning.approve_request(people.alice_admin, req, hosts.alpha)
        words = RequestState.APPROVED.label
    else:
        provisioning.reject_request(people.alice_admin, req, "not this quarter")
        words = RequestState.REJECTED.label

    shown = mine.poll()
    html = shown.content.decode()
    assert shown.status_code == 200 and str(words) in html and "alice_admin" in html
    assert 'id="request-panel"' in html and "<html" not in html  # the part that changed
    # The admin's open page loses its forms: the request is decided.
    decided = deciding.poll().content.decode()
    assert str(words) in decided and "Approve" not in decided
    assert mine.poll().status_code == 204
