"""Lifecycle actions through HTTP, the real Celery worker and libvirt, and back.

Each action is posted as the least role allowed (operator; admin for undefine): the view
answers 303, the Operation row has succeeded, libvirt's own state (read through the tests'
connection) has changed, and the inventory row and the page show it. The view waits up to
VMPANEL_QUICK_WAIT_SECONDS for a quick operation; it is raised here so that a loaded
machine still takes the quick path, and set to 0 where the slow path is the subject.

Refusals (wrong state, busy domain, host down) answer 409 with the reason on the page and a
`refused` row; nothing reaches libvirt.
"""

from __future__ import annotations

import libvirt
import pytest
from django.urls import reverse

from domains import hypervisor
from domains.models import Domain, Host, Operation, OperationKind, OperationStatus, State
from domains.templatetags.vmpanel import state_class
from tests.helpers import client_for, fresh, live, wait_finished

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


@pytest.fixture(autouse=True)
def _quick_wait(settings):
    settings.VMPANEL_QUICK_WAIT_SECONDS = 15


def action_url(domain: Domain, kind: str) -> str:
    return reverse("domain_action", args=[domain.host.name, str(domain.uuid), kind])


def detail_url(domain: Domain) -> str:
    return reverse("domain_detail", args=[domain.host.name, str(domain.uuid)])


def only_operation(domain: Domain) -> Operation:
    return Operation.objects.get(domain=domain)


