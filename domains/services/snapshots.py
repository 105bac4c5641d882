"""Snapshots: take one, go back to one, delete them.

Each function checks what libvirt would refuse (or do badly) before asking it, in plain
words and on record, then queues the operation; the work is in `domains.tasks`. What a
snapshot holds is read from libvirt each time (`hypervisor.list_snapshots`): snapshots
made with virsh are as real as the panel's.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import hypervisor, rules
from ..hypervisor import HypervisorError
from ..models import Domain, Operation, OperationKind, Team
from .common import queue_operation, require

# How a revert leaves the domain, and what a delete takes with it.
REVERT_THEN = ("", "running", "paused")
DELETE_MODES = ("one", "with_children", "children_only")


def default_name() -> str:
    """A snapshot's name when none is given: when it was taken."""
    return timezone.localtime().strftime("snapshot-%Y-%m-%d-%H%M%S")


def _snapshots(domain: Domain) -> tuple[hypervisor.SnapshotFacts, ...]:
    return hypervisor.list_snapshots(domain.host.uri, str(domain.uuid))


def _limit(domain: Domain) -> int:
    # Read fresh: a superuser may have changed it a moment ago.
    if domain.team_id is None:
        return Team._meta.get_field("max_snapshots_per_domain").default
    return Team.objects.values_list("max_snapshots_per_domain", flat=True).get(pk=domain.team_id)


def create_snapshot(
    user: User,
    domain: Domain,
    name: str,
    description: str = "",
    *,
    disk_only: bool = False,
    quiesce: bool = False,
) -> Operation:
    """Take a snapshot. Of a running domain, an internal one holds its memory too (a
    revert brings it back running where it was); a disk-only one (external) where the
    host can, frozen by the guest agent first when asked (quiesce)."""
    kind = OperationKind.SNAPSHOT_CREATE
    name = name or default_name()
    params = {"name": name, "description": description, "disk_only": disk_only,
              "quiesce": quiesce}  # fmt: skip
    require(user, domain, kind, params)

    def check() -> str | None:
        problem = rules.snapshot_name_problem(name)
        if problem:
            return problem
        if quiesce and not disk_only:
            return _("Quiescing is for disk-only snapshots: choose disk-only, or do not quiesce.")
        try:
            existing = _snapshots(domain)
            if disk_only:
                caps = hypervisor.capabilities(domain.host.uri)
            else:
                not_qcow2 = hypervisor.snapshot_disk_problems(domain.host.uri, str(domain.uuid))
            agent = quiesce and hypervisor.guest_agent_answers(domain.host.uri, str(domain.uuid))
        except HypervisorError as exc:
            return exc.message
        if any(s.name == name for s in existing):
            return _("%(domain)s has a snapshot named “%(name)s” already.") % {
                "domain": domain.name,
                "name": name,
            }
        team = domain.team.name if domain.team else _("a VM without a team")
        problem = rules.snapshot_limit_problem(domain.name, team, len(existing), _limit(domain))
        if problem:
            return problem
        if disk_only and not caps.external_snapshots:
            return _(
                "Host %(host)s does not take disk-only snapshots (its libvirt said so when "
                "asked); take one with the memory instead."
            ) % {"host": domain.host.name}
        if not disk_only and not_qcow2:
            return _(
                "%(domain)s's disks %(disks)s are not qcow2, and only a qcow2 disk holds an "
                "internal snapshot. Convert them, or take a disk-only snapshot."
            ) % {"domain": domain.name, "disks": ", ".join(not_qcow2)}
        if quiesce and not agent:
            return _(
                "No guest agent answers in %(domain)s, so its file systems cannot be frozen "
                "first: take the snapshot without quiescing."
            ) % {"domain": domain.name}
        return None

    return queue_operation(user, domain, kind, params, check=check)


def _known(domain: Domain, name: str) -> str | None:
    """None if `name` is one of the domain's snapshots now; else why not, plainly."""
    try:
        names = {s.name for s in _snapshots(domain)}
    except HypervisorError as exc:
        return exc.message
    if name not in names:
        return _(
            "%(domain)s has no snapshot named “%(name)s” (now): someone may have deleted it."
        ) % {"domain": domain.name, "name": name}
    return None


def revert_snapshot(
    user: User, domain: Domain, name: str, *, then: str = "", force: bool = False
) -> Operation:
    """Go back to snapshot `name`: the domain's present state is thrown away. `then`:
    "" as the snapshot holds it, "running" or "paused"; `force` where libvirt asks for it
    (a revert it deems risky, e.g. to a snapshot with different devices)."""
    kind = OperationKind.SNAPSHOT_REVERT
    params = {"name": name, "then": then, "force": force}
    require(user, domain, kind, params)

    def check() -> str | None:
        if then not in REVERT_THEN:
            return _("Choose how the VM comes back: as saved, running or paused.")
        return _known(domain, name)

    return queue_operation(user, domain, kind, params, check=check)


def delete_snapshot(user: User, domain: Domain, name: str, *, mode: str = "one") -> Operation:
    """Delete snapshot `name` (`mode` "one"), it and its children ("with_children"), or
    only its children ("children_only"). The domain itself is not touched."""
    kind = OperationKind.SNAPSHOT_DELETE
    params = {"name": name, "mode": mode}
    require(user, domain, kind, params)

    def check() -> str | None:
        if mode not in DELETE_MODES:
            return _("Choose what to delete: the snapshot, it and its children, or its children.")
        return _known(domain, name)

    return queue_operation(user, domain, kind, params, check=check)


def snapshot_tree(domain: Domain) -> list[tuple[int, hypervisor.SnapshotFacts]]:
    """(depth, snapshot), each snapshot right under its parent, siblings oldest first:
    the snapshots page's tree."""
    facts = _snapshots(domain)
    names = {s.name for s in facts}
    children: dict[str, list[hypervisor.SnapshotFacts]] = {}
    for snap in sorted(facts, key=lambda s: (s.created_at, s.name)):
        # A parent libvirt no longer lists (deleted alone): its children become roots.
        children.setdefault(snap.parent if snap.parent in names else "", []).append(snap)
    ordered: list[tuple[int, hypervisor.SnapshotFacts]] = []

    def walk(parent: str, depth: int) -> None:
        for snap in children.get(parent, []):
            ordered.append((depth, snap))
            walk(snap.name, depth + 1)

    walk("", 0)
    return ordered
