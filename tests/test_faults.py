"""Faults an operator meets, each settled truthfully (issue 9): a message the task queue
lost, a cancel of what never started, no worker, a stale row, the queue down, a stray
message."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from domains import inventory, liveness, outcomes, runner, tasks
from domains.kinds import KINDS  # noqa: E402
from domains.models import Domain, Host, Operation, OperationStatus, State
from domains.services import operations
from domains.services.common import ActionRefused
from tests.conftest import broker_at
from tests.helpers import button_service, client_for, fresh, wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _queued_unsent(user, domain, kind: str) -> Operation:
    """A queued operation whose message never reached a worker (lost with a restarted
    Redis): the row as the service writes it, nothing sent."""
    import uuid as uuidlib

    return Operation.objects.create(
        kind=kind, user=user, domain=domain, host=domain.host, domain_uuid=domain.uuid,
        domain_name=domain.name, team=domain.team, task_id=str(uuidlib.uuid4()),
    )  # fmt: skip


def _lose_every_message() -> None:
    """The Redis the messages went to restarted without its data: they are gone."""
    from vmpanel.celery import app

    redis.Redis.from_url(app.conf.broker_url).flushdb()


def _age(op: Operation, seconds: float) -> None:
    params = dict(op.params)
    if "sent_again_at" in params:
        params["sent_again_at"] -= seconds
    Operation.objects.filter(pk=op.pk).update(
        created_at=op.created_at - timedelta(seconds=seconds), params=params
    )


@pytest.fixture
def unread_queue(redis_server):
    """Messages go to a Redis database no worker reads (the session's worker, if one was
    started by an earlier test, reads another): as good as lost."""
    with broker_at(redis_server.rsplit("/", 1)[0] + "/7") as url:
        yield url
        redis.Redis.from_url(url).flushdb()


def test_an_operation_whose_message_was_lost_does_not_stay_queued(
    people, make_domain, unread_queue, settings
):
    settings.VMPANEL_QUEUED_STALE_SECONDS = 60
    domain = make_domain(state="shutoff")
    op = _queued_unsent(people.olga_operator, domain, "start")
    _age(op, 61)

    tasks.recover_orphaned_operations_task()  # what the watcher and the workers run

    op.refresh_from_db()
    assert op.status == OperationStatus.QUEUED and "sent_again_at" in op.params  # once more
    _lose_every_message()  # lost again
    _age(op, 61)
    tasks.recover_orphaned_operations_task()

    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert "No worker took this operation" in op.message and "nothing was done" in op.message
    assert "shut off" in op.message  # the domain's state, as libvirt says it
    # The domain is free again: the next start is not "busy with operation #N".
    assert button_service("start")(people.olga_operator, fresh(domain)).status == "queued"


def test_a_queued_operation_of_any_kind_can_be_cancelled(people, make_domain, redis_server):
    domain = make_domain(state="shutoff")
    op = _queued_unsent(people.olga_operator, domain, "start")

    op = operations.cancel_operation(people.olga_operator, op)

    assert op.status == OperationStatus.CANCELLED and "before it started" in op.message
    tasks.start_domain_task(op.pk)  # the message arriving late does nothing
    assert fresh(domain).state == State.SHUTOFF


def test_the_operation_page_says_when_no_worker_runs(
    people, make_domain, redis_server, monkeypatch
):
    domain = make_domain(state="shutoff")
    op = _queued_unsent(people.olga_operator, domain, "start")
    # A key of this test's own: a worker of this session marks the real one meanwhile.
    monkeypatch.setattr(liveness, "WORKER_ALIVE_KEY", f"vmpanel:test-alive:{op.pk}")

    page = client_for(people.olga_operator).get(f"/operations/{op.pk}/").content.decode()
    assert "No worker is running" in page

    liveness.mark_worker_alive()
    page = client_for(people.olga_operator).get(f"/operations/{op.pk}/").content.decode()
    assert "No worker is running" not in page


@pytest.mark.usefixtures("celery_worker")
def test_a_start_on_a_stale_row_is_a_clean_refusal(people, make_domain, libvirt_hosts):
    domain = make_domain(state="shutoff")
    # Started behind the panel's back; no watcher runs here, so the row still says off.
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).create()
    assert fresh(domain).state == State.SHUTOFF

    op = wait_finished(button_service("start")(people.olga_operator, domain))

    assert op.status == OperationStatus.REFUSED
    assert op.message == f"{domain.name} is running; only a shut-off permanent VM can be started."
    assert fresh(domain).state == State.RUNNING


@pytest.mark.usefixtures("broker_down")
def test_a_queue_that_does_not_answer_is_said_in_plain_words(people, make_domain, settings):
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    domain = make_domain(state="shutoff")
    client = client_for(people.olga_operator)

    response = client.post(f"/domains/alpha/{domain.uuid}/do/start/", follow=True)

    text = response.content.decode()
    assert "The task queue does not answer; nothing was done." in text
    assert "libvirt said" not in text and "Error 111" not in text
    op = Operation.objects.get(domain=domain)
    assert op.status == OperationStatus.FAILED and op.error == ""


def test_a_stray_message_of_another_kind_claims_nothing(people, make_domain, redis_server):
    domain = make_domain(state="running")
    op = _queued_unsent(people.olga_operator, domain, "suspend")
    assert KINDS["suspend"].task != "domains.tasks.save_domain_task"

    tasks.save_domain_task(op.pk)  # a message of another task, for this operation's id

    op.refresh_from_db()
    assert op.status == OperationStatus.QUEUED and fresh(domain).state == State.RUNNING
    Operation.objects.filter(pk=op.pk).update(status=OperationStatus.CANCELLED)


def test_queued_operations_within_the_bound_are_left_alone(people, make_domain, redis_server):
    domain = make_domain(state="shutoff")
    op = _queued_unsent(people.olga_operator, domain, "start")
    assert runner.settle_stale_queued() == []
    op.refresh_from_db()
    assert op.status == OperationStatus.QUEUED and "sent_again_at" not in op.params
    Operation.objects.filter(pk=op.pk).update(
        status=OperationStatus.CANCELLED, finished_at=timezone.now()
    )


def test_an_image_a_killed_save_left_is_adopted(people, make_domain, hosts, libvirt_hosts):
    from domains.models import AuditEvent, SavedImage
    from tests.conftest import RUN_DIR

    folder = RUN_DIR / "hosts" / "alpha" / "save"
    hosts.alpha.save_dir = str(folder)
    hosts.alpha.save(update_fields=["save_dir"])
    domain = make_domain(state="running")
    other = make_domain(state="running")
    path = f"{folder}/killed-{domain.pk}.save"
    foreign = f"{folder}/foreign-{domain.pk}.save"
    try:
        # The worker died mid-save; libvirt finished writing the image regardless. At the
        # other path lies an image of another domain.
        libvirt_hosts.conn("alpha").lookupByUUIDString(str(domain.uuid)).save(path)
        libvirt_hosts.conn("alpha").lookupByUUIDString(str(other.uuid)).save(foreign)
        ops = [
            Operation.objects.create(
                kind="save",
                user=people.olga_operator,
                domain=domain,
                host=domain.host,
                domain_uuid=domain.uuid,
                domain_name=domain.name,
                team=domain.team,
                params={"image": "x", "path": image},
                status=OperationStatus.FAILED,
                message="The worker running this operation stopped before it finished.",
                finished_at=timezone.now(),
            )  # fmt: skip
            for image in (path, foreign)
        ]

        tasks.recover_orphaned_operations_task()

        image = SavedImage.objects.get(path=path)
        assert (image.domain, image.operation, image.team) == (domain, ops[0], domain.team)
        assert AuditEvent.objects.get(kind="image_adopted").summary.startswith(path)
        assert not SavedImage.objects.filter(path=foreign).exists()  # not this domain's
        page = client_for(people.olga_operator).get(f"/domains/alpha/{domain.uuid}/")
        assert f"killed-{domain.pk}.save" in page.content.decode()
        tasks.recover_orphaned_operations_task()  # a second pass adopts nothing again
        assert SavedImage.objects.filter(path=path).count() == 1
    finally:
        for leftover in folder.glob(f"*-{domain.pk}.save"):
            leftover.unlink(missing_ok=True)


# --- migrations whose outcome libvirt did not report (item 2) ------------------------


def _migration_left(people, domain, dest, status, **params) -> Operation:
    """A migration of `domain` to `dest` as a worker leaves it when libvirt's answer never
    came: RUNNING with a dead worker's heartbeat, or CHECKING."""
    stale = timezone.now() - timedelta(minutes=5)
    return Operation.objects.create(
        kind="migrate", user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
        target_host=dest, status=status, started_at=stale, heartbeat_at=stale,
        params={"destination_uri": dest.uri, "flags": ["LIVE", "PEER2PEER"], **params},
    )  # fmt: skip