# kind: (who, how the domain starts, libvirt check after, inventory check after)
CASES = {
    OperationKind.START: (
        "olga_operator",
        {"state": "shutoff"},
        lambda f: f.state == libvirt.VIR_DOMAIN_RUNNING and f.active,
        lambda d: d.state == State.RUNNING and d.libvirt_id is not None,
    ),
    OperationKind.SHUTDOWN: (
        "olga_operator",
        {"state": "running"},
        lambda f: f.state == libvirt.VIR_DOMAIN_SHUTOFF and not f.active,
        lambda d: d.state == State.SHUTOFF and d.libvirt_id is None,
    ),
    OperationKind.DESTROY: (
        "olga_operator",
        {"state": "running"},
        lambda f: f.state == libvirt.VIR_DOMAIN_SHUTOFF,
        lambda d: d.state == State.SHUTOFF and d.state_reason == "destroyed",
    ),
    OperationKind.REBOOT: (
        "olga_operator",
        {"state": "running"},
        # The test driver's reboot is a no-op: the domain runs on.
        lambda f: f.state == libvirt.VIR_DOMAIN_RUNNING,
        lambda d: d.state == State.RUNNING,
    ),
    OperationKind.SUSPEND: (
        "olga_operator",
        {"state": "running"},
        lambda f: f.state == libvirt.VIR_DOMAIN_PAUSED,
        lambda d: d.state == State.PAUSED and d.state_reason == "user",
    ),
    OperationKind.RESUME: (
        "olga_operator",
        {"state": "paused"},
        lambda f: f.state == libvirt.VIR_DOMAIN_RUNNING,
        lambda d: d.state == State.RUNNING and d.state_reason == "unpaused",
    ),
    OperationKind.AUTOSTART_ON: (
        "olga_operator",
        {"state": "shutoff"},
        lambda f: f.autostart,
        lambda d: d.autostart,
    ),
    OperationKind.AUTOSTART_OFF: (
        "olga_operator",
        {"state": "shutoff", "autostart": True},
        lambda f: not f.autostart,
        lambda d: not d.autostart,
    ),
    OperationKind.MANAGED_SAVE: (
        "olga_operator",
        {"state": "running"},
        lambda f: f.managed_save and f.state == libvirt.VIR_DOMAIN_SHUTOFF,
        lambda d: d.has_managed_save and d.state == State.SHUTOFF,
    ),
    OperationKind.MANAGED_SAVE_REMOVE: (
        "olga_operator",
        {"managed_save": True},
        lambda f: not f.managed_save,
        lambda d: not d.has_managed_save,
    ),
    OperationKind.UNDEFINE: (
        "alice_admin",
        {"state": "shutoff"},
        lambda f: f is None,
        lambda d: d.gone_at is not None,
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_action_through_http_reaches_libvirt_and_the_inventory(
    kind, people, make_domain, libvirt_hosts
):
    who, setup, libvirt_check, inventory_check = CASES[kind]
    user = getattr(people, who)
    domain = make_domain(**setup)
    client = client_for(user)
    data = {"confirm": "yes"} if kind in ("destroy", "undefine") else {}

    response = client.post(action_url(domain, kind), data, HTTP_X_REQUEST_ID=f"req-{kind}")

    assert response.status_code == 303
    assert response["Location"] == detail_url(domain)
    op = only_operation(domain)
    assert (op.kind, op.user, op.status) == (kind, user, OperationStatus.SUCCEEDED), (
        op.message,
        op.error,
    )
    assert op.request_id == f"req-{kind}" and op.task_id and op.started_at and op.finished_at
    assert libvirt_check(live(libvirt_hosts.conn("alpha"), domain.uuid))
    # The task refreshes the inventory before it says "succeeded".
    assert inventory_check(fresh(domain))

    page = client.get(response["Location"]).content.decode()
    label = OperationKind(kind).label
    assert f"Operation #{op.pk} {label}: succeeded. {op.message}" in page
    assert f'href="/operations/{op.pk}/">#{op.pk}</a>' in page  # in the history
    row = fresh(domain)
    if row.gone_at is None:
        badge = f'<span class="badge badge-{state_class(row)}">{row.get_state_display()}</span>'
        assert badge in page
    else:
        assert "libvirt no longer knows this VM" in page


def test_state_shows_on_the_list_after_an_action(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)

    response = client.post(action_url(domain, "suspend"))

    assert response.status_code == 303
    page = client.get(reverse("domain_list")).content.decode()
    rows = [row for row in page.split("<tr") if f'<code class="uuid" title="{domain.uuid}">' in row]
    assert len(rows) == 1
    assert '<span class="badge badge-paused">paused</span>' in rows[0]


def test_htmx_action_answers_with_the_refreshed_panel(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")

    response = client_for(people.olga_operator).post(
        action_url(domain, "suspend"), HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    part = response.content.decode()
    op = only_operation(domain)
    assert part.lstrip().startswith('<div id="domain-panel">')
    assert f"Operation #{op.pk} pause: succeeded. Paused." in part
    assert '<span class="badge badge-paused">paused</span>' in part
    # The buttons now fit the new state: resume instead of suspend.
    assert "/do/resume/" in part and "/do/suspend/" not in part
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).state == libvirt.VIR_DOMAIN_PAUSED


def test_slow_operation_leads_to_its_page(settings, people, make_domain, libvirt_hosts):
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    domain = make_domain(state="shutoff")
    client = client_for(people.olga_operator)

    response = client.post(action_url(domain, "start"))

    op = only_operation(domain)
    assert response.status_code == 303
    assert response["Location"] == reverse("operation_detail", args=[op.pk])
    done = wait_finished(op)
    assert done.status == OperationStatus.SUCCEEDED
    page = client.get(response["Location"]).content.decode()
    assert f"Operation #{op.pk} start is still running." in page  # the flash of the POST
    assert ">succeeded</span>" in page
    assert 'hx-trigger="every 1s"' not in page
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).active

    # With htmx, the client is told to go to the operation's page.
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    response = client.post(action_url(domain, "suspend"), HTTP_HX_REQUEST="true")
    second = Operation.objects.filter(domain=domain).latest("pk")
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("operation_detail", args=[second.pk])
    assert wait_finished(second).status == OperationStatus.SUCCEEDED


@pytest.mark.parametrize("kind", ["start", "destroy", "undefine"])
def test_get_on_an_action_is_405(kind, people, make_domain, libvirt_hosts):
    domain = make_domain(state="running" if kind == "destroy" else "shutoff")
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)

    response = client_for(people.alice_admin).get(action_url(domain, kind))

    assert response.status_code == 405
    assert not Operation.objects.exists()
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before


@pytest.mark.parametrize("kind", ["destroy", "undefine"])
@pytest.mark.parametrize("confirm", [None, "no", "YES"])
def test_dangerous_action_without_confirmation_goes_to_the_confirm_page(
    kind, confirm, people, make_domain, libvirt_hosts
):
    domain = make_domain(state="running")
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)
    data = {} if confirm is None else {"confirm": confirm}
    client = client_for(people.alice_admin)

    response = client.post(action_url(domain, kind), data)

    confirm_url = reverse("domain_confirm", args=["alpha", str(domain.uuid), kind])
    assert response.status_code == 303
    assert response["Location"] == confirm_url
    assert not Operation.objects.exists()
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before
    page = client.get(confirm_url).content.decode()
    assert '<input type="hidden" name="confirm" value="yes">' in page


