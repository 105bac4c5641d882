"""Save, restore, managed save, cancel and orphan recovery on the test-driver hosts.

The test driver really saves (a small file in the host's save folder, written by the
daemon) and restores, so the whole path runs here: service → Operation → real worker →
libvirt → inventory. Progress and abortJob need real QEMU (tests/qemu).
"""

from __future__ import annotations

import libvirt
import pytest
from django.utils import timezone

from domains import runner, tasks
from domains.models import Operation, OperationKind, OperationStatus, SavedImage, State
from domains.services import common, images, operations
from tests.helpers import button_service, fresh, live, wait_finished, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


def test_save_then_restore(people, make_domain, save_dir, libvirt_hosts):
    domain = make_domain("alpha", state="running")
    op = images.save_domain(people.olga_operator, domain, "before-upgrade")
    assert op.params["path"] == f"{save_dir}/before-upgrade.save"
    done = wait_finished(op)
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    conn = libvirt_hosts.conn("alpha")
    assert live(conn, domain.uuid).state == libvirt.VIR_DOMAIN_SHUTOFF
    assert (save_dir / "before-upgrade.save").exists()
    image = SavedImage.objects.get(host=domain.host)
    assert image.domain == domain and image.domain_name == domain.name
    assert image.memory_kib == 256 * 1024  # read back from the image by libvirt
    assert fresh(domain).state == State.SHUTOFF

    op = images.restore_domain(people.olga_operator, image)
    done = wait_finished(op)
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    assert live(conn, domain.uuid).state == libvirt.VIR_DOMAIN_RUNNING
    assert fresh(domain).state == State.RUNNING
    assert fresh(domain).state_reason == "restored"


def test_restore_refused_while_running(people, make_domain, save_dir):
    domain = make_domain("alpha", state="running")
    wait_finished(images.save_domain(people.olga_operator, domain, "img"))
    image = SavedImage.objects.get()
    wait_finished(button_service("start")(people.olga_operator, fresh(domain)))
    with pytest.raises(common.ActionRefused) as refused:
        images.restore_domain(people.olga_operator, image)
    assert "shut off" in refused.value.message or "running" in refused.value.message
    assert refused.value.operation.status == OperationStatus.REFUSED


def test_saved_transient_domain_comes_back(people, make_domain, save_dir, libvirt_hosts):
    domain = make_domain("alpha", state="running", persistent=False)
    wait_finished(images.save_domain(people.olga_operator, domain, "transient"))
    # Saving a transient domain ends it: libvirt forgets it, the inventory marks it gone.
    assert live(libvirt_hosts.conn("alpha"), domain.uuid) is None
    assert fresh(domain).gone_at is not None
    done = wait_finished(images.restore_domain(people.olga_operator, SavedImage.objects.get()))
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    row = fresh(domain)
    assert row.gone_at is None and row.state == State.RUNNING  # same row, same history
    assert row.operations.count() == 2


@pytest.mark.parametrize(
    "image_name,why",
    [
        ("../etc/passwd", "letters, digits"),
        ("/tmp/x", "letters, digits"),
        ("", "letters, digits"),
        ("a" * 101, "letters, digits"),
    ],
)
def test_save_refuses_bad_names(people, make_domain, save_dir, image_name, why):
    domain = make_domain("alpha", state="running")
    with pytest.raises(common.ActionRefused) as refused:
        images.save_domain(people.olga_operator, domain, image_name)
    assert why in refused.value.message
    assert not any(save_dir.iterdir())


def test_save_refused_without_save_folder_or_twice(people, make_domain, hosts, save_dir):
    domain = make_domain("alpha", state="running")
    wait_finished(images.save_domain(people.olga_operator, domain, "once"))
    other = make_domain("alpha", state="running")
    with pytest.raises(common.ActionRefused, match="exists already"):
        images.save_domain(people.olga_operator, other, "once")
    domain_b = make_domain("beta", state="running")
    with pytest.raises(common.ActionRefused, match="no save folder"):
        images.save_domain(people.olga_operator, domain_b, "x")


def test_save_refused_for_viewer_and_shut_off(people, make_domain, save_dir):
    running = make_domain("alpha", state="running")
    with pytest.raises(common.ActionRefused) as refused:
        images.save_domain(people.victor_viewer, running, "v")
    assert refused.value.status == 403
    stopped = make_domain("alpha", state="shutoff")
    with pytest.raises(common.ActionRefused) as refused:
        images.save_domain(people.olga_operator, stopped, "s")
    assert refused.value.status == 409 and "running or paused" in refused.value.message


