"""One Celery task per operation kind (the kind's entry in `kinds.KINDS` names it).

A task is its work: `@operation_task` turns `work(op) -> success message` into the Celery
task that claims, locks, monitors and records through `runner.run_operation`. The work
calls `hypervisor` and returns plain words; a `HypervisorError` it raises becomes the
operation's failure (retried first where libvirt says a retry can help, never for long
jobs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.db import close_old_connections
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from . import domxml, hypervisor, outcomes
from .hypervisor import HypervisorError
from .liveness import mark_worker_alive
from .models import Host, Operation, OperationKind
from .rules import MigrationOutcome, ResizeRequest, resize_plan
from .runner import (
    OutcomeUnknown,
    adopt_saved_images,
    record_saved_image,
    recover_orphaned_operations,
    run_operation,
    settle_stale_queued,
    uri_uuid,
)

log = logging.getLogger(__name__)


def operation_task(work: Callable[[Operation], str]):
    """Register `work` as the Celery task named after it (module.function), running
    through `run_operation` (claim, lock, heartbeat, record, inventory refresh)."""

    name = f"{work.__module__}.{work.__name__}"

    def task(operation_id: int, **payload) -> None:
        run_operation(operation_id, work, payload, name)

    task.__name__ = work.__name__
    task.__qualname__ = work.__qualname__
    task.__module__ = work.__module__
    task.__doc__ = work.__doc__
    return shared_task(name=name, acks_late=True)(task)


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked worker must not share the parent's libvirt sockets.
    hypervisor.forget_all()


@operation_task
def start_domain_task(op: Operation) -> str:
    hypervisor.start_maybe_paused(*uri_uuid(op), paused=bool(op.params.get("paused")))
    return _("Started.")


@operation_task
def shutdown_domain_task(op: Operation) -> str:
    hypervisor.shutdown(*uri_uuid(op))
    return _("Shutdown requested; the guest powers off when its OS is done.")


@operation_task
def destroy_domain_task(op: Operation) -> str:
    hypervisor.destroy(*uri_uuid(op))
    return _("Forced off.")


@operation_task
def reboot_domain_task(op: Operation) -> str:
    hypervisor.reboot(*uri_uuid(op))
    return _("Reboot requested.")


@operation_task
def reset_domain_task(op: Operation) -> str:
    hypervisor.reset(*uri_uuid(op))
    return _("Reset.")


@operation_task
def suspend_domain_task(op: Operation) -> str:
    hypervisor.suspend(*uri_uuid(op))
    return _("Paused.")


@operation_task
def resume_domain_task(op: Operation) -> str:
    hypervisor.resume(*uri_uuid(op))
    return _("Resumed.")


@operation_task
def set_autostart_task(op: Operation) -> str:
    enabled = op.kind == OperationKind.AUTOSTART_ON
    hypervisor.set_autostart(*uri_uuid(op), enabled)
    return _("Starts with its host.") if enabled else _("No longer starts with its host.")


@operation_task
def undefine_domain_task(op: Operation) -> str:
    uri, uuid = uri_uuid(op)
    # Keep the configuration in the record: it is all that is left of it.
    op.xml_before = hypervisor.xml_of(uri, uuid, inactive=True)
    hypervisor.undefine(
        uri,
        uuid,
        managed_save=bool(op.params.get("remove_managed_save")),
        snapshots_metadata=bool(op.params.get("remove_snapshots_metadata")),
    )
    return _("Definition deleted.")


@operation_task
def save_domain_task(op: Operation) -> str:
    uri, uuid = uri_uuid(op)
    path = op.params["path"]
    hypervisor.save(uri, uuid, path)
    record_saved_image(op, hypervisor.saved_image(uri, path))
    return _("Saved to %(path)s.") % {"path": path}


@operation_task
def restore_domain_task(op: Operation) -> str:
    hypervisor.restore(op.host.uri, op.params["path"])
    return _("Restored from %(path)s.") % {"path": op.params["path"]}


@operation_task
def managed_save_task(op: Operation) -> str:
    hypervisor.managed_save(*uri_uuid(op))
    return _("Saved; the next start resumes where it stopped.")


@operation_task
def managed_save_remove_task(op: Operation) -> str:
    hypervisor.managed_save_remove(*uri_uuid(op))
    return _("Hibernation discarded; the next start boots afresh.")


def _display_moves(op: Operation) -> tuple[str, str] | None:
    """A display on the source host's console address listens on the destination's (or
    its 127.0.0.1) after the move: the source's address does not exist there."""
    source = op.host.console_address if op.host_id else ""
    if not source:
        return None
    dest = Host.objects.filter(name=op.params.get("destination") or "").first()
    return source, (dest.console_address if dest else "") or "127.0.0.1"


