"""Actions the services turn down before any work, and what each leaves on record.

A refusal for state, role, host or busyness leaves a `refused` Operation with a message in
plain words (DESIGN rule 3); a domain outside the user's teams is a 404 with no row at all,
so that the audit trail does not leak its existence. libvirt is never touched.

These tests need the libvirt hosts (the services ping the host) but not the worker: a
refused action queues nothing, and in the plain per-test transaction a queued one is never
sent either (`on_commit` does not fire), which keeps the busy case deterministic.
"""

from __future__ import annotations

import uuid as uuidlib

import pytest

from domains.models import Domain, Host, Operation, OperationKind, OperationStatus, State
from domains.services import lifecycle
from domains.services.common import ActionRefused
from tests.helpers import button_service, live

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def assert_refused(excinfo, status: int, user, domain: Domain, kind: str, says: str) -> Operation:
    """The refusal carries its HTTP status and a `refused` row with the same message."""
    exc = excinfo.value
    assert exc.status == status
    assert says in exc.message
    op = Operation.objects.get()
    assert exc.operation == op
    assert (op.status, op.kind, op.user, op.domain) == (OperationStatus.REFUSED, kind, user, domain)
    assert op.message == exc.message
    assert (op.host, op.domain_uuid, op.domain_name) == (domain.host, domain.uuid, domain.name)
    assert op.finished_at is not None and not op.task_id
    return op


@pytest.mark.parametrize(
    ("state", "call", "kind", "says"),
    [
        ("running", button_service("start"), OperationKind.START, "only a shut-off"),
        ("shutoff", button_service("shutdown"), OperationKind.SHUTDOWN, "only a running"),
        ("shutoff", button_service("destroy"), OperationKind.DESTROY, "only a VM that is on"),
        ("paused", button_service("reboot"), OperationKind.REBOOT, "only a running"),
        ("paused", button_service("suspend"), OperationKind.SUSPEND, "only a running"),
        ("running", button_service("resume"), OperationKind.RESUME, "only a paused"),
    ],
)
def test_wrong_state_is_refused(state, call, kind, says, make_domain, people, libvirt_hosts):
    domain = make_domain(state=state)
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)

    with pytest.raises(ActionRefused) as excinfo:
        call(people.olga_operator, domain)

    op = assert_refused(excinfo, 409, people.olga_operator, domain, kind, says)
    assert domain.name in op.message and domain.get_state_display() in op.message
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before


def test_autostart_already_in_that_state_is_refused(make_domain, people):
    domain = make_domain(autostart=True)

    with pytest.raises(ActionRefused) as excinfo:
        button_service("autostart_on")(people.olga_operator, domain)

    assert_refused(
        excinfo, 409, people.olga_operator, domain, OperationKind.AUTOSTART_ON, "already"
    )


def test_transient_domain_cannot_be_undefined(make_domain, people):
    domain = make_domain(state="running", persistent=False)

    with pytest.raises(ActionRefused) as excinfo:
        lifecycle.undefine_domain(people.alice_admin, domain)

    assert_refused(excinfo, 409, people.alice_admin, domain, OperationKind.UNDEFINE, "temporary")


def test_viewer_gets_403_with_a_refused_row(make_domain, people, libvirt_hosts):
    domain = make_domain(state="shutoff")

    with pytest.raises(ActionRefused) as excinfo:
        button_service("start")(people.victor_viewer, domain)

    assert_refused(excinfo, 403, people.victor_viewer, domain, OperationKind.START, "role")
    assert not live(libvirt_hosts.conn("alpha"), domain.uuid).active


def test_operator_may_not_undefine(make_domain, people, libvirt_hosts):
    domain = make_domain()

    with pytest.raises(ActionRefused) as excinfo:
        lifecycle.undefine_domain(people.olga_operator, domain)

    assert_refused(excinfo, 403, people.olga_operator, domain, OperationKind.UNDEFINE, "role")
    assert live(libvirt_hosts.conn("alpha"), domain.uuid).persistent


@pytest.mark.parametrize("who", ["bob_b", "nora_noteam"])
@pytest.mark.parametrize(
    "call",
    [
        button_service("start"),
        button_service("autostart_on"),
        lifecycle.undefine_domain,
    ],
    ids=["start", "autostart", "undefine"],
)
def test_outsider_gets_404_and_leaves_no_trace(who, call, make_domain, people, libvirt_hosts):
    # A managed-save image and a snapshot: undefine's own pre-checks must not leak either.
    domain = make_domain(managed_save=True, snapshots=1)
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)

    with pytest.raises(ActionRefused) as excinfo:
        call(getattr(people, who), domain)

    assert excinfo.value.status == 404
    assert excinfo.value.operation is None
    assert not Operation.objects.exists()
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before


def test_domain_of_no_team_is_a_404_for_team_members(make_domain, people):
    domain = make_domain(team=None)

    with pytest.raises(ActionRefused) as excinfo:
        button_service("start")(people.alice_admin, domain)

    assert excinfo.value.status == 404
    assert not Operation.objects.exists()


def _domain_row(host: Host, team) -> Domain:
    return Domain.objects.create(
        host=host, uuid=uuidlib.uuid4(), name="lonely", state=State.SHUTOFF, team=team
    )


