"""Lifecycle services end to end: service → Operation row → real Celery worker → libvirt.

Each test calls the service as the least role allowed (operator, admin for undefine),
checks the queued Operation, waits for the worker, then checks libvirt's own state
through the tests' connection and the inventory row the task refreshed.
"""

from __future__ import annotations

from collections.abc import Callable

import libvirt
import pytest

from domains import tasks
from domains.models import Domain, Operation, OperationKind, OperationStatus, State
from domains.services import lifecycle
from tests.helpers import button_service, client_for, fresh, live, wait_finished, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


def queue_and_finish(op: Operation, user, kind: str) -> Operation:
    """Check the freshly queued operation, wait for the worker, insist it succeeded."""
    assert op.pk is not None
    assert op.status == OperationStatus.QUEUED
    row = Operation.objects.get(pk=op.pk)
    assert (row.kind, row.user, row.domain_id) == (kind, user, op.domain_id)
    assert row.task_id and row.domain_uuid == op.domain.uuid and row.team == op.domain.team

    done = wait_finished(op)
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    assert done.progress == 100 and done.message
    assert done.started_at and done.finished_at and done.started_at <= done.finished_at
    assert not done.error
    return done


def row_matches(domain: Domain, check: Callable[[Domain], bool]) -> Domain:
    """Wait for the inventory row to be refreshed (the task does it after finishing)."""

    def matches() -> Domain | None:
        row = fresh(domain)
        return row if check(row) else None

    return wait_for(matches, timeout=5, what=f"inventory row of {domain.name} refreshed")


# (service call, state to start from, libvirt state after, inventory check after)
LIFECYCLE_CASES = {
    OperationKind.START: (
        button_service("start"),
        "shutoff",
        libvirt.VIR_DOMAIN_RUNNING,
        lambda d: d.state == State.RUNNING and d.libvirt_id is not None,
    ),
    OperationKind.SHUTDOWN: (
        button_service("shutdown"),
        "running",
        libvirt.VIR_DOMAIN_SHUTOFF,
        lambda d: d.state == State.SHUTOFF and d.libvirt_id is None,
    ),
    OperationKind.DESTROY: (
        button_service("destroy"),
        "running",
        libvirt.VIR_DOMAIN_SHUTOFF,
        lambda d: d.state == State.SHUTOFF and d.state_reason == "destroyed",
    ),
    OperationKind.SUSPEND: (
        button_service("suspend"),
        "running",
        libvirt.VIR_DOMAIN_PAUSED,
        lambda d: d.state == State.PAUSED and d.state_reason == "user",
    ),
    OperationKind.RESUME: (
        button_service("resume"),
        "paused",
        libvirt.VIR_DOMAIN_RUNNING,
        lambda d: d.state == State.RUNNING and d.state_reason == "unpaused",
    ),
}


@pytest.mark.parametrize("kind", list(LIFECYCLE_CASES))
def test_lifecycle_operation_runs_in_the_worker(kind, make_domain, people, libvirt_hosts):
    service, initial, expected_state, inventory_check = LIFECYCLE_CASES[kind]
    domain = make_domain(state=initial)

    op = service(people.olga_operator, domain)

    queue_and_finish(op, people.olga_operator, kind)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).state == expected_state
    row_matches(domain, inventory_check)


def test_reset_through_the_confirmation_page(make_domain, people, libvirt_hosts, settings):
    """The kind added as docs/architecture.md's worked example: a button that asks first,
    then a plain operation in the worker."""
    settings.VMPANEL_QUICK_WAIT_SECONDS = 15
    domain = make_domain(state="running")
    client = client_for(people.olga_operator)
    detail = client.get(f"/domains/alpha/{domain.uuid}/").content.decode()
    assert f"/domains/alpha/{domain.uuid}/confirm/reset/" in detail  # a button that asks first
    page = client.get(f"/domains/alpha/{domain.uuid}/confirm/reset/").content.decode()
    assert f"Reset {domain.name}?" in page and "unsaved data in it is lost" in page

    response = client.post(f"/domains/alpha/{domain.uuid}/do/reset/", {"confirm": "yes"})

    assert response.status_code == 303
    op = Operation.objects.get(domain=domain, kind=OperationKind.RESET)
    assert (op.status, op.message) == (OperationStatus.SUCCEEDED, "Reset.")
    # The test driver's reset changes nothing it shows: the domain runs on.
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).state == libvirt.VIR_DOMAIN_RUNNING
    # Shut off, there is nothing to reset: refused for state, on record.
    off = make_domain(state="shutoff")
    response = client.post(f"/domains/alpha/{off.uuid}/do/reset/", {"confirm": "yes"})
    assert response.status_code == 409
    assert "only a running VM can be reset" in response.content.decode()


def test_reboot(make_domain, people, libvirt_hosts):
    domain = make_domain(state="running")
    conn = libvirt_hosts.conn("alpha")

    op = button_service("reboot")(people.olga_operator, domain)

    done = queue_and_finish(op, people.olga_operator, OperationKind.REBOOT)
    assert done.message == "Reboot requested."
    # The test driver's reboot is a no-op: the domain runs on, with the same ID.
    assert live(conn, domain.uuid).state == libvirt.VIR_DOMAIN_RUNNING
    assert conn.lookupByUUIDString(str(domain.uuid)).ID() == domain.libvirt_id
    assert fresh(domain).state == State.RUNNING