def _arrive(make_domain, libvirt_hosts, domain, host: str) -> None:
    """What a migration that got through does: the guest runs on `host`, gone from its
    source."""
    xml = make_domain.xml(domain.name, str(domain.uuid))
    make_domain.track(host, domain.uuid)
    libvirt_hosts.conn(host).createXML(xml, 0)
    src = libvirt_hosts.conn(domain.host.name).lookupByUUIDString(str(domain.uuid))
    src.destroy()
    src.undefine()


def test_a_migration_whose_worker_died_is_judged_from_both_hosts(
    people, make_domain, hosts, libvirt_hosts, redis_server
):
    # The guest never left: failed, and the row stays where the guest is.
    stayed = make_domain(state="running")
    op = _migration_left(people, stayed, hosts.beta, OperationStatus.RUNNING)
    tasks.recover_orphaned_operations_task()
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED, op.message
    assert "stayed on alpha" in op.message and "alpha has it running" in op.message
    assert fresh(stayed).host == hosts.alpha

    # The guest got through although the worker never heard: a success, the row (team,
    # history) follows it, and no second row without a team is left anywhere.
    moved = make_domain(state="running")
    op = _migration_left(people, moved, hosts.beta, OperationStatus.RUNNING)
    _arrive(make_domain, libvirt_hosts, moved, "beta")
    tasks.recover_orphaned_operations_task()
    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert "running on beta" in op.message
    rows = Domain.objects.filter(uuid=moved.uuid, gone_at__isnull=True)
    assert [(r.pk, r.host, r.team) for r in rows] == [(moved.pk, hosts.beta, people.team_a)]


