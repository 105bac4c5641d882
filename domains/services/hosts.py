"""Hosts, teams and who owns what: superusers and team admins, each change an audit event."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils.translation import gettext as _

from .. import hypervisor, inventory
from ..hypervisor import HypervisorError
from ..models import Domain, Host, Membership, Team
from ..rules import host_uri_problem, listen_address_problem
from .common import ActionRefused, audit, require_superuser, require_team_admin


def save_host(user: User, host: Host) -> Host:
    """Add or change a host (superusers), after checking that its URIs are ones the panel
    uses (`rules.host_uri_problem`, before libvirt is asked) and that its URI answers."""
    require_superuser(user)
    problems = [host_uri_problem(host.uri)]
    if host.migration_uri:
        problem = host_uri_problem(host.migration_uri)
        problems.append(problem and _("Migration URI: %(problem)s") % {"problem": problem})
    problems.append(listen_address_problem(host.migration_address))
    if any(problems):
        raise ActionRefused(" ".join(p for p in problems if p), status=400)
    if host.enabled:
        try:
            hypervisor.check_uri(host.uri)
        except HypervisorError as exc:
            raise ActionRefused(
                _("Cannot connect to %(uri)s: %(error)s") % {"uri": host.uri, "error": exc.message}
            ) from None
    created = host.pk is None
    with transaction.atomic():
        if not created:
            # A new URI may reach another libvirt: forget the old connection.
            hypervisor.forget(Host.objects.get(pk=host.pk).uri)
        host.save()
        audit(
            "host_added" if created else "host_changed",
            user,
            f"{host.name} ({host.uri}, {'enabled' if host.enabled else 'disabled'})",
            host=host.name,
        )
    inventory.store_capabilities(host)
    return host


def set_host_enabled(user: User, host: Host, enabled: bool) -> Host:
    """Enable or disable a host (superusers); a disabled host is left alone by the panel."""
    require_superuser(user)
    with transaction.atomic():
        host.enabled = enabled
        host.save(update_fields=["enabled"])
        audit("host_enabled" if enabled else "host_disabled", user, host.name, host=host.name)
    return host


def assign_domain(user: User, domain: Domain, team: Team | None) -> Domain:
    """Give a domain to a team, or to none (superusers)."""
    require_superuser(user)
    with transaction.atomic():
        before = domain.team.name if domain.team else None
        domain.team = team
        domain.save(update_fields=["team"])
        audit(
            "domain_assigned",
            user,
            f"{domain.name} on {domain.host}: {before or '-'} → {team or '-'}",
            team=team,
            domain=str(domain.uuid),
            name=domain.name,
            before=before,
        )
    return domain


def set_membership(user: User, team: Team, member: User, role: str) -> Membership:
    """Add `member` to `team` with `role`, or change the role they have (team admins)."""
    require_team_admin(user, team, _("Only this team's admins may change its members."))
    with transaction.atomic():
        ms, created = Membership.objects.get_or_create(
            team=team, user=member, defaults={"role": role}
        )
        before = None if created else ms.role
        if not created and ms.role != role:
            ms.role = role
            ms.save(update_fields=["role"])
        audit(
            "role_changed",
            user,
            f"{member} in {team}: {before or '-'} → {role}",
            team=team,
            member=member.username,
            before=before,
            after=role,
        )
    return ms


def remove_membership(user: User, team: Team, member: User) -> None:
    """Take `member` out of `team` (team admins)."""
    require_team_admin(user, team, _("Only this team's admins may change its members."))
    with transaction.atomic():
        deleted, _n = Membership.objects.filter(team=team, user=member).delete()
        if deleted:
            audit(
                "member_removed",
                user,
                f"{member} removed from {team}",
                team=team,
                member=member.username,
            )
