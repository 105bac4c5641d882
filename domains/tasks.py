"""One Celery task per operation kind.

Each task claims its Operation (queued → running, exactly one row, so a redelivered task
does no harm), holds the domain's Redis lock, calls `hypervisor`, records the result and
refreshes the inventory row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache

import redis
from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django.utils.translation import gettext as _

from . import hypervisor, inventory
from .hypervisor import HypervisorError
from .models import Operation, OperationStatus

log = logging.getLogger(__name__)

# Transient libvirt failures are tried again this many times, a moment apart.
RETRIES = 2
RETRY_DELAY_SECONDS = 1.0


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked worker must not share the parent's libvirt sockets.
    hypervisor.forget_all()


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _finish(op: Operation, status: str, message: str = "", error=None) -> None:
    op.status = status
    op.message = message
    op.finished_at = timezone.now()
    if error is not None:
        op.error = error.message
        op.error_code = error.code
    op.progress = 100 if status == OperationStatus.SUCCEEDED else op.progress
    op.save(
        update_fields=[
            "status", "message", "finished_at", "error", "error_code", "progress",
            "xml_before", "xml_after",
        ]
    )  # fmt: skip
    log.info(
        "operation %s %s %s user=%s host=%s domain=%s request=%s %s",
        op.pk, op.kind, status, op.user, op.host.name, op.domain_uuid,
        op.request_id, op.error,
    )  # fmt: skip


def run_operation(operation_id: int, work: Callable[[Operation], str]) -> None:
    """Claim, lock, do `work(op)` (returns the success message), record, refresh."""
    close_old_connections()
    claimed = Operation.objects.filter(pk=operation_id, status=OperationStatus.QUEUED).update(
        status=OperationStatus.RUNNING, started_at=timezone.now()
    )
    if claimed != 1:
        log.info("operation %s already claimed; redelivery ignored", operation_id)
        return
    op = Operation.objects.select_related("host", "domain", "user").get(pk=operation_id)
    log.info(
        "operation %s %s running user=%s host=%s domain=%s request=%s",
        op.pk, op.kind, op.user, op.host.name, op.domain_uuid, op.request_id,
    )  # fmt: skip
    lock = _redis().lock(
        f"vmpanel:domain:{op.host_id}:{op.domain_uuid}",
        timeout=settings.VMPANEL_DOMAIN_LOCK_SECONDS,
        blocking_timeout=5,
    )
    if not lock.acquire():
        _finish(
            op,
            OperationStatus.FAILED,
            _("Another operation holds this domain; try again when it has finished."),
        )
        return
    try:
        for attempt in range(RETRIES + 1):
            try:
                message = work(op)
                # The inventory first, so whoever sees "succeeded" sees the new state.
                _refresh_inventory(op)
                _finish(op, OperationStatus.SUCCEEDED, message)
                break
            except HypervisorError as exc:
                if exc.retryable and attempt < RETRIES:
                    hypervisor.forget(op.host.uri)
                    time.sleep(RETRY_DELAY_SECONDS)
                    continue
                _finish(op, OperationStatus.FAILED, exc.hint, exc)
                break
    except Exception as exc:  # record the unexpected too, then let Celery log it
        _finish(op, OperationStatus.FAILED, _("Unexpected error: %(error)s") % {"error": exc})
        raise
    finally:
        lock.release()
    if op.status != OperationStatus.SUCCEEDED:
        _refresh_inventory(op)  # a failure may have changed the state too


def _refresh_inventory(op: Operation) -> None:
    try:
        inventory.refresh_domain(op.host, op.domain_uuid)
    except HypervisorError as exc:
        log.warning("operation %s: inventory not refreshed: %s", op.pk, exc)


def _uri_uuid(op: Operation) -> tuple[str, str]:
    return op.host.uri, str(op.domain_uuid)


@shared_task(acks_late=True)
def start_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.start(*_uri_uuid(op), paused=bool(op.params.get("paused")))
        return _("Started.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def shutdown_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.shutdown(*_uri_uuid(op))
        return _("Shutdown requested; the guest powers off when its OS is done.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def destroy_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.destroy(*_uri_uuid(op))
        return _("Forced off.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def reboot_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.reboot(*_uri_uuid(op))
        return _("Reboot requested.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def suspend_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.suspend(*_uri_uuid(op))
        return _("Suspended.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def resume_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.resume(*_uri_uuid(op))
        return _("Resumed.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def set_autostart_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        enabled = bool(op.params.get("enabled"))
        hypervisor.set_autostart(*_uri_uuid(op), enabled)
        return _("Starts with its host.") if enabled else _("No longer starts with its host.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def undefine_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        uri, uuid = _uri_uuid(op)
        # Keep the configuration in the record: it is all that is left of it.
        op.xml_before = hypervisor.xml_of(uri, uuid, inactive=True)
        hypervisor.undefine(
            uri,
            uuid,
            managed_save=bool(op.params.get("remove_managed_save")),
            snapshots_metadata=bool(op.params.get("remove_snapshots_metadata")),
        )
        return _("Undefined.")

    run_operation(operation_id, work)
