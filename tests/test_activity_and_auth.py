"""The activity page, the door (login, failed logins, lockout, logout) and the probes.

Activity shows the operations of the user's teams only, filtered by user, domain, kind,
status and team; audit events only to team admins (their teams') and superusers (all).
Logins and failed logins are audit events; django-axes locks a username out from an
address after AXES_FAILURE_LIMIT failures, even for the right password. /healthz and
/readyz answer without a login; /readyz checks Redis, the worker and every enabled host.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from domains import hypervisor
from domains.models import AuditEvent, Host, Operation, OperationKind
from tests.helpers import PASSWORD, client_for

pytestmark = [pytest.mark.django_db]


# --- activity ------------------------------------------------------------------------


@pytest.fixture
def history(people, make_domain):
    """Operations on a team A domain, a second team A domain and a team B domain."""
    web = make_domain(name="web-activity", state="running")
    db = make_domain(name="db-activity")
    other = make_domain(name="other-team-vm", team="b", host="beta")

    def op(domain, kind, user, status, message=""):
        return Operation.objects.create(
            kind=kind, user=user, domain=domain, host=domain.host, domain_uuid=domain.uuid,
            domain_name=domain.name, team=domain.team, status=status, message=message,
        )  # fmt: skip

    ops = SimpleNamespace(
        web_suspend=op(web, OperationKind.SUSPEND, people.olga_operator, "succeeded", "Suspended."),
        web_start=op(web, OperationKind.START, people.olga_operator, "refused", "is running"),
        db_start=op(db, OperationKind.START, people.alice_admin, "succeeded", "Started."),
        db_undefine=op(db, OperationKind.UNDEFINE, people.alice_admin, "failed", "No."),
        b_reboot=op(other, OperationKind.REBOOT, people.bob_b, "succeeded", "Reboot requested."),
    )
    AuditEvent.objects.create(
        kind="role_changed", user=people.alice_admin, team=people.team_a,
        summary="victor_viewer in Team A: viewer → viewer",
    )  # fmt: skip
    AuditEvent.objects.create(
        kind="role_changed", user=people.root, team=people.team_b,
        summary="bob_b in Team B: - → operator",
    )  # fmt: skip
    return SimpleNamespace(web=web, db=db, other=other, ops=ops)


def shown(response) -> set[int]:
    assert response.status_code == 200
    return {op["pk"] for op in response.context["ops_page"].paginator.object_list}


def test_activity_shows_each_team_its_own_operations(people, history):
    o = history.ops
    team_a = {o.web_suspend.pk, o.web_start.pk, o.db_start.pk, o.db_undefine.pk}
    url = reverse("activity")

    for who in ("alice_admin", "olga_operator", "victor_viewer"):
        assert shown(client_for(getattr(people, who)).get(url)) == team_a, who
    bob = client_for(people.bob_b).get(url)
    assert shown(bob) == {o.b_reboot.pk}
    assert "web-activity" not in bob.content.decode()
    assert "other-team-vm" in bob.content.decode()
    assert shown(client_for(people.nora_noteam).get(url)) == set()
    assert shown(client_for(people.root).get(url)) == team_a | {o.b_reboot.pk}


def test_activity_page_links_and_words(people, history):
    page = client_for(people.victor_viewer).get(reverse("activity")).content.decode()

    op = history.ops.web_suspend
    assert f'<a href="/operations/{op.pk}/">#{op.pk}</a>' in page
    detail = reverse("domain_detail", args=["alpha", str(history.web.uuid)])
    assert f'<a href="{detail}">web-activity</a>' in page
    assert "4 operations" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"user": "olga_operator"}, {"web_suspend", "web_start"}),
        ({"user": "ALICE_ADMIN"}, {"db_start", "db_undefine"}),
        ({"user": "bob_b"}, set()),  # another team's user: nothing of theirs leaks
        ({"domain": "web-act"}, {"web_suspend", "web_start"}),
        ({"domain": "other-team"}, set()),
        ({"kind": "start"}, {"web_start", "db_start"}),
        ({"status": "succeeded"}, {"web_suspend", "db_start"}),
        ({"status": "refused"}, {"web_start"}),
        ({"kind": "start", "status": "succeeded", "user": "alice_admin"}, {"db_start"}),
        ({"team": "team-a"}, {"web_suspend", "web_start", "db_start", "db_undefine"}),
        ({"team": "team-b"}, {"web_suspend", "web_start", "db_start", "db_undefine"}),
        ({"kind": "explode"}, {"web_suspend", "web_start", "db_start", "db_undefine"}),
    ],
    ids=lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else None,
)
def test_activity_filters(query, expected, people, history):
    response = client_for(people.alice_admin).get(reverse("activity"), query)

    assert shown(response) == {getattr(history.ops, name).pk for name in expected}


def test_activity_filter_by_domain_uuid(people, history):
    client = client_for(people.olga_operator)
    o = history.ops

    full = client.get(reverse("activity"), {"domain": str(history.db.uuid)})
    part = client.get(reverse("activity"), {"domain": str(history.db.uuid)[:8]})

    assert shown(full) == shown(part) == {o.db_start.pk, o.db_undefine.pk}


def test_activity_htmx_gets_the_results_only(people, history):
    response = client_for(people.olga_operator).get(
        reverse("activity"), {"kind": "suspend"}, HTTP_HX_REQUEST="true"
    )

    part = response.content.decode()
    assert part.lstrip().startswith('<div id="activity-results">')
    assert "<html" not in part and "<form" not in part
    assert shown(response) == {history.ops.web_suspend.pk}


def test_audit_events_for_admins_of_their_teams_and_superusers(people, history):
    alice = client_for(people.alice_admin).get(reverse("activity")).content.decode()
    olga = client_for(people.olga_operator).get(reverse("activity")).content.decode()
    root = client_for(people.root).get(reverse("activity")).content.decode()

    assert "Audit events" in alice
    assert "victor_viewer in Team A" in alice
    assert "bob_b in Team B" not in alice
    assert "<td>sign-in</td>" not in alice  # logins belong to no team
    assert "Audit events" not in olga and "victor_viewer in Team A" not in olga
    assert "victor_viewer in Team A" in root and "bob_b in Team B" in root
    assert "<td>sign-in</td>" in root and "<code>login</code>" not in root


# --- the door ------------------------------------------------------------------------


def login(client: Client, username: str, password: str, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def test_login_writes_an_audit_event(people):
    client = Client()

    response = login(client, "olga_operator", PASSWORD)

    assert response.status_code == 302
    assert response["Location"] == reverse("domain_list")
    event = AuditEvent.objects.get(kind="login")
    assert event.user == people.olga_operator and event.summary == "olga_operator logged in"
    assert client.get(reverse("domain_list")).status_code == 200


def test_login_goes_back_to_next(people):
    client = Client()
    first = client.get(reverse("team_list"))
    assert first.status_code == 302 and first["Location"] == "/login/?next=/teams/"

    response = client.post(
        "/login/?next=/teams/",
        {"username": "victor_viewer", "password": PASSWORD, "next": "/teams/"},
    )

    assert response["Location"] == "/teams/"


def test_failed_login_writes_an_audit_event(people):
    client = Client()

    response = login(client, "olga_operator", "wrong")

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    event = AuditEvent.objects.get(kind="login_failed")
    assert event.user is None
    assert event.detail == {"username": "olga_operator"}
    assert event.summary == "failed login as 'olga_operator'"
    assert not AuditEvent.objects.filter(kind="login").exists()
    assert client.get(reverse("domain_list")).status_code == 302


def test_lockout_after_the_failure_limit(db):
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == 5
    get_user_model().objects.create_user("lockout_target", password=PASSWORD)
    client = Client()

    statuses = [login(client, "lockout_target", "wrong").status_code for _ in range(limit)]
    # The right password now: refused all the same, with the lockout page.
    response = login(client, "lockout_target", PASSWORD)

    assert statuses[: limit - 1] == [200] * (limit - 1)
    assert response.status_code == 429
    assert "Too many failed logins; try again in 15 minutes." in response.content.decode()
    assert client.get(reverse("domain_list")).status_code == 302
    assert not AuditEvent.objects.filter(kind="login").exists()
    assert AuditEvent.objects.filter(kind="login_failed").count() >= limit
    # Another username from the same address is not locked out.
    get_user_model().objects.create_user("someone_else", password=PASSWORD)
    other = Client()
    assert login(other, "someone_else", PASSWORD).status_code == 302


def test_a_success_before_the_limit_resets_the_count(db):
    get_user_model().objects.create_user("resets", password=PASSWORD)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(Client(), "resets", "wrong")
    assert login(Client(), "resets", PASSWORD).status_code == 302

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(Client(), "resets", "wrong")

    assert login(Client(), "resets", PASSWORD).status_code == 302


def test_logout_by_post(people):
    client = Client()
    login(client, "alice_admin", PASSWORD)
    assert client.get(reverse("domain_list")).status_code == 200

    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client.get(reverse("domain_list")).status_code == 302
    event = AuditEvent.objects.get(kind="logout")
    assert event.user == people.alice_admin


# --- probes --------------------------------------------------------------------------


def test_healthz():
    response = Client().get(reverse("healthz"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.integration
def test_readyz_while_everything_runs(hosts, celery_worker, watcher_beat):
    response = Client().get(reverse("readyz"))

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "redis": "ok",
        "worker": "ok",
        "watcher": "ok",
        "host:alpha": "ok",
        "host:beta": "ok",
    }


@pytest.mark.integration
def test_readyz_and_every_page_say_when_the_watcher_is_silent(
    hosts, celery_worker, people, settings
):
    import redis

    from domains import liveness

    redis.Redis.from_url(settings.REDIS_URL).set(liveness.WATCHER_BEAT_KEY, time.time() - 300)

    response = Client().get(reverse("readyz"))
    assert response.status_code == 503
    assert response.json()["watcher"].startswith("fail: silent for 3")
    page = client_for(people.victor_viewer).get(reverse("domain_list")).content.decode()
    assert "The inventory may be out of date since" in page

    liveness.mark_watcher_beat()
    assert Client().get(reverse("readyz")).json()["watcher"] == "ok"
    page = client_for(people.victor_viewer).get(reverse("domain_list")).content.decode()
    assert "The inventory may be out of date" not in page


@pytest.mark.integration
def test_open_pages_show_and_lose_the_banner_and_keep_updating_themselves(
    hosts, celery_worker, people, settings, make_domain
):
    """An open page learns within its navigation's next refresh that the inventory may be
    out of date, and that it no longer is; while the banner is up it still updates itself."""
    import re

    import redis

    from domains import liveness

    make_domain(state="running")
    client = client_for(people.victor_viewer)
    liveness.mark_watcher_beat()
    counts = client.get(reverse("nav_counts")).content.decode()
    assert 'id="inventory-banner" hx-swap-oob="true"' in counts
    assert "may be out of date" not in counts

    redis.Redis.from_url(settings.REDIS_URL).set(liveness.WATCHER_BEAT_KEY, time.time() - 300)
    counts = client.get(reverse("nav_counts")).content.decode()
    assert "The inventory may be out of date since" in counts
    page = client.get(reverse("domain_list")).content.decode()
    assert "The inventory may be out of date since" in page
    version = re.search(r"since=([0-9a-f]+)", page).group(1)  # it still polls
    poll = client.get(reverse("domain_list"), {"since": version}, HTTP_HX_REQUEST="true")
    assert poll.status_code == 204

    liveness.mark_watcher_beat()
    counts = client.get(reverse("nav_counts")).content.decode()
    assert 'id="inventory-banner" hx-swap-oob="true"' in counts
    assert "may be out of date" not in counts


@pytest.mark.integration
def test_readyz_names_the_host_that_does_not_answer(hosts, celery_worker, watcher_beat):
    missing = "test+unix:///default?socket=/nonexistent/vmpanel-readyz/libvirt-sock"
    Host.objects.create(name="nowhere", uri=missing)
    # A disabled host is not asked: it cannot make the panel unready.
    Host.objects.create(name="parked", uri=missing, enabled=False)

    response = Client().get(reverse("readyz"))

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["host:nowhere"].startswith("fail: ")
    assert "/nonexistent/vmpanel-readyz/libvirt-sock" in body["host:nowhere"]
    assert "host:parked" not in body
    assert (body["redis"], body["worker"], body["host:alpha"], body["host:beta"]) == ("ok",) * 4
    hypervisor.forget(missing)