def test_undefine_with_managed_save_and_snapshots(people, make_domain, libvirt_hosts):
    domain = make_domain(managed_save=True, snapshots=2)
    conn = libvirt_hosts.conn("alpha")
    before = live(conn, domain.uuid)
    client = client_for(people.alice_admin)

    confirm = client.get(reverse("domain_confirm", args=["alpha", str(domain.uuid), "undefine"]))
    page = confirm.content.decode()
    assert "This VM is hibernated; libvirt refuses to delete its definition otherwise." in page
    assert "This VM has 2 snapshots" in page

    # Without the options: refused before libvirt, with what to tick.
    response = client.post(action_url(domain, "undefine"), {"confirm": "yes"})
    assert response.status_code == 409
    assert "is hibernated; choose to discard the hibernation as well" in response.content.decode()
    assert live(conn, domain.uuid) == before

    response = client.post(
        action_url(domain, "undefine"),
        {"confirm": "yes", "remove_managed_save": "1", "remove_snapshots_metadata": "1"},
    )

    assert response.status_code == 303
    op = Operation.objects.filter(domain=domain).latest("pk")
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert op.params == {"remove_managed_save": True, "remove_snapshots_metadata": True}
    gone_page = client.get(detail_url(domain)).content.decode()
    assert "libvirt no longer knows this VM" in gone_page
    assert domain.name in op.xml_before  # the configuration is kept in the record
    assert live(conn, domain.uuid) is None
    assert fresh(domain).gone_at is not None
    op_page = client.get(reverse("operation_detail", args=[op.pk])).content.decode()
    assert "XML before" in op_page and "remove_managed_save=True" in op_page


@pytest.mark.parametrize(
    ("state", "kind", "says"),
    [
        ("running", "start", "only a shut-off permanent VM can be started"),
        ("shutoff", "suspend", "only a running VM can be paused"),
        ("running", "resume", "only a paused VM can be resumed"),
        ("shutoff", "destroy", "only a VM that is on can be forced off"),
    ],
)
def test_wrong_state_is_409_with_the_reason_on_the_page(
    state, kind, says, people, make_domain, libvirt_hosts
):
    domain = make_domain(state=state)
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)

    response = client_for(people.olga_operator).post(action_url(domain, kind), {"confirm": "yes"})

    assert response.status_code == 409
    op = only_operation(domain)
    assert (op.status, op.kind, op.user) == (OperationStatus.REFUSED, kind, people.olga_operator)
    assert says in op.message
    page = response.content.decode()
    assert 'class="banner banner-error" role="alert"' in page
    assert says in page
    assert f'<a href="/operations/{op.pk}/">(operation #{op.pk})</a>' in page
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before


def test_libvirt_refusal_on_a_stale_row_is_a_refusal_with_the_fresh_state(
    people, make_domain, libvirt_hosts
):
    """The inventory said shut off, but someone started it outside the panel meanwhile:
    libvirt refuses, and the panel says so in its own words, with the state as it is now
    (libvirt's words stay on record)."""
    domain = make_domain(state="shutoff")
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).create()
    client = client_for(people.olga_operator)

    response = client.post(action_url(domain, "start"))

    assert response.status_code == 303
    op = only_operation(domain)
    assert op.status == OperationStatus.REFUSED
    assert op.message == f"{domain.name} is running; only a shut-off permanent VM can be started."
    assert "already running" in op.error and op.error_code is not None
    page = client.get(response["Location"]).content.decode()
    assert f"Operation #{op.pk} start: refused." in page
    assert "is running; only a shut-off permanent VM can be started." in page
    # The failure refreshed the inventory: now it knows the domain runs.
    assert fresh(domain).state == State.RUNNING


