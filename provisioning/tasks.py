"""The provisioning task: one per PROVISION operation.

The operation carries everything (XML built and previewed at request time, the choices in
its params), so the task needs no template. Direct kernel boot runs in two phases inside
the one task: phase 1 the installer as a transient domain that powers itself off, phase 2
the persistent domain booting from its disk. A failure in either phase removes what was
made, so no half-made domain stays behind.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.utils.translation import gettext as _

from domains import domxml, hypervisor, inventory
from domains.hypervisor import HypervisorError
from domains.models import Domain, Operation
from domains.runner import cancel_requested, run_operation, uri_uuid
from domains.tasks import operation_task

from . import services
from .models import Method, RequestState, VMRequest

log = logging.getLogger(__name__)


def _set_phase(op: Operation, phase: str, message: str) -> None:
    """Show on the operation page which phase runs."""
    op.params = {**op.params, "phase": phase}
    op.message = message
    Operation.objects.filter(pk=op.pk).update(params=op.params, message=message)
    log.info("operation %s: %s", op.pk, message)


def _cleanup(uri: str, uuid: str, volumes: list[str]) -> None:
    """Remove whatever this operation made: the domain (running or defined) and volumes."""
    for step in (hypervisor.destroy, hypervisor.undefine):
        try:
            if hypervisor.domain_exists(uri, uuid):
                step(uri, uuid)
        except HypervisorError as exc:
            log.info("cleanup of %s: %s", uuid, exc.message)
    for path in volumes:
        try:
            hypervisor.delete_volume(uri, path)
        except HypervisorError as exc:
            log.warning("cleanup: volume %s not removed: %s", path, exc.message)


def _make_volumes(op: Operation, xml: str) -> list[str]:
    """Create the domain's own disks as volumes where a pool of the host holds them.

    Where no active pool holds the images folder (the test driver's only pool is its own
    /default-pool) no volume is made: the disk stays in the XML, which the host takes as it
    is (the test driver opens no disk file).
    """
    made = []
    size = int(op.params.get("disk_gib") or 0) * 2**30
    uri = op.host.uri
    for disk in domxml.disks(xml):
        if disk.device != "disk" or not disk.source or disk.source.endswith(".iso"):
            continue
        if disk.source != services.disk_path(op.domain_name):
            continue  # an existing image the template names
        if hypervisor.volume_exists(uri, disk.source) or not hypervisor.has_pool_for(
            uri, disk.source
        ):
            continue
        hypervisor.create_volume(uri, disk.source, size, "qcow2")
        made.append(disk.source)
    return made


def _wait_powered_off(op: Operation, uri: str, uuid: str) -> None:
    """Poll until the transient installer domain is gone (it powered itself off)."""
    deadline = time.monotonic() + settings.VMPANEL_INSTALL_TIMEOUT_SECONDS
    while hypervisor.domain_state(uri, uuid) is not None:
        if cancel_requested(op):  # asked again if the connection dropped meanwhile
            raise HypervisorError(_("Cancelled during the installation."))
        if time.monotonic() > deadline:
            raise HypervisorError(
                _("The installer did not power off within %(s)d s.")
                % {"s": settings.VMPANEL_INSTALL_TIMEOUT_SECONDS}
            )
        time.sleep(0.5)


def _work(op: Operation) -> str:
    uri, uuid, xml, p = op.host.uri, str(op.domain_uuid), op.xml_after, op.params
    volumes = _make_volumes(op, xml)
    phase = "create"
    try:
        if p.get("method") == Method.KERNEL:
            phase = "1"
            _set_phase(op, "1", _("Phase 1 of 2: the installer runs (temporary VM)."))
            hypervisor.create_transient(uri, domxml.phase_one_install_xml(xml))
            _wait_powered_off(op, uri, uuid)
            phase = "2"
            _set_phase(op, "2", _("Phase 2 of 2: defining the VM to boot from its disk."))
            hypervisor.define_xml(uri, domxml.set_boot_from_disk(xml), validate=True)
            hypervisor.start_maybe_paused(uri, uuid, bool(p.get("paused")))
            return _("Installed and started from its disk.")
        if p.get("persistent"):
            hypervisor.define_xml(uri, xml, validate=True)
            if p.get("start"):
                hypervisor.start_maybe_paused(uri, uuid, bool(p.get("paused")))
                return _("Defined and started.")
            return _("Defined; not started.")
        hypervisor.create_transient(
            uri, xml, paused=bool(p.get("paused")), autodestroy=bool(p.get("autodestroy"))
        )
        return _("Created as a temporary VM.")
    except HypervisorError as exc:
        _cleanup(uri, uuid, volumes)
        if phase in ("1", "2"):
            exc.message = _("Phase %(n)s failed: %(error)s") % {"n": phase, "error": exc.message}
        raise


@shared_task(acks_late=True)
def provision_domain_task(operation_id: int) -> None:
    VMRequest.objects.filter(operation_id=operation_id, state=RequestState.APPROVED).update(
        state=RequestState.PROVISIONING
    )

    def work(op: Operation) -> str:
        message = _work(op)
        # Before the operation says "succeeded": the new row belongs to the team (the
        # inventory may have made it meanwhile) and the operation to the row.
        row = (
            inventory.refresh_domain(op.host, op.domain_uuid)
            or Domain.objects.filter(host=op.host, uuid=op.domain_uuid).first()
        )
        if row is not None:
            Domain.objects.filter(pk=row.pk).update(team=op.team)
            Operation.objects.filter(pk=op.pk).update(domain=row)
        return message

    run_operation(operation_id, work, None, provision_domain_task.name)
    services.finish_request(Operation.objects.select_related("host").get(pk=operation_id))


@operation_task
def clone_domain_task(op: Operation) -> str:
    """Copy the shut-off domain (`services.clone_domain`); the clone joins the team."""
    p = op.params

    def progress(done: int, total: int) -> None:
        percent = 100 if not total else int(done * 100 / total)
        detail = {"data_processed": done, "data_total": total, "data_remaining": total - done}
        Operation.objects.filter(pk=op.pk).update(progress=percent, progress_detail=detail)

    def cancelled() -> bool:
        return cancel_requested(op)

    result = hypervisor.clone_domain(
        *uri_uuid(op), p["name"], new_uuid=p["clone_uuid"], progress=progress, cancelled=cancelled
    )
    op.params = {**p, "volumes": list(result.volumes)}
    Operation.objects.filter(pk=op.pk).update(params=op.params)
    # Before the operation says "succeeded": the clone is in the inventory, in the team.
    row = (
        inventory.refresh_domain(op.host, result.uuid)
        or Domain.objects.filter(host=op.host, uuid=result.uuid).first()
    )
    if row is not None:
        Domain.objects.filter(pk=row.pk).update(team=op.team)
    return _("Cloned as %(name)s.") % {"name": p["name"]}
