"""Workers anywhere (issue 14): any worker runs any operation, unless a host's slow
operations are pinned to a Celery queue (`Host.celery_queue`), which only the workers
started for it read.

A real second worker process (`start_worker`) reads only the pinned queue; the session's
worker reads the default one.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import timedelta

import pytest
import redis

from domains import runner
from domains.models import Host, Operation, OperationStatus, State
from tests.helpers import button_service, fresh, wait_finished, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


def test_a_pinned_hosts_slow_operations_wait_for_its_queues_workers(
    people, make_domain, redis_server, start_worker
):
    queue = f"near-beta-{uuidlib.uuid4().hex[:6]}"
    Host.objects.filter(name="beta").update(celery_queue=queue)
    slow = make_domain("beta", state="running")
    quick = make_domain("beta", state="running")

    # A quick action on the pinned host runs on any worker, at once.
    done = wait_finished(button_service("suspend")(people.olga_operator, quick))
    assert done.status == OperationStatus.SUCCEEDED, done.message

    # A slow one goes to the host's queue, which the session's worker does not read.
    op = button_service("managed_save")(people.olga_operator, fresh(slow))
    broker = redis.Redis.from_url(redis_server)
    wait_for(lambda: broker.llen(queue) == 1, what="the message in the host's queue")
    assert fresh(slow).state == State.RUNNING
    assert Operation.objects.get(pk=op.pk).status == OperationStatus.QUEUED

    # A worker near the host starts: it takes the operation and runs it.
    _proc, log_path = start_worker(queue)
    done = wait_finished(op, timeout=20)
    assert done.status == OperationStatus.SUCCEEDED, done.message
    assert fresh(slow).has_managed_save and fresh(slow).state == State.SHUTOFF
    assert f"operation {op.pk} managed_save running" in log_path.read_text()


def test_an_untaken_operation_of_a_pinned_host_says_which_queue_waits(
    people, make_domain, redis_server, settings
):
    queue = f"nobody-reads-{uuidlib.uuid4().hex[:6]}"
    Host.objects.filter(name="beta").update(celery_queue=queue)
    domain = make_domain("beta", state="running")
    op = button_service("managed_save")(people.olga_operator, domain)
    settings.VMPANEL_QUEUED_STALE_SECONDS = 60
    long_ago = op.created_at - timedelta(seconds=200)
    Operation.objects.filter(pk=op.pk).update(
        created_at=long_ago, params={**op.params, "sent_again_at": long_ago.timestamp()}
    )

    assert op.pk in runner.settle_stale_queued()

    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert f"only by the workers of queue {queue}" in op.message
    assert "nothing was done" in op.message
    redis.Redis.from_url(redis_server).delete(queue)