@operation_task
def migrate_domain_task(op: Operation) -> str:
    uri, uuid = uri_uuid(op)
    p = op.params
    flags = frozenset(p["flags"])
    dest_uri = p["destination_uri"]
    if flags & {"NON_SHARED_DISK", "NON_SHARED_INC"}:
        # Copy-storage needs the destination images in place, of the same size. Each one
        # made is on record at once, for whoever has to remove it should this fail.
        for disk in hypervisor.domain_disks(uri, uuid):
            if not hypervisor.volume_exists(dest_uri, disk.source):
                hypervisor.create_volume(dest_uri, disk.source, disk.capacity_bytes, disk.format)
                created = [*op.params.get("created_volumes", ()), disk.source]
                op.params = {**op.params, "created_volumes": created}
                Operation.objects.filter(pk=op.pk).update(params=op.params)
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
                display_moves=_display_moves(op),
            ),
        )
    except HypervisorError as exc:
        # libvirt's failure is not the whole truth either: the guest may have moved, may
        # be half-way, or the source may not answer. Both hosts are asked.
        outcome, words = outcomes.judge_migration(op)
        if outcome == MigrationOutcome.STAYED:
            kept = outcomes.undo_destination(op)
            if kept:
                exc.message = f"{exc.message} {kept}"
            raise
        if outcome == MigrationOutcome.UNKNOWN:
            raise OutcomeUnknown(outcomes.unknown_message(exc.message, words), exc) from exc
        note = _("libvirt reported “%(error)s”, but the VM runs on the destination.")
        note = note % {"error": exc.message}
    seconds = time.monotonic() - started
    op.params = {**op.params, "seconds": round(seconds, 2)}
    Operation.objects.filter(pk=op.pk).update(params=op.params)
    outcomes.follow_to_destination(op)
    message = _("Moved from %(source)s to %(dest)s in %(seconds).1f s.") % {
        "source": op.host.name,
        "dest": op.target_host.name if op.target_host else dest_uri,
        "seconds": seconds,
    }
    return f"{message} {note}".strip()


_RESIZE_WORDS = {
    "vcpus_max": gettext_noop("maximum vCPUs %(value)s"),
    "vcpus": gettext_noop("vCPUs %(value)s"),
    "memory_max": gettext_noop("maximum memory %(value)s MiB"),
    "memory": gettext_noop("memory %(value)s MiB"),
}


@operation_task
def resize_domain_task(op: Operation) -> str:
    """Maximums (saved configuration) and counts (live and/or saved), in a safe order."""
    uri, uuid = uri_uuid(op)
    p = op.params
    req = ResizeRequest(
        vcpus=p.get("vcpus"),
        vcpus_max=p.get("vcpus_max"),
        memory_mib=p.get("memory_mib"),
        memory_max_mib=p.get("memory_max_mib"),
        live=bool(p.get("live")),
        config=bool(p.get("config")),
    )
    # Read once (the same `op` goes through every attempt): a retry after a broken
    # connection must not take a half-done resize for the state before.
    op.xml_before = op.xml_before or hypervisor.xml_of(uri, uuid, inactive=True)
    # Planned against the state now: a step already done (by a first attempt) drops out.
    steps = resize_plan(hypervisor.resize_limits(uri, uuid), req)
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
        return _("Nothing left to change: the VM has these values already.")
    return _("Resized: %(steps)s.") % {"steps": "; ".join(said)}