def test_an_unknown_outcome_waits_checking_and_is_settled_once_known(
    people, make_domain, hosts, libvirt_hosts, settings
):
    domain = make_domain(state="running")
    # Its destination does not answer: nobody can say yet whether the guest moved.
    nowhere = Host.objects.create(
        name="nowhere", uri="test+unix:///default?socket=/nonexistent/sock"
    )
    op = _migration_left(people, domain, nowhere, OperationStatus.CHECKING, reported="EOF")
    # The source runs it, so it did not move — a destination that is away cannot change it.
    assert outcomes.settle_checking_operations() == [op.pk]
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED and "stayed on alpha" in op.message

    # A copy on the destination while the source still holds the guest too (as between
    # the end of the transfer and libvirt's confirmation): unknown, never success on sight.
    other = make_domain(state="running")
    op = _migration_left(people, other, hosts.beta, OperationStatus.CHECKING, reported="EOF")
    dest = libvirt_hosts.conn("beta").createXML(make_domain.xml(other.name, str(other.uuid)), 0)
    make_domain.track("beta", other.uuid)
    dest.suspend()
    libvirt_hosts.conn("alpha").lookupByUUIDString(str(other.uuid)).suspend()
    assert outcomes.settle_checking_operations() == []
    op.refresh_from_db()
    assert op.status == OperationStatus.CHECKING and "Outcome unknown" in op.message
    assert not op.is_finished
    with pytest.raises(ActionRefused, match="busy with operation"):
        button_service("suspend")(people.olga_operator, fresh(other))

    # Past the bound, an outcome still unknown is a failure that says so, not a busy
    # domain for ever.
    settings.VMPANEL_CHECKING_GIVE_UP_SECONDS = 60
    outcomes.settle_checking_operations()
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED and "still unknown" in op.message


def test_a_guest_seen_on_a_new_host_keeps_its_team(people, make_domain, hosts, libvirt_hosts):
    """Ownership follows the guest: the same UUID appearing on another host (moved by
    hand, or a copy half-way) is its team's, not a row nobody may see."""
    domain = make_domain(state="running", team="b")
    libvirt_hosts.conn("beta").defineXML(make_domain.xml(domain.name, str(domain.uuid)))
    make_domain.track("beta", domain.uuid)
    inventory.reconcile_host(hosts.beta)
    copy = Domain.objects.get(host=hosts.beta, uuid=domain.uuid)
    assert copy.team == people.team_b
