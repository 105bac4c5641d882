"""Running an operation in a worker: the claim, the lock, the heartbeat, the record.

Every operation task (`domains.tasks`, `provisioning.tasks`) hands its work to
`run_operation`, which claims the Operation (queued → running, exactly one row, so a
redelivered task does no harm), holds the domain's Redis lock, beats the heartbeat (and,
for long jobs, copies libvirt's job statistics and aborts on cancel), records the result
and refreshes the inventory row. `recover_orphaned_operations` settles what a dead worker
left running. (NetBox's JobRunner plays this part there.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from functools import lru_cache
from typing import TypeVar

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from . import hypervisor, inventory, language, outcomes
from .hypervisor import HypervisorError
from .kinds import KINDS, always_allowed, wrong_state_message
from .models import (
    AuditEvent,
    Domain,
    Operation,
    OperationKind,
    OperationStatus,
    SavedImage,
    actions_on,
)
from .services.common import send_now, task_queue

log = logging.getLogger(__name__)

T = TypeVar("T")


class OutcomeUnknown(Exception):
    """Raised by work that ended without libvirt saying how it went (a migration whose
    source host stopped answering): the operation waits as CHECKING, the domain busy, until
    `settle_checking_operations` finds out."""

    def __init__(self, message: str, error: HypervisorError | None = None):
        super().__init__(message)
        self.message = message
        self.error = error


# Transient libvirt failures are tried again this many times, a moment apart.
RETRIES = 2
RETRY_DELAY_SECONDS = 1.0


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # Bounded: a Redis that accepts but never answers fails a lock's command within seconds
    # (the operation then says so) instead of holding the task for good.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


# Waits between tries of a database call whose connection the database dropped (seconds):
# the first at once, on a new connection; slower while the database is restarting.
RECONNECT_BACKOFF = (0.0, 0.5, 1.0, 2.0, 4.0)


def reconnecting(fn: Callable[[], T]) -> T:
    """`fn()`, done again on a new connection while the database has dropped this thread's
    (a restart, a failover, an administrator's pg_terminate_backend).

    A worker's threads keep their connection for a whole operation (Celery's own fix-up
    closes it only between tasks): one dropped meanwhile failed every later query, the
    result was never recorded, and the operation stayed "running" until the recovery pass
    took its worker for dead and said so. `fn` must be safe to do twice (a read, or a write
    of the same values). A busy database or a refused statement is not retried here.
    """
    for delay in (*RECONNECT_BACKOFF, None):
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if delay is None or connection.in_atomic_block or connection.is_usable():
                raise
            log.warning("database connection lost (%s); trying again on a new one", exc)
            connection.close()
            time.sleep(delay)
    raise AssertionError("unreachable")


def cancel_requested(op: Operation) -> bool:
    """Whether someone asked to cancel `op` (asked again if the connection dropped)."""
    return reconnecting(Operation.objects.filter(pk=op.pk, cancel_requested=True).exists)


def _finish(op: Operation, status: str, message: str = "", error=None) -> None:
    op.status = status
    op.message = message
    op.finished_at = timezone.now()
    if error is not None:
        op.error = error.message
        op.error_code = error.code
    op.progress = 100 if status == OperationStatus.SUCCEEDED else op.progress
    fields = [
        "status", "message", "finished_at", "error", "error_code", "progress",
        "xml_before", "xml_after",
    ]  # fmt: skip
    reconnecting(lambda: op.save(update_fields=fields))
    log.info(
        "operation %s %s %s user=%s host=%s domain=%s request=%s %s",
        op.pk, op.kind, status, op.user, op.host.name, op.domain_uuid,
        op.request_id, op.error,
    )  # fmt: skip


def _check_later(op: Operation, message: str, error: HypervisorError | None) -> None:
    op.status = OperationStatus.CHECKING
    op.message = message
    if error is not None:
        op.error, op.error_code = error.message, error.code
    fields = ["status", "message", "error", "error_code", "xml_before", "xml_after"]
    reconnecting(lambda: op.save(update_fields=fields))
    log.warning("operation %s %s outcome unknown: %s", op.pk, op.kind, message)


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
                    # This thread never gets a new connection otherwise: one the database
                    # dropped stopped the heartbeat for the rest of the operation.
                    connection.close()
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
        if not self.aborted and cancel_requested(op) and self.abort_allowed(job):
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
        if self.op.kind == OperationKind.CLONE:
            return False  # no libvirt job to abort: the clone looks for the cancel itself
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


def run_operation(
    operation_id: int, work: Callable[[Operation], str], payload: dict | None, task: str
) -> None:
    """Claim, lock, do `work(op)` (returns the success message), record, refresh.

    `payload` is what came with the task and is not on record; `work` finds it in
    `op.payload`. `task` is the Celery task's name: an operation is claimed only by the
    task of its kind, so a stray message (another database's, say) does nothing. The
    messages are written in the language of whoever asked (domains.language).
    """
    close_old_connections()
    try:
        asker = Operation.objects.filter(pk=operation_id).values_list("user_id", flat=True)
        words = language.for_user(asker.first())
    except OperationalError:  # a busy database: the claim below tries again and says so
        words = language.for_user(None)
    with words:
        _run_operation(operation_id, work, payload, task)


def _run_operation(
    operation_id: int, work: Callable[[Operation], str], payload: dict | None, task: str
) -> None:
    kinds = [kind for kind, spec in KINDS.items() if spec.task == task]
    claimed = _claim(operation_id, kinds)
    if claimed != 1:
        log.info("operation %s not queued for %s; message ignored", operation_id, task)
        return
    op = Operation.objects.select_related("host", "domain", "user", "target_host").get(
        pk=operation_id
    )
    op.payload = payload or {}
    if (refusal := _no_longer_allowed(op)) is not None:
        _finish(op, OperationStatus.REFUSED, refusal)
        return
    log.info(
        "operation %s %s running user=%s host=%s domain=%s request=%s",
        op.pk, op.kind, op.user, op.host.name, op.domain_uuid, op.request_id,
    )  # fmt: skip
    try:
        lock = _domain_lock(op)
    except redis.RedisError as exc:
        # Claimed, nothing done yet: said so, where it stayed "running" until the recovery
        # pass called its worker dead (killed or crashed, it said: untrue).
        log.warning("operation %s: Redis does not answer (%s); not started", op.pk, exc)
        _finish(
            op,
            OperationStatus.FAILED,
            _("The task queue does not answer; nothing was done. Try again later."),
        )
        return
    if lock is None:
        _finish(
            op,
            OperationStatus.FAILED,
            _("Another operation holds this VM; try again when it has finished."),
        )
        return
    long_job = KINDS[op.kind].long
    monitor = Monitor(op, watch_job=long_job)
    monitor.start()
    try:
        # A long job is never tried twice: it may have done half its work.
        for attempt in range(1 if long_job else RETRIES + 1):
            try:
                message = work(op)
                if cancel_requested(op):
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
                # A failure may have changed the state too: the inventory first, as on
                # success, and the refusal below reads the state from it.
                _refresh_inventory(op)
                if cancel_requested(op):
                    _finish(
                        op,
                        OperationStatus.CANCELLED,
                        _("Cancelled; libvirt stopped the job and the VM stays where it was."),
                        exc,
                    )
                elif (fresh := _fresh_row_refusing(op)) is not None:
                    # The row the service checked was stale: libvirt's refusal is one for
                    # state, said in the panel's words with the state as it is now.
                    _finish(op, OperationStatus.REFUSED, fresh, exc)
                else:
                    _finish(op, OperationStatus.FAILED, exc.hint, exc)
                break
            except OutcomeUnknown as exc:
                _refresh_inventory(op)
                _check_later(op, exc.message, exc.error)
                break
    except Exception as exc:  # record the unexpected too, then let Celery log it
        _finish(op, OperationStatus.FAILED, _("Unexpected error: %(error)s") % {"error": exc})
        raise
    finally:
        monitor.stop()
        _release(op, lock)


def _domain_lock(op: Operation):
    """The VM's Redis lock, taken for `op`; None while another operation holds it.

    The lock's value names its operation. One whose operation has finished was left by a
    release Redis never had (it did not answer as that operation ended): it is broken, where
    it kept every later operation on the VM out ("another operation holds this VM") for up
    to VMPANEL_DOMAIN_LOCK_SECONDS. Raises RedisError when Redis does not answer.
    """
    key = lock_key(op.host_id, op.domain_uuid)
    for _attempt in range(2):
        lock = _redis().lock(key, timeout=settings.VMPANEL_DOMAIN_LOCK_SECONDS, blocking_timeout=5)
        if lock.acquire(token=f"{op.pk}:{uuidlib.uuid4().hex}"):
            return lock
        if not _break_if_left(key):
            return None
    return None


# Delete the key only if it still holds the value read (nobody took it meanwhile).
_BREAK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


def _break_if_left(key: str) -> bool:
    """Break the lock at `key` if its operation has finished; whether it is free now."""
    holder = _redis().get(key)
    if holder is None:
        return True
    pk, sep, _rest = holder.decode().partition(":")
    if not (sep and pk.isdigit()):
        return False  # not an operation's (a worker of an older version): wait for it
    if not Operation.objects.filter(pk=int(pk), finished_at__isnull=False).exists():
        return False  # its operation still runs (or waits to be checked)
    log.warning("lock %s of finished operation %s was left behind; broken", key, pk)
    _redis().eval(_BREAK, 1, key, holder)
    return True


def _release(op: Operation, lock) -> None:
    try:
        lock.release()
    except redis.RedisError as exc:
        # The outcome is on record already. Left behind, the lock is broken by the next
        # operation on this VM (`_domain_lock`).
        log.warning("operation %s: the VM's lock was not released: %s", op.pk, exc)


def _no_longer_allowed(op: Operation) -> str | None:
    """Why `op` may not start now that a worker has taken it, or None.

    The role was checked when it was asked for, but it may have waited in the queue since:
    the one who asked may have left the team (or lost the role), or the VM been given to
    another team. What runs is decided when it starts, as if it were asked for now; an
    operation that has started runs to its end. (A new VM has no team role to lose: its
    creation is not checked again here.)
    """
    if op.user is None or op.domain is None:
        return None
    if KINDS[op.kind].role in actions_on(op.user, op.domain):
        return None
    return _(
        "%(user)s may no longer do this to %(name)s (their role, or the VM's team, changed "
        "after they asked), so it was not started; nothing was done."
    ) % {"user": op.user.username, "name": op.domain.name}


# Waits between tries of a claim that met a locked database (seconds).
CLAIM_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)


def _claim(operation_id: int, kinds: list[str]) -> int:
    """Queued → running, one row or none; tried again with back-off while the database is
    locked, so that a busy moment does not kill the task and leave the operation queued.
    After the last try, a failure on record if the database takes it (otherwise the stale
    queued operation is settled later), and the error raised."""
    for delay in (*CLAIM_BACKOFF, None):
        try:
            return Operation.objects.filter(
                pk=operation_id, status=OperationStatus.QUEUED, kind__in=kinds
            ).update(status=OperationStatus.RUNNING, started_at=timezone.now())
        except OperationalError as exc:
            if delay is None:
                log.error("operation %s: database busy, not claimed: %s", operation_id, exc)
                _fail_unclaimed(operation_id, kinds)
                raise
            log.warning("operation %s: database busy (%s); trying again", operation_id, exc)
            connection.close()  # a fresh connection for the next try
            time.sleep(delay)
    raise AssertionError("unreachable")


def _fail_unclaimed(operation_id: int, kinds: list[str]) -> None:
    try:
        Operation.objects.filter(
            pk=operation_id, status=OperationStatus.QUEUED, kind__in=kinds
        ).update(
            status=OperationStatus.FAILED,
            message=_(
                "The panel's database was too busy to start this; nothing was done. Try again."
            ),
            finished_at=timezone.now(),
        )
    except OperationalError:
        pass  # still busy: it stays queued, and settle_stale_queued fails it later


def _fresh_row_refusing(op: Operation) -> str | None:
    """After libvirt refused `op` and the inventory was refreshed: the refusal for state in
    plain words if the domain is now in a state the kind does not allow (the service saw an
    older one); else None."""
    spec = KINDS[op.kind]
    if op.domain_id is None or spec.allowed is always_allowed:
        return None
    row = Domain.objects.filter(pk=op.domain_id, gone_at__isnull=True).first()
    if row is None or spec.allowed(row):
        return None
    return wrong_state_message(spec, row)


def _refresh_inventory(op: Operation) -> None:
    try:
        reconnecting(lambda: inventory.refresh_domain(op.host, op.domain_uuid))
    except HypervisorError as exc:
        log.warning("operation %s: inventory not refreshed: %s", op.pk, exc)


def lock_key(host_id: int, uuid) -> str:
    return f"vmpanel:domain:{host_id}:{uuid}"


def uri_uuid(op: Operation) -> tuple[str, str]:
    return op.host.uri, str(op.domain_uuid)


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
    for op in stale.select_related("host", "domain", "target_host"):
        with language.for_operation(op):
            uri, uuid = uri_uuid(op)
            try:
                if hypervisor.job_progress(uri, uuid) is not None:
                    continue  # libvirt is still at it; look again next time
            except HypervisorError:
                pass
            if op.kind == OperationKind.MIGRATE:
                # The guest may have moved without the worker: judged from both hosts.
                reported = _("the worker driving the migration stopped before libvirt answered")
                if Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
                    status=OperationStatus.CHECKING, params={**op.params, "reported": reported}
                ):
                    _redis().delete(lock_key(op.host_id, op.domain_uuid))
                    op.params = {**op.params, "reported": reported}
                    outcomes.conclude(op, reported)
                    recovered.append(op.pk)
                continue
            try:
                row = inventory.refresh_domain(op.host, op.domain_uuid)
                if row is None:
                    now = _("gone from %(host)s") % {"host": op.host.name}
                else:
                    now = _("%(state)s (%(reason)s) on %(host)s") % {
                        "state": row.get_state_display(),
                        "reason": row.state_reason,
                        "host": op.host.name,
                    }
            except HypervisorError as exc:
                now = _("unknown: %(host)s does not answer (%(error)s)") % {
                    "host": op.host.name,
                    "error": exc.message,
                }
            message = _(
                "The worker running this operation stopped before it finished (it was killed "
                "or crashed). libvirt says the VM is now %(state)s."
            ) % {"state": now}
            done = Operation.objects.filter(pk=op.pk, status=OperationStatus.RUNNING).update(
                status=OperationStatus.FAILED, message=message, finished_at=timezone.now()
            )
            if done:
                # Its lock died with it, but may not have expired yet.
                _redis().delete(lock_key(op.host_id, op.domain_uuid))
                log.warning("operation %s %s marked failed: %s", op.pk, op.kind, message)
                recovered.append(op.pk)
    return recovered


# --- operations no worker ever took -----------------------------------------------


def settle_stale_queued() -> list[int]:
    """Queued operations no worker took within VMPANEL_QUEUED_STALE_SECONDS: sent once more
    (their message may have been lost: a broker restarted without its data), and failed if
    still untaken after another such period, saying the domain's state as libvirt has it.
    Nothing ran for them, so nothing needs undoing. Returns the ids sent again or failed.

    A redelivered message is harmless (the claim takes an operation once), so sending again
    what was merely waiting behind long jobs costs nothing.
    """
    bound = settings.VMPANEL_QUEUED_STALE_SECONDS
    now = timezone.now()
    settled = []
    stale = Operation.objects.filter(
        status=OperationStatus.QUEUED, created_at__lt=now - timedelta(seconds=bound)
    ).select_related("host")
    for op in stale:
        with language.for_operation(op):
            sent_again = op.params.get("sent_again_at")
            if sent_again is None:
                params = {**op.params, "sent_again_at": now.timestamp()}
                if Operation.objects.filter(pk=op.pk, status=OperationStatus.QUEUED).update(
                    params=params
                ):
                    log.warning("operation %s queued for %s s untaken: sent again", op.pk, bound)
                    # Without its payload (an edit's XML is gone with the message): that task
                    # then fails saying so.
                    send_now(op)
                    settled.append(op.pk)
                continue
            if now.timestamp() - sent_again < bound:
                continue
            message = _(
                "No worker took this operation within %(s)s s (the task queue lost it, or no "
                "worker runs); nothing was done. %(state)s"
            ) % {"s": bound, "state": _state_words(op)}
            if queue := task_queue(op):
                message += " " + _(
                    "Slow operations of %(host)s are run only by the workers of queue "
                    "%(queue)s: is one running?"
                ) % {"host": op.host.name, "queue": queue}
            if Operation.objects.filter(pk=op.pk, status=OperationStatus.QUEUED).update(
                status=OperationStatus.FAILED, message=message, finished_at=timezone.now()
            ):
                log.warning("operation %s %s failed untaken: %s", op.pk, op.kind, message)
                settled.append(op.pk)
    return settled


def _state_words(op: Operation) -> str:
    if op.domain_uuid is None or op.host is None:
        return ""
    try:
        row = inventory.refresh_domain(op.host, op.domain_uuid)
    except HypervisorError as exc:
        return _("%(host)s does not answer now (%(error)s).") % {
            "host": op.host.name,
            "error": exc.message,
        }
    if row is None:
        return _("libvirt no longer knows the VM on %(host)s.") % {"host": op.host.name}
    return _("libvirt says the VM is %(state)s on %(host)s.") % {
        "state": row.get_state_display(),
        "host": op.host.name,
    }


# --- images a dead worker's save left behind ----------------------------------------

# How long after a save ended without success its image is still looked for: libvirt may
# finish writing it after the worker died.
ADOPT_WITHIN = timedelta(hours=1)


def record_saved_image(op: Operation, image: hypervisor.SavedImageFacts) -> SavedImage:
    """The panel's record of the image `op` saved (read back from libvirt)."""
    row, _created = SavedImage.objects.update_or_create(
        host=op.host,
        path=image.path,
        defaults={
            "domain": op.domain,
            "domain_uuid": image.uuid or op.domain_uuid,
            "domain_name": image.name or op.domain_name,
            "memory_kib": image.memory_kib,
            "team": op.team,
            "operation": op,
        },
    )
    return row


def adopt_saved_images() -> list[int]:
    """Images that saves which ended without success (a worker killed mid-save) left
    complete on their host: libvirt reads them (saveImageGetXMLDesc) and they hold the
    domain the save was for, so they are recorded, restorable, with an audit note. Returns
    the ids of the operations whose image was adopted."""
    ended = Operation.objects.filter(
        kind=OperationKind.SAVE,
        status__in=(OperationStatus.FAILED, OperationStatus.CANCELLED),
        finished_at__gte=timezone.now() - ADOPT_WITHIN,
        host__enabled=True,
        saved_images__isnull=True,
    ).select_related("host", "domain", "team")
    adopted = []
    for op in ended:
        path = op.params.get("path")
        if not path or SavedImage.objects.filter(host=op.host, path=path).exists():
            continue
        try:
            image = hypervisor.saved_image(op.host.uri, path)
        except HypervisorError:
            continue  # not there, or not (yet) a complete image
        if image.uuid and str(image.uuid) != str(op.domain_uuid):
            continue  # someone else's image at that path: not ours to claim
        row = record_saved_image(op, image)
        AuditEvent.objects.create(
            kind="image_adopted",
            user=None,
            team=op.team,
            summary=f"{path} of {op.domain_name}, left by operation #{op.pk}",
            detail={"operation": op.pk, "host": op.host.name, "path": path},
        )
        log.warning("operation %s: image %s adopted (%s)", op.pk, path, row.pk)
        adopted.append(op.pk)
    return adopted