@operation_task
def edit_xml_task(op: Operation) -> str:
    """Redefine the domain from the edited XML, libvirt validating it against its schema.

    The XML comes with the task (`op.payload`), passwords and all; the record keeps only
    copies without them, and libvirt's error text is scrubbed of them too.
    """
    uri, uuid = uri_uuid(op)
    new_xml = op.payload.get("xml")
    if not new_xml:
        raise HypervisorError(_("The edited XML did not reach the worker; save it again."))
    op.xml_before = hypervisor.xml_of(uri, uuid, inactive=True)
    try:
        hypervisor.define_xml(uri, new_xml, validate=True)
    except HypervisorError as exc:
        exc.message = domxml.scrub(exc.message, domxml.secret_values(new_xml))
        raise
    op.xml_after = hypervisor.xml_of(uri, uuid, inactive=True)
    op.params = {**op.params, "diff": domxml.xml_diff(op.xml_before, op.xml_after)}
    Operation.objects.filter(pk=op.pk).update(params=op.params)
    if hypervisor.domain_facts(uri, uuid).id is not None:
        return _("Saved configuration redefined; the running VM takes it at its next boot.")
    return _("Saved configuration redefined.")


@operation_task
def snapshot_create_task(op: Operation) -> str:
    p = op.params
    hypervisor.create_snapshot(
        *uri_uuid(op), p["name"], p.get("description", ""),
        disk_only=bool(p.get("disk_only")), quiesce=bool(p.get("quiesce")),
    )  # fmt: skip
    return _("Snapshot “%(name)s” taken.") % {"name": p["name"]}


@operation_task
def snapshot_revert_task(op: Operation) -> str:
    p = op.params
    try:
        hypervisor.revert_snapshot(
            *uri_uuid(op), p["name"], then=p.get("then", ""), force=bool(p.get("force"))
        )
    except HypervisorError as exc:
        if exc.code == hypervisor.SNAPSHOT_REVERT_RISKY and not p.get("force"):
            # libvirt deems this revert risky (a snapshot without memory to a running
            # domain, devices that changed since): it goes ahead only when forced.
            exc.message = _(
                "libvirt reverts to this snapshot only when forced (%(error)s). Forcing "
                "stops the running guest at once; revert again with “force” ticked if "
                "that is what you want."
            ) % {"error": exc.message}
        raise
    return _("Reverted to “%(name)s”.") % {"name": p["name"]}


@operation_task
def snapshot_delete_task(op: Operation) -> str:
    p = op.params
    try:
        hypervisor.delete_snapshot(*uri_uuid(op), p["name"], mode=p.get("mode", "one"))
    except HypervisorError as exc:
        if exc.code == hypervisor.NO_SUCH_SNAPSHOT:
            # Gone between the check and the work: someone else deleted it meanwhile.
            exc.message = _("Snapshot “%(name)s” no longer exists: someone deleted it.") % {
                "name": p["name"]
            }
        raise
    return {
        "with_children": _("Snapshot “%(name)s” and its children deleted."),
        "children_only": _("The children of snapshot “%(name)s” deleted; it stays."),
    }.get(p.get("mode"), _("Snapshot “%(name)s” deleted.")) % {"name": p["name"]}


@shared_task
def recover_orphaned_operations_task() -> list[int]:
    close_old_connections()
    return (
        recover_orphaned_operations()
        + settle_stale_queued()
        + adopt_saved_images()
        + outcomes.settle_checking_operations()
    )


# How often a worker says it is alive, and asks for the orphans and the stale queued
# operations to be settled (any worker may run that; running it twice does no harm).
KEEPER_SECONDS = 10


@worker_ready.connect
def _recover_after_start(**_kwargs) -> None:
    # Whatever a killed predecessor left running shows as stale once its heartbeat is
    # older than the limit: the keeper looks every little while from now on.
    threading.Thread(target=_keep, name="vmpanel-keeper", daemon=True).start()


def _keep() -> None:
    """In the worker's main process: the "a worker is alive" mark the operation page reads,
    and the periodic recovery, so that it runs even where no watcher does."""
    beats = 0
    while True:
        try:
            mark_worker_alive()
            if beats % 3 == 2:
                recover_orphaned_operations_task.apply_async()
        except Exception:  # the broker away for a moment: the next beat tries again
            log.exception("worker keeper beat failed")
        beats += 1
        time.sleep(KEEPER_SECONDS)