def test_host_that_does_not_answer(people, tmp_path):
    host = Host.objects.create(
        name="nowhere", uri=f"test+unix:///default?socket={tmp_path}/no/such/libvirt-sock"
    )
    domain = _domain_row(host, people.team_a)

    with pytest.raises(ActionRefused) as excinfo:
        button_service("start")(people.olga_operator, domain)

    op = assert_refused(
        excinfo, 409, people.olga_operator, domain, OperationKind.START, "does not answer"
    )
    # libvirt's own words are part of the message.
    assert "no/such/libvirt-sock" in op.message


def test_host_whose_daemon_stopped(people, libvirt_hosts):
    """A host that answered a moment ago: the cached connection is broken, not missing."""
    from domains import hypervisor, inventory

    libvirt_hosts.start("gamma")
    uri = libvirt_hosts.uri("gamma")
    try:
        host = Host.objects.create(name="gamma", uri=uri)
        inventory.reconcile_host(host)
        hypervisor.ping(uri)  # the application's connection is now open and cached
        domain = Domain.objects.get(host=host, name="test")
        domain.team = people.team_a
        domain.save()
    finally:
        libvirt_hosts.stop("gamma")

    with pytest.raises(ActionRefused) as excinfo:
        button_service("shutdown")(people.olga_operator, domain)

    assert_refused(
        excinfo, 409, people.olga_operator, domain, OperationKind.SHUTDOWN, "does not answer"
    )
    hypervisor.forget(uri)


def test_disabled_host(make_domain, people):
    domain = make_domain(state="shutoff")
    Host.objects.filter(pk=domain.host_id).update(enabled=False)
    domain.refresh_from_db()

    with pytest.raises(ActionRefused) as excinfo:
        button_service("start")(people.olga_operator, domain)

    assert_refused(excinfo, 409, people.olga_operator, domain, OperationKind.START, "disabled")


def test_gone_domain(make_domain, people):
    domain = make_domain(state="shutoff")
    Domain.objects.filter(pk=domain.pk).update(gone_at=domain.last_seen_at)
    domain.refresh_from_db()

    with pytest.raises(ActionRefused) as excinfo:
        button_service("start")(people.olga_operator, domain)

    assert_refused(
        excinfo, 409, people.olga_operator, domain, OperationKind.START, "no longer exists"
    )


def test_second_operation_on_a_busy_domain(make_domain, people, libvirt_hosts):
    domain = make_domain(state="shutoff")
    first = button_service("start")(people.olga_operator, domain)  # queued, never sent here

    with pytest.raises(ActionRefused) as excinfo:
        button_service("autostart_on")(people.alice_admin, domain)

    exc = excinfo.value
    assert exc.status == 409
    assert f"busy with operation #{first.pk}" in exc.message
    refused = exc.operation
    assert refused.status == OperationStatus.REFUSED and refused.message == exc.message
    assert refused.user == people.alice_admin and refused.kind == OperationKind.AUTOSTART_ON
    first.refresh_from_db()
    assert first.status == OperationStatus.QUEUED
    assert Operation.objects.count() == 2
    assert not live(libvirt_hosts.conn("alpha"), domain.uuid).autostart


def test_running_operation_also_makes_the_domain_busy(make_domain, people):
    domain = make_domain(state="running")
    first = button_service("suspend")(people.olga_operator, domain)
    Operation.objects.filter(pk=first.pk).update(status=OperationStatus.RUNNING)

    with pytest.raises(ActionRefused, match=f"busy with operation #{first.pk}"):
        button_service("destroy")(people.olga_operator, domain)


def test_finished_operations_do_not_make_it_busy(make_domain, people):
    domain = make_domain(state="running")
    first = button_service("suspend")(people.olga_operator, domain)
    Operation.objects.filter(pk=first.pk).update(status=OperationStatus.FAILED)

    second = button_service("destroy")(people.olga_operator, domain)

    assert second.status == OperationStatus.QUEUED


@pytest.mark.parametrize(
    ("setup", "options", "says"),
    [
        ({"managed_save": True}, {}, "is hibernated; choose to discard the hibernation as well"),
        (
            {"managed_save": True},
            {"remove_snapshots_metadata": True},
            "is hibernated; choose to discard",
        ),
        ({"snapshots": 1}, {}, "has snapshots; choose to remove their metadata as well"),
        ({"snapshots": 1}, {"remove_managed_save": True}, "has snapshots"),
    ],
)
def test_undefine_without_the_needed_option(
    setup, options, says, make_domain, people, libvirt_hosts
):
    domain = make_domain(**setup)
    before = live(libvirt_hosts.conn("alpha"), domain.uuid)

    with pytest.raises(ActionRefused) as excinfo:
        lifecycle.undefine_domain(people.alice_admin, domain, **options)

    op = assert_refused(excinfo, 409, people.alice_admin, domain, OperationKind.UNDEFINE, says)
    assert domain.name in op.message
    assert op.params == {
        "remove_managed_save": bool(options.get("remove_managed_save")),
        "remove_snapshots_metadata": bool(options.get("remove_snapshots_metadata")),
    }
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) == before
