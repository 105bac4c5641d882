"""Moving a running (or, offline, a shut-off) domain to another host: every flag of the
guide, checked in plain words before libvirt is asked."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.utils.translation import gettext as _

from .. import hypervisor
from ..hypervisor import HypervisorError
from ..models import Domain, Operation, OperationKind
from ..rules import MigrationChoice, destination_uris, migration_flag_problems, taken_paths
from .common import ActionRefused, queue_operation, require

COPY_FLAGS = frozenset({"NON_SHARED_DISK", "NON_SHARED_INC"})


def migration_problems(domain: Domain, choice: MigrationChoice) -> list[str]:
    """Everything that would make this migration fail, in plain words, before libvirt is
    asked to migrate: the rules of `migration_flag_problems`, then the facts of both hosts
    (the destination answers, has no such domain yet, has the disks or room for copies).
    Reads only; changes nothing."""
    problems = migration_flag_problems(domain, choice)
    if problems:
        return problems
    flags = choice.flags
    copy = flags & COPY_FLAGS
    dest_uri, _p2p = destination_uris(choice)
    try:
        hypervisor.ping(dest_uri)
    except HypervisorError as exc:
        return [_("The destination does not answer: %(error)s") % {"error": exc.message}]
    try:
        if hypervisor.domain_exists(dest_uri, str(domain.uuid)):
            problems.append(_("A VM with this UUID exists on the destination already."))
        name = choice.new_name or domain.name
        if hypervisor.domain_name_taken(dest_uri, name):
            problems.append(
                _("A VM named %(name)s exists on the destination already.") % {"name": name}
            )
        # A path the destination's domains keep to themselves (the same folder on two
        # hosts holds different teams' disks): the VM would run on their data there, or
        # a copy of its disks write over it. Offline too: its next start there would.
        taken = hypervisor.paths_in_use(dest_uri, exclude_uuid=str(domain.uuid))
        # Its disks marked shareable are shared on purpose (a cluster's disk on shared
        # storage, which a peer on the destination has too).
        own = hypervisor.private_paths_of(domain.host.uri, str(domain.uuid), shareable=False)
        for path in taken_paths(own, taken):
            problems.append(
                _(
                    "%(path)s is in use by another VM on the destination; this VM cannot "
                    "take it there."
                )
                % {"path": path}
            )
        if "OFFLINE" not in flags:
            needed: dict[str, int] = {}  # folder → bytes the copies need there
            for disk in hypervisor.domain_disks(domain.host.uri, str(domain.uuid)):
                if hypervisor.volume_exists(dest_uri, disk.source):
                    continue  # shared storage, or a target made ready by hand
                folder = disk.source.rsplit("/", 1)[0]
                needed[folder] = needed.get(folder, 0) + disk.allocation_bytes
                if not copy:
                    problems.append(
                        _(
                            "Disk %(target)s (%(path)s) is not on the destination: put it on "
                            "shared storage or choose to copy storage."
                        )
                        % {"target": disk.target, "path": disk.source}
                    )
                elif hypervisor.pool_free_bytes(dest_uri, disk.source) is None:
                    problems.append(
                        _(
                            "The destination has no storage pool holding %(folder)s, so the "
                            "copy of %(target)s cannot be created there."
                        )
                        % {"folder": disk.source.rsplit("/", 1)[0], "target": disk.target}
                    )
            for folder, size in needed.items() if copy else ():
                free = hypervisor.pool_free_bytes(dest_uri, f"{folder}/x")
                if free is not None and free < size:
                    problems.append(
                        _(
                            "The destination's pool for %(folder)s has %(free)s GiB free; the "
                            "copies need %(size)s GiB."
                        )
                        % {
                            "folder": folder,
                            "free": round(free / 2**30, 1),
                            "size": round(size / 2**30, 1),
                        }
                    )
    except HypervisorError as exc:
        problems.append(exc.message)
    return problems


def migrate_domain(user: User, domain: Domain, choice: MigrationChoice) -> Operation:
    """Check everything in plain words, then queue the migration (a long job: progress,
    cancel). Free destination URIs are for superusers."""
    kind = OperationKind.MIGRATE
    require(user, domain, kind)
    if choice.destination is None and not user.is_superuser:
        raise ActionRefused(_("Only superusers may migrate to a free URI."), status=403)
    if choice.destination is None and not choice.destination_uri:
        raise ActionRefused(_("Choose a destination."), status=400)
    dest_uri, p2p_uri = destination_uris(choice)
    dest = choice.destination
    params = {
        "destination": dest.name if dest else "",
        "destination_uri": dest_uri,
        "p2p_uri": p2p_uri,
        "flags": sorted(choice.flags),
        "bandwidth_mib_s": choice.bandwidth_mib_s,
        "new_name": choice.new_name,
        "migrate_uri": choice.migrate_uri
        or (f"tcp://{dest.migration_address}" if dest and dest.migration_address else ""),
        "listen_address": choice.listen_address or (dest.migration_address if dest else ""),
        "source": domain.host.name,
    }

    def check() -> str | None:
        return " ".join(migration_problems(domain, choice)) or None

    return queue_operation(user, domain, kind, params, check=check, target_host=dest)
