"""Restarting workers one by one loses no operation and runs none twice (issue 14, the
upgrade path in docs/deploy.md).

A stream of slow operations (hibernate) goes to a queue of its own, read by one real worker
process at a time. The worker is restarted in the middle of the stream: gently (SIGTERM,
what `systemctl restart` sends: the running operation finishes, the messages it had taken
but not started go back to the queue, since they are acknowledged only when done), and
hard (SIGKILL, as when a machine vanishes or a stop times out). Every operation must end
succeeded or truthfully failed; none may stay queued or running; and the worker logs must
show each one run at most once (the claim takes an operation once, so a message delivered
again does nothing).
"""

from __future__ import annotations

import os
import signal
import uuid as uuidlib

import pytest

from domains import runner
from domains.models import Host, Operation, OperationStatus
from tests.helpers import button_service, fresh, live, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

STREAM = 40  # operations queued before the restart (a worker runs one in ~15 ms here)
DURING = 10  # and while no worker runs


def _pin_beta() -> str:
    """A queue of its own for beta's slow operations."""
    queue = f"rolling-{uuidlib.uuid4().hex[:6]}"
    Host.objects.filter(name="beta").update(celery_queue=queue)
    return queue


def _hibernate(people, domains) -> list[Operation]:
    return [button_service("managed_save")(people.olga_operator, d) for d in domains]


def _statuses(ops: list[Operation]) -> dict[int, str]:
    return dict(Operation.objects.filter(pk__in=[o.pk for o in ops]).values_list("pk", "status"))


def _succeeded(ops) -> int:
    return sum(1 for s in _statuses(ops).values() if s == OperationStatus.SUCCEEDED)


def _runs(op: Operation, *logs) -> int:
    """How many times a worker started running `op` (its log line, in every worker's log)."""
    line = f"operation {op.pk} managed_save running"
    return sum(log.read_text().count(line) for log in logs)


def test_a_gentle_restart_finishes_the_running_operation_and_loses_none(
    people, make_domain, start_worker
):
    queue = _pin_beta()
    domains = [make_domain("beta", state="running") for _ in range(STREAM + DURING)]
    first, first_log = start_worker(queue)
    ops = _hibernate(people, domains[:STREAM])
    wait_for(lambda: _succeeded(ops) >= 2, timeout=30, interval=0.005, what="under way")

    first.send_signal(signal.SIGTERM)  # systemctl restart: a warm shutdown
    assert first.wait(timeout=60) == 0
    assert _succeeded(ops) < STREAM, "the restart came too late to prove anything"
    ops += _hibernate(people, domains[STREAM:])  # queued while no worker runs
    second, second_log = start_worker(queue)

    wait_for(
        lambda: set(_statuses(ops).values()) == {OperationStatus.SUCCEEDED},
        timeout=60,
        what="every operation succeeded after the restart",
    )
    for op in ops:
        assert _runs(op, first_log, second_log) == 1, op.pk
        assert fresh(op.domain).has_managed_save
    assert "managed_save running" in second_log.read_text()  # the second took the rest


def test_a_killed_worker_loses_no_operation_and_none_runs_twice(
    people, make_domain, start_worker, libvirt_hosts, settings
):
    queue = _pin_beta()
    domains = [make_domain("beta", state="running") for _ in range(STREAM + DURING)]
    first, first_log = start_worker(queue)
    ops = _hibernate(people, domains[:STREAM])
    wait_for(lambda: _succeeded(ops) >= 2, timeout=30, interval=0.005, what="under way")

    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, without a word
    first.wait()
    assert _succeeded(ops) < STREAM, "the kill came too late to prove anything"
    ops += _hibernate(people, domains[STREAM:])  # queued while no worker runs
    second, second_log = start_worker(queue)

    # What any surviving worker or watcher does every little while, with short limits: a
    # running operation without heartbeat is settled, a message the dead worker had
    # taken is sent again.
    settings.VMPANEL_STALE_SECONDS = 2
    settings.VMPANEL_QUEUED_STALE_SECONDS = 3

    def settled() -> bool:
        runner.recover_orphaned_operations()
        runner.settle_stale_queued()
        finished = (OperationStatus.SUCCEEDED, OperationStatus.FAILED)
        return all(s in finished for s in _statuses(ops).values())

    wait_for(settled, timeout=90, interval=0.5, what="every operation settled")

    conn = libvirt_hosts.conn("beta")
    for op in Operation.objects.filter(pk__in=[o.pk for o in ops]).select_related("domain"):
        assert _runs(op, first_log, second_log) <= 1, op.pk
        facts = live(conn, op.domain.uuid)
        if op.status == OperationStatus.SUCCEEDED:
            assert facts.managed_save, op.pk
        elif "stopped before it finished" in op.message:
            # Killed while running it: the message says the VM's state as libvirt has it.
            assert fresh(op.domain).get_state_display() in op.message, op.message
        else:
            # Never started: nothing was done, and the VM still runs.
            assert "nothing was done" in op.message, op.message
            assert facts.active and not facts.managed_save, op.pk
