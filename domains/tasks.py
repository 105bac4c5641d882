"""One Celery task per operation kind.

Each task claims its Operation (queued → running, exactly one row, so a redelivered task
does no harm), holds the domain's Redis lock, calls `hypervisor`, records the result and
refreshes the inventory row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from functools import lru_cache

import redis
from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from . import domxml, hypervisor, inventory, services
from .hypervisor import HypervisorError
from .models import Operation, OperationKind, OperationStatus, SavedImage

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


class Monitor(threading.Thread):
    """Runs beside an operation: beats its heartbeat, copies libvirt's job statistics
    into it, and aborts the libvirt job once a user asks to cancel."""

    def __init__(self, op: Operation, watch_job: bool):
        super().__init__(name=f"monitor-{op.pk}", daemon=True)
        self.op = op
        self.watch_job = watch_job
        self.interval = 0.5 if watch_job else settings.VMPANEL_HEARTBEAT_SECONDS
        self.stopping = threading.Event()
        self.aborted = False
        self.samples = 0
        self.started = time.monotonic()
        self.dest_ready_at: float | None = None

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                try:
                    self.tick()
                except Exception:  # a missed beat is no reason to stop beating
                    log.exception("operation %s: monitor tick failed", self.op.pk)
        finally:
            connection.close()  # this thread's own database connection

    def tick(self) -> None:
        op = self.op
        fields: dict = {"heartbeat_at": timezone.now()}
        job = None
        if self.watch_job and self.may_query():
            try:
                job = hypervisor.job_progress(op.host.uri, str(op.domain_uuid))
            except HypervisorError:
                job = None
            if job is not None:
                self.samples += 1
                fields["progress"] = job.percent
                fields["progress_detail"] = {**asdict(job), "samples": self.samples}
        Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(**fields)
        if (
            not self.aborted
            and Operation.objects.filter(pk=op.pk, cancel_requested=True).exists()
            and self.abort_allowed(job)
        ):
            log.info("operation %s: cancel requested; aborting libvirt's job", op.pk)
            # In a thread of its own: should libvirt make the call wait, the heartbeat and
            # the progress go on meanwhile.
            self.aborted = True
            threading.Thread(target=self.abort, name=f"abort-{op.pk}", daemon=True).start()

    def abort(self) -> None:
        op = self.op
        try:
            hypervisor.abort_job(op.host.uri, str(op.domain_uuid))
            log.info("operation %s: libvirt job aborted on request", op.pk)
        except HypervisorError as exc:
            # No job yet, or one that cannot be aborted: the next tick tries again.
            log.info("operation %s: abort not possible yet: %s", op.pk, exc.message)
            self.aborted = False

    def may_query(self) -> bool:
        """Whether to ask libvirt for job statistics now.

        In the first moments of a peer-to-peer migration, while the destination is being
        prepared, a jobStats or abortJob call is not answered but queued behind the whole
        migration (measured here: libvirt 9.0). Ask only once that window has passed.
        """
        if self.op.kind != OperationKind.MIGRATE:
            return True
        return time.monotonic() - self.started >= MIGRATION_QUIET_SECONDS

    def abort_allowed(self, job) -> bool:
        """Whether libvirt takes an abort now.

        A migration cannot be aborted while the destination is still being prepared, and
        an abortJob sent then is not refused: it waits until the whole migration is over.
        So wait until data flows, or the destination has had its incoming domain a moment.
        """
        if self.op.kind != OperationKind.MIGRATE:
            return True
        if job is None:
            return False
        if job.data_total > 0:
            return True
        try:
            arrived = hypervisor.domain_exists(
                self.op.params["destination_uri"], str(self.op.domain_uuid)
            )
        except HypervisorError:
            return False
        if not arrived:
            return False
        if self.dest_ready_at is None:
            self.dest_ready_at = time.monotonic()
        return time.monotonic() - self.dest_ready_at >= 1.0

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


# Seconds at the start of a migration when libvirt must not be asked about its job.
MIGRATION_QUIET_SECONDS = 2.0

# Operations whose libvirt job reports progress and can be aborted.
LONG_KINDS = {
    OperationKind.SAVE,
    OperationKind.RESTORE,
    OperationKind.MANAGED_SAVE,
    OperationKind.MIGRATE,
}


def run_operation(operation_id: int, work: Callable[[Operation], str]) -> None:
    """Claim, lock, do `work(op)` (returns the success message), record, refresh."""
    close_old_connections()
    claimed = Operation.objects.filter(pk=operation_id, status=OperationStatus.QUEUED).update(
        status=OperationStatus.RUNNING, started_at=timezone.now()
    )
    if claimed != 1:
        log.info("operation %s already claimed; redelivery ignored", operation_id)
        return
    op = Operation.objects.select_related("host", "domain", "user", "target_host").get(
        pk=operation_id
    )
    log.info(
        "operation %s %s running user=%s host=%s domain=%s request=%s",
        op.pk, op.kind, op.user, op.host.name, op.domain_uuid, op.request_id,
    )  # fmt: skip
    lock = _redis().lock(
        _lock_key(op.host_id, op.domain_uuid),
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
    long_job = op.kind in LONG_KINDS
    monitor = Monitor(op, watch_job=long_job)
    monitor.start()
    try:
        # A long job is never tried twice: it may have done half its work.
        for attempt in range(1 if long_job else RETRIES + 1):
            try:
                message = work(op)
                if Operation.objects.filter(pk=op.pk, cancel_requested=True).exists():
                    message = _("The cancel came too late: it had finished.") + " " + message
                # The inventory first, so whoever sees "succeeded" sees the new state.
                _refresh_inventory(op)
                _finish(op, OperationStatus.SUCCEEDED, message)
                break
            except HypervisorError as exc:
                if exc.retryable and attempt < RETRIES and not long_job:
                    hypervisor.forget(op.host.uri)
                    time.sleep(RETRY_DELAY_SECONDS)
                    continue
                if Operation.objects.filter(pk=op.pk, cancel_requested=True).exists():
                    _finish(
                        op,
                        OperationStatus.CANCELLED,
                        _("Cancelled; libvirt stopped the job and the domain stays where it was."),
                        exc,
                    )
                else:
                    _finish(op, OperationStatus.FAILED, exc.hint, exc)
                break
    except Exception as exc:  # record the unexpected too, then let Celery log it
        _finish(op, OperationStatus.FAILED, _("Unexpected error: %(error)s") % {"error": exc})
        raise
    finally:
        monitor.stop()
        lock.release()
    if op.status != OperationStatus.SUCCEEDED:
        _refresh_inventory(op)  # a failure may have changed the state too


def _refresh_inventory(op: Operation) -> None:
    try:
        inventory.refresh_domain(op.host, op.domain_uuid)
    except HypervisorError as exc:
        log.warning("operation %s: inventory not refreshed: %s", op.pk, exc)


def _lock_key(host_id: int, uuid) -> str:
    return f"vmpanel:domain:{host_id}:{uuid}"


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


@shared_task(acks_late=True)
def save_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        uri, uuid = _uri_uuid(op)
        path = op.params["path"]
        hypervisor.save(uri, uuid, path)
        image = hypervisor.saved_image(uri, path)
        SavedImage.objects.update_or_create(
            host=op.host,
            path=path,
            defaults={
                "domain": op.domain,
                "domain_uuid": image.uuid or uuid,
                "domain_name": image.name or op.domain_name,
                "memory_kib": image.memory_kib,
                "team": op.team,
                "operation": op,
            },
        )
        return _("Saved to %(path)s.") % {"path": path}

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def restore_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.restore(op.host.uri, op.params["path"])
        return _("Restored from %(path)s.") % {"path": op.params["path"]}

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def managed_save_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.managed_save(*_uri_uuid(op))
        return _("Saved; the next start resumes where it stopped.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def managed_save_remove_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        hypervisor.managed_save_remove(*_uri_uuid(op))
        return _("Managed-save image removed; the next start boots afresh.")

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def migrate_domain_task(operation_id: int) -> None:
    def work(op: Operation) -> str:
        uri, uuid = _uri_uuid(op)
        p = op.params
        flags = frozenset(p["flags"])
        dest_uri = p["destination_uri"]
        created: list[str] = []
        if flags & {"NON_SHARED_DISK", "NON_SHARED_INC"}:
            # Copy-storage needs the destination images in place, of the same size.
            for disk in hypervisor.domain_disks(uri, uuid):
                if not hypervisor.volume_exists(dest_uri, disk.source):
                    hypervisor.create_volume(
                        dest_uri, disk.source, disk.capacity_bytes, disk.format
                    )
                    created.append(disk.source)
        started = time.monotonic()
        note = ""
        try:
            hypervisor.migrate(
                uri,
                uuid,
                hypervisor.MigrationRequest(
                    flags=flags,
                    dest_uri=dest_uri,
                    dest_p2p_uri=p["p2p_uri"],
                    bandwidth_mib_s=int(p.get("bandwidth_mib_s") or 0),
                    new_name=p.get("new_name", ""),
                    migrate_uri=p.get("migrate_uri", ""),
                    listen_address=p.get("listen_address", ""),
                ),
            )
        except HypervisorError as exc:
            if _runs_on(dest_uri, uuid) and not _runs_on(uri, uuid):
                # libvirt complained at the very end, yet the guest moved: say both.
                note = _("libvirt reported “%(error)s”, but the domain runs on the destination.")
                note = note % {"error": exc.message}
            else:
                _remove_volumes(op, dest_uri, created)
                raise
        seconds = time.monotonic() - started
        Operation.objects.filter(pk=op.pk).update(
            params={**p, "seconds": round(seconds, 2), "created_volumes": created}
        )
        if op.target_host is not None:
            inventory.move_domain(op.domain, op.target_host)
        message = _("Migrated from %(source)s to %(dest)s in %(seconds).1f s.") % {
            "source": op.host.name,
            "dest": op.target_host.name if op.target_host else dest_uri,
            "seconds": seconds,
        }
        return f"{message} {note}".strip()

    run_operation(operation_id, work)


_RESIZE_WORDS = {
    "vcpus_max": gettext_noop("maximum vCPUs %(value)s"),
    "vcpus": gettext_noop("vCPUs %(value)s"),
    "memory_max": gettext_noop("maximum memory %(value)s MiB"),
    "memory": gettext_noop("memory %(value)s MiB"),
}


@shared_task(acks_late=True)
def resize_domain_task(operation_id: int) -> None:
    """Maximums (saved configuration) and counts (live and/or saved), in a safe order."""
    first: dict[str, str] = {}

    def work(op: Operation) -> str:
        uri, uuid = _uri_uuid(op)
        p = op.params
        req = services.ResizeRequest(
            vcpus=p.get("vcpus"),
            vcpus_max=p.get("vcpus_max"),
            memory_mib=p.get("memory_mib"),
            memory_max_mib=p.get("memory_max_mib"),
            live=bool(p.get("live")),
            config=bool(p.get("config")),
        )
        # Read once: a retry after a broken connection must not take a half-done resize
        # for the state before.
        op.xml_before = first.setdefault("xml", hypervisor.xml_of(uri, uuid, inactive=True))
        # Planned against the state now: a step already done (by a first attempt) drops out.
        steps = services.resize_plan(hypervisor.resize_limits(uri, uuid), req)
        said = []
        for step in steps:
            if step.what == "vcpus_max":
                hypervisor.set_max_vcpus(uri, uuid, step.value)
            elif step.what == "vcpus":
                hypervisor.set_vcpus(uri, uuid, step.value, live=step.live, config=step.config)
            elif step.what == "memory_max":
                hypervisor.set_max_memory(uri, uuid, step.value)
            else:
                hypervisor.set_memory(uri, uuid, step.value, live=step.live, config=step.config)
            value = step.value // 1024 if step.what.startswith("memory") else step.value
            words = _(_RESIZE_WORDS[step.what]) % {"value": value}
            if step.what.endswith("_max"):
                where = _("from the next boot")
            elif step.live and step.config:
                where = _("live and in the saved configuration")
            elif step.live:
                where = _("live")
            else:
                where = _("in the saved configuration")
            said.append(f"{words} ({where})")
        op.xml_after = hypervisor.xml_of(uri, uuid, inactive=True)
        if not said:
            return _("Nothing left to change: the domain has these values already.")
        return _("Resized: %(steps)s.") % {"steps": "; ".join(said)}

    run_operation(operation_id, work)


@shared_task(acks_late=True)
def edit_xml_task(operation_id: int) -> None:
    """Redefine the domain from the edited XML, libvirt validating it against its schema."""
    submitted: dict[str, str] = {}

    def work(op: Operation) -> str:
        uri, uuid = _uri_uuid(op)
        # The XML to define waits in xml_after; read it once, since a failed attempt
        # replaces it there with a copy without passwords.
        new_xml = submitted.setdefault("xml", op.xml_after)
        op.xml_before = hypervisor.xml_of(uri, uuid, inactive=True)
        try:
            hypervisor.define_xml(uri, new_xml, validate=True)
        except HypervisorError:
            op.xml_after = domxml.redact_secrets(new_xml)
            raise
        op.xml_after = hypervisor.xml_of(uri, uuid, inactive=True)
        op.params = {**op.params, "diff": domxml.xml_diff(op.xml_before, op.xml_after)}
        Operation.objects.filter(pk=op.pk).update(params=op.params)
        if hypervisor.domain_facts(uri, uuid).id is not None:
            return _("Saved configuration redefined; the running domain takes it at its next boot.")
        return _("Saved configuration redefined.")

    run_operation(operation_id, work)


def _runs_on(uri: str, uuid: str) -> bool:
    try:
        facts = hypervisor.domain_facts(uri, uuid)
    except HypervisorError:
        return False
    return facts.id is not None


def _remove_volumes(op: Operation, uri: str, paths: list[str]) -> None:
    """Leave nothing half-made on the destination of a failed copy-storage migration."""
    for path in paths:
        try:
            hypervisor.delete_volume(uri, path)
        except HypervisorError as exc:
            log.warning("operation %s: %s not removed: %s", op.pk, path, exc)


# --- operations orphaned by a dead worker ------------------------------------------


def recover_orphaned_operations() -> list[int]:
    """Mark failed the running operations whose worker stopped beating; returns their ids.

    The domain's real state is read back from libvirt and said in the message. An
    operation whose libvirt job still runs (libvirtd carries on without the worker) is
    left for a later pass.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.VMPANEL_STALE_SECONDS)
    stale = Operation.objects.filter(status=OperationStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    recovered = []
    for op in stale.select_related("host", "domain"):
        uri, uuid = _uri_uuid(op)
        try:
            if hypervisor.job_progress(uri, uuid) is not None:
                continue  # libvirt is still at it; look again next time
        except HypervisorError:
            pass
        try:
            row = inventory.refresh_domain(op.host, op.domain_uuid)
            if row is None:
                now = _("gone from %(host)s") % {"host": op.host.name}
            else:
                now = f"{row.get_state_display()} ({row.state_reason}) on {op.host.name}"
        except HypervisorError as exc:
            now = _("unknown: %(host)s does not answer (%(error)s)") % {
                "host": op.host.name,
                "error": exc.message,
            }
        message = _(
            "The worker running this operation stopped before it finished (it was killed "
            "or crashed). libvirt says the domain is now %(state)s."
        ) % {"state": now}
        done = Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
            status=OperationStatus.FAILED, message=message, finished_at=timezone.now()
        )
        if done:
            # Its lock died with it, but may not have expired yet.
            _redis().delete(_lock_key(op.host_id, op.domain_uuid))
            log.warning("operation %s %s marked failed: %s", op.pk, op.kind, message)
            recovered.append(op.pk)
    return recovered


@shared_task
def recover_orphaned_operations_task() -> list[int]:
    close_old_connections()
    return recover_orphaned_operations()


@worker_ready.connect
def _recover_after_start(**_kwargs) -> None:
    # Whatever a killed predecessor left running shows as stale once its heartbeat is
    # older than the limit: look then.
    recover_orphaned_operations_task.apply_async(countdown=settings.VMPANEL_STALE_SECONDS + 1)