def test_second_operation_on_a_busy_domain(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    # An operation waiting for a worker: the row alone makes the domain busy (no task is
    # sent for it, so it stays queued for the length of the test).
    first = Operation.objects.create(
        kind=OperationKind.SUSPEND, user=people.alice_admin, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
    )  # fmt: skip
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)

    response = client_for(people.olga_operator).post(action_url(domain, "reboot"))

    assert response.status_code == 409
    says = f"{domain.name} is busy with operation #{first.pk} (pause)."
    assert says in response.content.decode()
    refused = Operation.objects.exclude(pk=first.pk).get()
    assert (refused.status, refused.message) == (OperationStatus.REFUSED, says)
    assert Operation.objects.get(pk=first.pk).status == OperationStatus.QUEUED
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before


def test_host_down_is_a_clear_refusal(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)
    missing = "test+unix:///default?socket=/nonexistent/vmpanel-actions/libvirt-sock"
    Host.objects.filter(pk=domain.host_id).update(uri=missing)
    client = client_for(people.olga_operator)

    response = client.post(action_url(domain, "start"))

    assert response.status_code == 409
    page = response.content.decode()
    assert "Host alpha does not answer (" in page
    assert "try again when it is back" in page
    assert "/nonexistent/vmpanel-actions/libvirt-sock" in page
    op = only_operation(domain)
    assert op.status == OperationStatus.REFUSED and not op.task_id
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before
    hypervisor.forget(missing)


def test_disabled_host_is_a_clear_refusal(people, make_domain, libvirt_hosts):
    domain = make_domain(state="running")
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)
    Host.objects.filter(pk=domain.host_id).update(enabled=False)

    response = client_for(people.olga_operator).post(action_url(domain, "suspend"))

    assert response.status_code == 409
    assert "Host alpha is disabled; enable it first." in response.content.decode()
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before


# --- the operation page --------------------------------------------------------------


@pytest.mark.parametrize("status", [OperationStatus.QUEUED, OperationStatus.RUNNING])
def test_operation_page_polls_while_unfinished(status, people, make_domain):
    domain = make_domain(state="running")
    op = Operation.objects.create(
        kind=OperationKind.SUSPEND, user=people.olga_operator, domain=domain,
        host=domain.host, domain_uuid=domain.uuid, domain_name=domain.name,
        team=domain.team, status=status, progress=40,
    )  # fmt: skip
    url = reverse("operation_detail", args=[op.pk])
    client = client_for(people.victor_viewer)

    page = client.get(url).content.decode()
    part = client.get(url, HTTP_HX_REQUEST="true").content.decode()

    assert f'<div id="op-status" hx-get="{url}" hx-trigger="every 1s"' in page
    assert '<meta http-equiv="refresh" content="2">' in page  # without JavaScript
    assert f"Operation #{op.pk}: pause" in page
    assert f'<span class="badge badge-{"queued" if status == "queued" else "running-op"}">' in page
    assert 'value="40"' in page
    assert part.lstrip().startswith('<div id="op-status" hx-get=')
    assert "<html" not in part


def test_operation_page_of_a_finished_operation_stops_polling(people, make_domain):
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    client.post(action_url(domain, "suspend"))
    op = only_operation(domain)
    url = reverse("operation_detail", args=[op.pk])

    page = client.get(url).content.decode()
    part = client.get(url, HTTP_HX_REQUEST="true").content.decode()

    assert op.status == OperationStatus.SUCCEEDED
    # The page's own content stops polling (the navigation's counts are another matter).
    content = page[page.index("<main>") :]
    assert "hx-trigger" not in content and 'http-equiv="refresh"' not in page
    assert part.lstrip().startswith('<div id="op-status">')
    assert ">succeeded</span>" in page
    assert "Paused." in page
    assert "olga_operator" in page and domain.name in page