def test_managed_save_then_start_then_remove(people, make_domain, libvirt_hosts):
    conn = libvirt_hosts.conn("alpha")
    domain = make_domain("alpha", state="running")
    done = wait_finished(button_service("managed_save")(people.olga_operator, domain))
    assert done.status == OperationStatus.SUCCEEDED, (done.message, done.error)
    assert live(conn, domain.uuid).managed_save
    assert fresh(domain).has_managed_save and fresh(domain).state == State.SHUTOFF
    # The next start resumes from the image and uses it up.
    wait_finished(button_service("start")(people.olga_operator, fresh(domain)))
    assert live(conn, domain.uuid).state == libvirt.VIR_DOMAIN_RUNNING
    assert not live(conn, domain.uuid).managed_save
    # Save again and remove the image instead: the next start boots afresh.
    wait_finished(button_service("managed_save")(people.olga_operator, fresh(domain)))
    done = wait_finished(button_service("managed_save_remove")(people.olga_operator, fresh(domain)))
    assert done.status == OperationStatus.SUCCEEDED
    assert not live(conn, domain.uuid).managed_save and not fresh(domain).has_managed_save


def test_managed_save_remove_refused_without_image(people, make_domain):
    domain = make_domain("alpha", state="shutoff")
    with pytest.raises(common.ActionRefused, match="is not hibernated"):
        button_service("managed_save_remove")(people.olga_operator, domain)


def test_cancel_a_queued_operation(people, make_domain):
    domain = make_domain("alpha", state="running")
    # A queued operation the worker has not claimed yet (made directly, not queued).
    op = Operation.objects.create(
        kind=OperationKind.SAVE, user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
    )  # fmt: skip
    done = operations.cancel_operation(people.olga_operator, op)
    assert done.status == OperationStatus.CANCELLED and done.finished_at
    # A late delivery of its task finds nothing to do.
    tasks.save_domain_task(op.pk)
    assert Operation.objects.get(pk=op.pk).status == OperationStatus.CANCELLED


def test_cancel_refusals(people, make_domain):
    domain = make_domain("alpha", state="running")
    # Running: only libvirt's long jobs abort (a queued one of any kind just stops).
    op = Operation.objects.create(
        kind=OperationKind.REBOOT, user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, team=domain.team, status=OperationStatus.RUNNING,
    )  # fmt: skip
    with pytest.raises(common.ActionRefused, match="cannot be cancelled"):
        operations.cancel_operation(people.olga_operator, op)
    with pytest.raises(common.ActionRefused) as refused:
        operations.cancel_operation(people.victor_viewer, op)
    assert refused.value.status == 403
    with pytest.raises(common.ActionRefused) as refused:
        operations.cancel_operation(people.bob_b, op)
    assert refused.value.status == 404


def test_orphaned_operation_is_marked_failed_with_the_real_state(people, make_domain, settings):
    domain = make_domain("alpha", state="running")
    # What a killed worker leaves: running, heartbeat long stopped.
    long_ago = timezone.now() - timezone.timedelta(seconds=settings.VMPANEL_STALE_SECONDS + 5)
    op = Operation.objects.create(
        kind=OperationKind.SUSPEND, user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
        status=OperationStatus.RUNNING, started_at=long_ago, heartbeat_at=long_ago,
    )  # fmt: skip
    fresh_op = Operation.objects.create(
        kind=OperationKind.SUSPEND, user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, team=domain.team, status=OperationStatus.RUNNING,
        started_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    assert runner.recover_orphaned_operations() == [op.pk]
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert "stopped before it finished" in op.message and "running" in op.message
    assert Operation.objects.get(pk=fresh_op.pk).status == OperationStatus.RUNNING
    # The domain is free again once the orphan is settled.
    fresh_op.status = OperationStatus.SUCCEEDED
    fresh_op.save()
    wait_finished(button_service("suspend")(people.olga_operator, fresh(domain)))


def test_worker_heartbeat_keeps_a_long_operation_alive(people, make_domain, save_dir):
    domain = make_domain("alpha", state="running")
    done = wait_finished(images.save_domain(people.olga_operator, domain, "beat"))
    assert done.heartbeat_at is None or done.heartbeat_at >= done.started_at
    assert runner.recover_orphaned_operations() == []
    wait_for(lambda: fresh(domain).state == State.SHUTOFF, what="inventory shut off")