@pytest.mark.parametrize("enabled", [True, False])
def test_autostart(enabled, make_domain, people, libvirt_hosts):
    domain = make_domain(autostart=not enabled)

    service = button_service("autostart_on") if enabled else button_service("autostart_off")
    op = service(people.olga_operator, domain)

    kind = OperationKind.AUTOSTART_ON if enabled else OperationKind.AUTOSTART_OFF
    assert op.kind == kind
    queue_and_finish(op, people.olga_operator, kind)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).autostart is enabled
    row_matches(domain, lambda d: d.autostart is enabled)


@pytest.mark.parametrize(
    ("setup", "options"),
    [
        ({}, {}),
        ({"managed_save": True}, {"remove_managed_save": True}),
        ({"snapshots": 2}, {"remove_snapshots_metadata": True}),
        (
            {"managed_save": True, "snapshots": 1},
            {"remove_managed_save": True, "remove_snapshots_metadata": True},
        ),
    ],
    ids=["plain", "managed-save", "snapshots", "both"],
)
def test_undefine(setup, options, make_domain, people, libvirt_hosts):
    domain = make_domain(**setup)
    assert domain.has_managed_save is bool(setup.get("managed_save"))
    assert domain.snapshot_count == setup.get("snapshots", 0)

    op = lifecycle.undefine_domain(people.alice_admin, domain, **options)

    done = queue_and_finish(op, people.alice_admin, OperationKind.UNDEFINE)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) is None
    # The configuration is kept in the record: it is all that is left of the domain.
    assert domain.name in done.xml_before and str(domain.uuid) in done.xml_before
    # Gone, never deleted: the row stays with its operations.
    row = row_matches(domain, lambda d: d.gone_at is not None)
    assert row.libvirt_id is None
    assert list(row.operations.all()) == [done]


def test_undefine_running_domain_leaves_it_transient(make_domain, people, libvirt_hosts):
    domain = make_domain(state="running")

    op = lifecycle.undefine_domain(people.alice_admin, domain)

    queue_and_finish(op, people.alice_admin, OperationKind.UNDEFINE)
    facts = live(libvirt_hosts.conn("alpha"), domain.uuid)
    assert facts.state == libvirt.VIR_DOMAIN_RUNNING and not facts.persistent
    row_matches(domain, lambda d: not d.persistent and d.gone_at is None)


def test_superuser_may_act_on_a_domain_of_no_team(make_domain, people, libvirt_hosts):
    domain = make_domain(team=None)

    op = button_service("start")(people.root, domain)

    queue_and_finish(op, people.root, OperationKind.START)
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).active


def test_operations_on_two_hosts(make_domain, people, libvirt_hosts):
    """The worker reaches both hosts, and the inventory keeps them apart."""
    on_alpha = make_domain("alpha", state="running")
    on_beta = make_domain("beta", state="running")

    ops = [
        button_service("suspend")(people.olga_operator, on_alpha),
        button_service("destroy")(people.olga_operator, on_beta),
    ]

    for op in ops:
        assert wait_finished(op).status == OperationStatus.SUCCEEDED
    assert live(libvirt_hosts.conn("alpha"), on_alpha.uuid).state == libvirt.VIR_DOMAIN_PAUSED
    assert live(libvirt_hosts.conn("beta"), on_beta.uuid).state == libvirt.VIR_DOMAIN_SHUTOFF
    assert live(libvirt_hosts.conn("beta"), on_alpha.uuid) is None


def test_refusal_in_libvirt_on_a_stale_row_is_recorded(make_domain, people, libvirt_hosts):
    """The inventory said running, libvirt knew better: the operation is refused with the
    state as it is now, libvirt's words kept beside."""
    domain = make_domain(state="running")
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).destroy()

    op = button_service("destroy")(people.olga_operator, domain)

    done = wait_finished(op)
    assert done.status == OperationStatus.REFUSED
    assert done.error_code == libvirt.VIR_ERR_OPERATION_INVALID
    assert "not running" in done.error
    assert done.message == f"{domain.name} is shut off; only a VM that is on can be forced off."
    # And the inventory learns the truth from the task's refresh.
    row_matches(domain, lambda d: d.state == State.SHUTOFF)


def test_redelivered_task_does_nothing(make_domain, people, libvirt_hosts):
    """acks_late may deliver a task twice: the second run finds the operation claimed."""
    domain = make_domain(state="shutoff")
    op = button_service("start")(people.olga_operator, domain)
    done = queue_and_finish(op, people.olga_operator, OperationKind.START)
    row_matches(domain, lambda d: d.state == State.RUNNING)
    # Turn it off behind the panel's back: a second start would turn it on again.
    conn = libvirt_hosts.conn("alpha")
    conn.lookupByUUIDString(str(domain.uuid)).destroy()

    tasks.start_domain_task(op.pk)  # runs here, as a second delivery would in the worker

    again = Operation.objects.get(pk=op.pk)
    assert (again.status, again.started_at, again.finished_at, again.message) == (
        done.status,
        done.started_at,
        done.finished_at,
        done.message,
    )
    assert live(conn, domain.uuid).state == libvirt.VIR_DOMAIN_SHUTOFF
    assert Operation.objects.count() == 1
