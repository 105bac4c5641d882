"""Provisioning actions: quotas, self-service requests, creation from a template.

As in `domains.services`: one function per user action, taking the acting user, checking
permission and limits, writing the audit or Operation row, and queueing the task on commit.
A refusal raises `ActionRefused` after putting itself on record.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import ProtectedError, Sum
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from domains import domxml, hypervisor, language
from domains.hypervisor import HypervisorError
from domains.models import (
    ACTIVE_STATUSES,
    Domain,
    Host,
    Operation,
    OperationKind,
    OperationStatus,
    Role,
    Team,
    is_team_admin,
    teams_for,
)
from domains.rules import path_problems, taken_paths
from domains.services.common import (
    ActionRefused,
    audit,
    hold,
    queue_operation,
    record_refusal,
    require,
    require_superuser,
    send_on_commit,
)
from vmpanel.middleware import current_request_id

from .models import (
    PENDING_STATES,
    Method,
    Notification,
    Quota,
    RequestState,
    Template,
    VMRequest,
)

log = logging.getLogger(__name__)

IMAGE_DIR = "/var/lib/libvirt/images"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


# --- the template as a domain specification -------------------------------------------


def disk_path(name: str) -> str:
    return f"{IMAGE_DIR}/{name}.qcow2"


def template_to_spec(
    template: Template,
    name: str,
    uuid: str,
    vcpus: int,
    memory_mib: int,
    host: Host,
    caps: hypervisor.HostCapabilities | None = None,
) -> domxml.DomainSpec:
    """The domain a template makes on `host`, as data for `domxml.build_domain`.

    What the host can do decides, as its libvirt answered (`hypervisor.capabilities`): the
    template's domain type where the host runs it, else the host's first (a kvm template
    becomes qemu on a host without KVM, test on the test driver); VNC and the USB tablet
    only where the host offers VNC graphics. Disks, CD-ROM and serial console are the
    template's everywhere: every host, the test driver too, takes them in a definition.
    `caps` stands for the host's answer where the caller has it already.
    """
    caps = caps or hypervisor.capabilities(host.uri)
    memory_kib = memory_mib * 1024
    # The template's current memory is a share of its own memory (the balloon's headroom):
    # a VM asked with more or less memory keeps that share, so a request for 1024 MiB from a
    # 512/512 MiB template runs with 1024 MiB, not with the template's 512.
    share = template.current_memory_mib / template.memory_mib if template.memory_mib else 1
    current_kib = min(int(memory_kib * share) // 1024 * 1024, memory_kib) or memory_kib
    disks: list[domxml.DiskSpec] = []
    if template.method == Method.DISK and template.base_image:
        disks.append(
            domxml.DiskSpec(
                path=template.base_image,
                device="disk",
                bus=template.disk_bus,
                target=_target(template.disk_bus, 0),
                format=template.disk_format,
            )
        )
    else:
        disks.append(
            domxml.DiskSpec(
                path=disk_path(name),
                device="disk",
                bus=template.disk_bus,
                target=_target(template.disk_bus, 0),
                format=template.disk_format,
                size_bytes=template.disk_gib * 2**30,
            )
        )
    if template.method == Method.CDROM and template.iso_path:
        disks.append(
            domxml.DiskSpec(
                path=template.iso_path,
                device="cdrom",
                bus="sata",
                target="sdb" if template.disk_bus in ("sata", "scsi") else "sda",
                format="raw",
                readonly=True,
            )
        )
    boot_order = {
        Method.CDROM: ("hd", "cdrom"),
        Method.PXE: ("hd", "network"),
        Method.KERNEL: ("hd",),
        Method.DISK: ("hd",),
    }[template.method]
    interfaces = []
    if template.net_type:
        interfaces.append(
            domxml.InterfaceSpec(
                type=template.net_type, source=template.net_source, model=template.net_model
            )
        )
    kernel = template.method == Method.KERNEL
    domain_type = template.domain_type
    if caps.domain_types and domain_type not in caps.domain_types:
        domain_type = caps.domain_types[0]
    # A tablet only makes the pointer follow a graphical console.
    vnc = template.vnc and "vnc" in caps.graphics
    return domxml.DomainSpec(
        name=name,
        uuid=uuid,
        domain_type=domain_type,
        memory_kib=memory_kib,
        current_memory_kib=current_kib,
        max_memory_kib=(template.hotplug_memory_mib or 0) * 1024,
        memory_slots=template.memory_slots or 0,
        vcpus=max(vcpus, template.vcpus_max),
        vcpus_current=vcpus,
        vcpu_placement=template.vcpu_placement,
        cpuset=template.cpuset,
        boot_order=boot_order,
        boot_menu=template.boot_menu,
        boot_menu_timeout_ms=template.boot_menu_timeout_ms or 0,
        kernel=template.kernel if kernel else "",
        initrd=template.initrd if kernel else "",
        cmdline=template.cmdline if kernel else "",
        firmware=template.firmware,
        loader=template.loader,
        nvram_template=template.nvram_template,
        smbios_mode=template.smbios_mode,
        # BIOS output goes to the serial port: without one it has nowhere to go.
        bios_useserial=template.bios_useserial and template.serial_console,
        bios_reboot_timeout_ms=template.bios_reboot_timeout_ms,
        clock_offset=template.clock_offset,
        on_poweroff=template.on_poweroff,
        on_reboot=template.on_reboot,
        on_crash=template.on_crash,
        disks=tuple(disks),
        interfaces=tuple(interfaces),
        vnc=vnc,
        # The screen on the host's console address where it has one (the console proxy
        # reaches it there), else its own 127.0.0.1; with a password from the start, so
        # that the panel may set a fresh one for each console (QEMU cannot add one later).
        vnc_listen=host.console_address or "127.0.0.1",
        vnc_password=secrets.token_urlsafe(6)[:8] if vnc else "",
        tablet=template.tablet and vnc,
        balloon=template.balloon,
        balloon_period=template.balloon_period,
        serial_console=template.serial_console,
        serial_log=f"/var/log/libvirt/{name}-serial.log"
        if template.serial_log and template.serial_console
        else "",
    )


def _target(bus: str, index: int) -> str:
    prefix = {"virtio": "vd", "ide": "hd"}.get(bus, "sd")
    return prefix + "abcdefgh"[index]


@dataclass(frozen=True)
class Preview:
    xml: str
    warning: str
    problems: list[str]


def preview(
    template: Template, host: Host, name: str, vcpus: int, memory_mib: int, uuid: str = ""
) -> Preview:
    """The XML a creation would send, its low-memory warning, and what is wrong with it."""
    uuid = uuid or str(uuidlib.uuid4())
    spec = template_to_spec(template, name, uuid, vcpus, memory_mib, host)
    try:
        domxml.validate_spec(spec)
    except domxml.SpecError as exc:
        return Preview("", "", [str(exc)])
    return Preview(domxml.build_domain(spec), domxml.low_memory_warning(spec) or "", [])


# --- quotas ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    domains: int
    vcpus: int
    memory_mib: int
    disk_gib: int


def usage(
    team: Team, exclude_request: VMRequest | None = None, resizing: Domain | None = None
) -> Usage:
    """What the team uses: its domains in the inventory plus approved requests not yet
    made, plus what operations on their way will add (`_on_the_way`; not a resize of
    `resizing`, whose growth its caller counts); disk from the template sizes of its
    requests that are or will be domains."""
    doms = Domain.objects.present().filter(team=team)
    agg = doms.aggregate(v=Sum("vcpus"), m=Sum("memory_kib"))
    pending = VMRequest.objects.filter(team=team, state__in=PENDING_STATES)
    if exclude_request is not None:
        pending = pending.exclude(pk=exclude_request.pk)
    p = pending.aggregate(v=Sum("vcpus"), m=Sum("memory_mib"))
    disk = VMRequest.objects.filter(
        team=team, state__in=[*PENDING_STATES, RequestState.READY]
    ).exclude(pk=getattr(exclude_request, "pk", None))
    # A ready request's disk stops counting once its domain is gone from libvirt.
    disk = disk.exclude(operation__domain__gone_at__isnull=False)
    disk_gib = disk.aggregate(d=Sum("template__disk_gib"))["d"] or 0
    coming = _on_the_way(team, resizing)
    return Usage(
        domains=doms.count() + pending.count() + coming.domains,
        vcpus=(agg["v"] or 0) + (p["v"] or 0) + coming.vcpus,
        memory_mib=(agg["m"] or 0) // 1024 + (p["m"] or 0) + coming.memory_mib,
        disk_gib=disk_gib,
    )


def _on_the_way(team: Team, resizing: Domain | None = None) -> Usage:
    """What the team's queued and running operations will add once a worker has done them:
    a creation (not from a request: those count as approved requests) or a clone whose VM
    is not in the inventory yet, a resize's growth not yet there. Without it a second
    creation asked a moment after the first passed the quota the first would fill.
    Disk is left out, as it is for such VMs once made (only requests count disk)."""
    ops = Operation.objects.filter(
        team=team,
        status__in=ACTIVE_STATUSES,
        kind__in=[OperationKind.PROVISION, OperationKind.CLONE, OperationKind.RESIZE],
    ).select_related("domain")
    made = {
        str(u) for u in Domain.objects.present().filter(team=team).values_list("uuid", flat=True)
    }
    domains = vcpus = memory_mib = 0
    for op in ops:
        p = op.params
        if op.kind == OperationKind.RESIZE:
            if op.domain is None or op.domain.gone_at is not None or op.domain.team_id != team.pk:
                continue
            if resizing is not None and op.domain_id == resizing.pk:
                continue
            if p.get("vcpus") is not None:
                vcpus += max(0, p["vcpus"] - op.domain.vcpus)
            if p.get("memory_mib") is not None:
                memory_mib += max(0, p["memory_mib"] - op.domain.memory_kib // 1024)
            continue
        if op.kind == OperationKind.PROVISION:
            if p.get("request") or str(op.domain_uuid) in made:
                continue
            size = (p.get("vcpus") or 0, p.get("memory_mib") or 0)
        else:  # a clone: the size of its original, kept when it was asked for
            if p.get("clone_uuid") in made:
                continue
            source = op.domain
            size = (
                p.get("vcpus", source.vcpus if source else 0),
                p.get("memory_mib", source.memory_kib // 1024 if source else 0),
            )
        domains += 1
        vcpus += size[0]
        memory_mib += size[1]
    return Usage(domains=domains, vcpus=vcpus, memory_mib=memory_mib, disk_gib=0)


def lock_team(team: Team | int | None) -> None:
    """Lock the team's row until the transaction ends: the quota's check and the write of
    what it allows (a request approved, a creation, a clone or a resize queued) are one
    step, so that two at once cannot each fit alone and overrun it together."""
    if team is not None:
        list(Team.objects.select_for_update().filter(pk=getattr(team, "pk", team)))


def quota_problems(
    team: Team, vcpus: int, memory_mib: int, disk_gib: int, exclude: VMRequest | None = None
) -> list[str]:
    """What one more domain of this size would overrun, with the numbers."""
    # Read fresh, not through team.quota: a cached row would miss a superuser's change.
    quota = Quota.objects.filter(team=team).first()
    if quota is None:
        return []
    now = usage(team, exclude)
    checks = [
        (_("VMs"), now.domains + 1, quota.max_domains),
        (_("vCPUs"), now.vcpus + vcpus, quota.max_vcpus),
        (_("MiB of memory"), now.memory_mib + memory_mib, quota.max_memory_mib),
        (_("GiB of disk"), now.disk_gib + disk_gib, quota.max_disk_gib),
    ]
    return [
        _("%(team)s would use %(want)d of %(limit)d %(what)s.")
        % {"team": team.name, "want": want, "limit": limit, "what": what}
        for what, want, limit in checks
        if want > limit
    ]


def resize_quota_problems(domain: Domain, vcpus: int, memory_mib: int) -> list[str]:
    """What resizing `domain` to these counts would overrun of its team's quota, with the
    numbers. Only growth counts: a team over its limits may still make a VM smaller.

    Asked again inside the transaction that queues the resize (`resize.resize_domain`):
    there the team's row is locked first, so that two resizes at once are counted one
    after the other."""
    if transaction.get_connection().in_atomic_block:
        lock_team(domain.team_id)
    quota = Quota.objects.filter(team_id=domain.team_id).first() if domain.team_id else None
    if quota is None:
        return []
    now = usage(domain.team, resizing=domain)
    checks = [
        (_("vCPUs"), vcpus - domain.vcpus, now.vcpus, quota.max_vcpus),
        (_("MiB of memory"), memory_mib - domain.memory_kib // 1024, now.memory_mib,
         quota.max_memory_mib),
    ]  # fmt: skip
    return [
        _("%(team)s would use %(want)d of %(limit)d %(what)s.")
        % {"team": domain.team.name, "want": used + growth, "limit": limit, "what": what}
        for what, growth, used, limit in checks
        if growth > 0 and used + growth > limit
    ]


def quota_overruns(team: Team) -> list[str]:
    """What the team uses beyond its limits now (a limit set below current use), in words."""
    quota = Quota.objects.filter(team=team).first()
    if quota is None:
        return []
    now = usage(team)
    checks = [
        (_("VMs"), now.domains, quota.max_domains),
        (_("vCPUs"), now.vcpus, quota.max_vcpus),
        (_("MiB of memory"), now.memory_mib, quota.max_memory_mib),
        (_("GiB of disk"), now.disk_gib, quota.max_disk_gib),
    ]
    return [
        _(
            "%(team)s uses %(used)d %(what)s, more than its limit of %(limit)d: nothing is "
            "taken away, but no new VM fits until it uses less."
        )
        % {"team": team.name, "used": used, "what": what, "limit": limit}
        for what, used, limit in checks
        if used > limit
    ]


def set_quota(user: User, team: Team, **limits: int) -> Quota:
    """Set a team's limits (superusers); the audit row keeps the old ones too. Besides the
    quota's own, `max_snapshots_per_domain` (a team setting) may be among them."""
    require_superuser(user)
    snapshots = limits.pop("max_snapshots_per_domain", None)
    with transaction.atomic():
        old = Quota.objects.filter(team=team).values(*limits).first()
        quota, _created = Quota.objects.update_or_create(team=team, defaults=limits)
        if snapshots is not None:
            old = {**(old or {}), "max_snapshots_per_domain": team.max_snapshots_per_domain}
            Team.objects.filter(pk=team.pk).update(max_snapshots_per_domain=snapshots)
            team.max_snapshots_per_domain = snapshots
            limits = {**limits, "max_snapshots_per_domain": snapshots}
        audit("quota_changed", user, f"{team.name}: {limits}", team=team, before=old, after=limits)
    return quota


# --- templates -------------------------------------------------------------------------

# What a template is checked against: a host that runs every domain type and offers VNC,
# so that the check is of the template itself, not of one host.
_ANY_HOST = Host(name="any", uri="")
_ANY_CAPS = hypervisor.HostCapabilities(domain_types=domxml.DOMAIN_TYPES, graphics=("vnc",))

_TEMPLATE_FIELDS = {f.name for f in Template._meta.get_fields() if f.concrete}
# A spec attribute at fault (`SpecError.field`) and the template field it comes from.
_SPEC_FIELDS = {
    "vcpus": "vcpus_max",
    "vcpus_current": "vcpus_current",
    "memory_kib": "memory_mib",
    "current_memory_kib": "current_memory_mib",
    "max_memory_kib": "hotplug_memory_mib",
    "interfaces[0].type": "net_type",
    "interfaces[0].source": "net_source",
    "interfaces[0].model": "net_model",
    "disks[0].bus": "disk_bus",
    "disks[0].format": "disk_format",
    "disks[1].path": "iso_path",
}
# "(memory_kib, 512 MiB)" → "(512 MiB)"; "(loader)" → "": the spec's names mean nothing to
# the person at the form, whose field the message stands beside.
_SPEC_NAME_RE = re.compile(r" \((?:[a-z_]+(?:\[\d+\])?\.?)+(?:, ([^)]*))?\)")


def _spec_problem(exc: domxml.SpecError, method: str) -> tuple[str, str]:
    field = exc.field
    if field == "disks[0].path" and method == Method.DISK:
        field = "base_image"
    field = _SPEC_FIELDS.get(field, field)
    words = _SPEC_NAME_RE.sub(lambda m: f" ({m[1]})" if m[1] else "", str(exc))
    return (field if field in _TEMPLATE_FIELDS else None), words


def template_problems(template: Template) -> list[tuple[str | None, str]]:
    """What is wrong with a template, as (its field, the reason in plain words): the rules
    between its own fields, then every rule of `domxml.validate_spec` on the VM it makes,
    at its own size and at the largest a request may ask. [] when it is fine.

    Pure: no libvirt, no database (the form and `save_template` both ask it).
    """
    t = template
    problems: list[tuple[str | None, str]] = []

    def refuse(field: str, message: str, **values) -> None:
        problems.append((field, message % values))

    if t.vcpus_current > t.vcpus_max:
        refuse("vcpus_current", _("A VM starts with at most its maximum vCPUs (%(max)d)."),
               max=t.vcpus_max)  # fmt: skip
    if t.current_memory_mib > t.memory_mib:
        refuse("current_memory_mib",
               _("The memory in use at start cannot be more than the memory (%(mib)d MiB)."),
               mib=t.memory_mib)  # fmt: skip
    if t.cpuset and t.vcpu_placement == "auto":
        refuse("cpuset", _("With automatic placement the host chooses the CPUs: leave this "
                           "empty, or choose fixed placement."))  # fmt: skip
    if t.method == Method.CDROM and not t.iso_path:
        refuse("iso_path", _("An ISO install needs the path of its ISO image."))
    if t.method == Method.KERNEL:
        if not t.kernel:
            refuse("kernel", _("Direct kernel boot needs the path of the kernel."))
        if not t.initrd:
            refuse("initrd", _("Direct kernel boot needs the path of the initial RAM disk."))
    if t.method == Method.DISK and not t.base_image:
        refuse("base_image", _("Booting from an existing disk needs the path of that image."))
    if t.method == Method.PXE and not t.net_type:
        refuse("net_type", _("A PXE install boots from the network: choose a network "
                             "connection."))  # fmt: skip
    if t.min_vcpus > t.max_vcpus:
        refuse("min_vcpus", _("The fewest vCPUs cannot be more than the most (%(max)d)."),
               max=t.max_vcpus)  # fmt: skip
    elif not t.min_vcpus <= t.vcpus_current <= t.max_vcpus:
        refuse("min_vcpus" if t.vcpus_current < t.min_vcpus else "max_vcpus",
               ngettext("The template's own %(n)d vCPU must lie between the fewest and the "
                        "most a request may ask for.",
                        "The template's own %(n)d vCPUs must lie between the fewest and the "
                        "most a request may ask for.", t.vcpus_current),
               n=t.vcpus_current)  # fmt: skip
    if t.min_memory_mib > t.max_memory_mib:
        refuse("min_memory_mib",
               _("The least memory cannot be more than the most (%(max)d MiB)."),
               max=t.max_memory_mib)  # fmt: skip
    elif not t.min_memory_mib <= t.memory_mib <= t.max_memory_mib:
        refuse("min_memory_mib" if t.memory_mib < t.min_memory_mib else "max_memory_mib",
               _("The template's own %(mib)d MiB must lie between the least and the most "
                 "memory a request may ask for."), mib=t.memory_mib)  # fmt: skip
    if problems:
        return problems
    # The VM itself, at the template's size, then at the largest request (whose memory
    # must fit under a maximum memory for hot-plug, say).
    sizes = ((t.vcpus_current, t.memory_mib, {}), (t.max_vcpus, t.max_memory_mib,
             {"memory_mib": "max_memory_mib", "hotplug_memory_mib": "max_memory_mib"}))  # fmt: skip
    for vcpus, memory_mib, moved in sizes:
        spec = template_to_spec(
            t, "template-check", str(uuidlib.uuid4()), vcpus, memory_mib, _ANY_HOST, _ANY_CAPS
        )
        try:
            domxml.validate_spec(spec)
        except domxml.SpecError as exc:
            field, words = _spec_problem(exc, t.method)
            if moved:
                words = _("A request for the most it may ask would be refused: %(why)s") % {
                    "why": words}  # fmt: skip
            return [(moved.get(field, field), words)]
    return []


def _template_fields(template: Template) -> dict:
    """The template's editable values as JSON-safe data, for the audit row."""
    values = model_to_dict(template, exclude=["id"])
    values["hosts"] = sorted(h.name for h in values.get("hosts") or [])
    return {k: v if isinstance(v, (int, float, bool, str, list, type(None))) else str(v)
            for k, v in values.items()}  # fmt: skip


def save_template(user: User, template: Template, hosts: list[Host]) -> Template:
    """Add or change a template (superusers); the audit row says what changed, before and
    after, so that a domain made from it later can be explained."""
    require_superuser(user)
    problems = template_problems(template)
    if problems:
        raise ActionRefused(" ".join(words for _field, words in problems), status=400)
    created = template.pk is None
    with transaction.atomic():
        before = {} if created else _template_fields(Template.objects.get(pk=template.pk))
        template.save()
        template.hosts.set(hosts)
        after = _template_fields(template)
        changed = sorted(k for k in after if before.get(k) != after[k])
        audit(
            "template_added" if created else "template_changed",
            user,
            template.name if created else f"{template.name}: {', '.join(changed) or '-'}",
            template=template.pk,
            name=template.name,
            before={k: before.get(k) for k in changed},
            after={k: after[k] for k in changed},
        )
    return template


def delete_template(user: User, template: Template) -> None:
    """Remove a template (superusers); the audit row keeps all it held. A template that
    requests were made from stays, so that they can still be explained."""
    require_superuser(user)
    used = VMRequest.objects.filter(template=template).count()
    if used:
        raise ActionRefused(
            ngettext(
                "%(name)s stays: %(n)d request was made from it, and its record needs it.",
                "%(name)s stays: %(n)d requests were made from it, and their record needs it.",
                used,
            )
            % {"name": template.name, "n": used}
        )
    with transaction.atomic():
        before = _template_fields(template)
        pk = template.pk
        try:
            template.delete()
        except ProtectedError:  # a request made from it meanwhile
            raise ActionRefused(
                _("%(name)s stays: a request was made from it.") % {"name": template.name}
            ) from None
        audit("template_deleted", user, template.name, template=pk, name=template.name,
              before=before, after={})  # fmt: skip


# --- requests --------------------------------------------------------------------------


def visible_requests(user: User):
    """Requests the user may see: their own and those of their teams."""
    if user.is_superuser:
        return VMRequest.objects.all()
    return VMRequest.objects.filter(team__in=teams_for(user, "view").values("pk"))


def waiting_counts(user: User) -> tuple[int, int]:
    """(unread notifications, requests waiting for this user's decision): the navigation's
    counts. Team admins decide their teams' requests; superusers, everyone's."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True).count()
    waiting = VMRequest.objects.filter(state=RequestState.SUBMITTED)
    if not user.is_superuser:
        waiting = waiting.filter(team__in=teams_for(user, "admin").values("pk"))
    return unread, waiting.count()


def notify(user: User | None, words: Callable[[], str], url: str = "") -> None:
    """An in-panel notification and an e-mail, when there is someone to tell, sent once
    the current transaction commits: a decision rolled back tells nobody, and a slow mail
    server holds no database lock. `words` makes the text; it is called in the recipient's
    language (domains.language), not the language of whoever caused it."""
    if user is None:
        return

    def send() -> None:
        with language.for_user(user):
            text = words()
            subject = _("vmpanel: %(text)s") % {"text": text[:60]}
        Notification.objects.create(user=user, text=text, url=url)
        if user.email:
            # A mail server that does not answer must not undo the decision.
            send_mail(subject, text, None, [user.email], fail_silently=True)

    transaction.on_commit(send)


def _refused(user: User, team: Team | None, message: str, **detail) -> None:
    """A request turned down: on record as an audit event (a request is not an operation
    yet), then raised."""
    audit("request_refused", user, message, team=team, **detail)
    raise ActionRefused(message)


def _check_size(template: Template, vcpus: int, memory_mib: int) -> list[str]:
    problems = []
    if not template.min_vcpus <= vcpus <= template.max_vcpus:
        problems.append(
            _("%(template)s allows %(lo)d to %(hi)d vCPUs.")
            % {"template": template.name, "lo": template.min_vcpus, "hi": template.max_vcpus}
        )
    if not template.min_memory_mib <= memory_mib <= template.max_memory_mib:
        problems.append(
            _("%(template)s allows %(lo)d to %(hi)d MiB of memory.")
            % {
                "template": template.name,
                "lo": template.min_memory_mib,
                "hi": template.max_memory_mib,
            }
        )
    return problems


def submit_request(
    user: User,
    team: Team,
    template: Template,
    name: str,
    vcpus: int,
    memory_mib: int,
    purpose: str,
) -> VMRequest:
    """Any member of `team` (viewers too) asks for a domain; checked against the template's
    bounds and the team's quota now, and again at approval."""
    if not teams_for(user, "view").filter(pk=team.pk).exists():
        raise ActionRefused(_("No such team."), status=404)
    detail = {"template": template.name, "name": name, "vcpus": vcpus, "memory_mib": memory_mib}
    if not NAME_RE.match(name):
        _refused(user, team, _("A name is letters, digits, '.', '_' and '-'."), **detail)
    problems = _name_problems(user, template, name)
    problems += _check_size(template, vcpus, memory_mib)
    problems += quota_problems(team, vcpus, memory_mib, template.disk_gib)
    if problems:
        _refused(user, team, " ".join(problems), **detail)
    try:
        with transaction.atomic():
            # Two members asking for one name at once both found it free above: the name
            # is held while it is checked again and the request written.
            hold(f"request-name:{name}")
            if taken := _name_problems(user, template, name):
                raise ActionRefused(" ".join(taken))
            req = _submit(user, team, template, name, vcpus, memory_mib, purpose)
    except ActionRefused as exc:
        _refused(user, team, exc.message, **detail)
    return req


def _submit(
    user: User, team: Team, template: Template, name: str, vcpus: int, memory_mib: int, purpose: str
) -> VMRequest:
    """Write the request checked by `submit_request`, its audit row and its notices."""
    req = VMRequest.objects.create(
        team=team,
        requester=user,
        template=template,
        name=name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        purpose=purpose,
    )
    audit(
        "request_submitted",
        user,
        f"#{req.pk} {name} from {template.name} ({vcpus} vCPUs, {memory_mib} MiB)",
        team=team,
        request=req.pk,
        name=name,
        template=template.name,
        vcpus=vcpus,
        memory_mib=memory_mib,
    )
    # Those who decide hear of it: the team's admins (not the asker, if one of them).
    url = reverse("request_detail", args=[req.pk])

    def words() -> str:
        return _(
            "%(user)s asks for %(name)s (%(vcpus)d vCPUs, %(mib)d MiB) from %(template)s "
            "in %(team)s: approve or reject it."
        ) % {"user": user.username, "name": name, "vcpus": vcpus, "mib": memory_mib,
             "template": template.name, "team": team.name}  # fmt: skip

    admins = User.objects.filter(
        memberships__team=team, memberships__role=Role.ADMIN, is_active=True
    ).exclude(pk=user.pk)
    for admin in admins:
        notify(admin, words, url)
    return req


def _name_problems(user: User, template: Template, name: str) -> list[str]:
    """A name the VM could not have where the template makes VMs: taken by a VM the
    inventory knows on one of its hosts, or asked for by a request still under way (its
    number said only to whom may see it: another team's requests are not theirs to
    learn)."""
    taken = (
        Domain.objects.present()
        .filter(name=name, host__in=template.hosts.all())
        .select_related("host")
        .first()
    )
    if taken is not None:
        return [
            _("A VM named %(name)s exists already on %(host)s; choose another name.")
            % {"name": name, "host": taken.host.name}
        ]
    asked = VMRequest.objects.filter(
        name=name, state__in=[RequestState.SUBMITTED, *PENDING_STATES]
    ).first()
    if asked is not None and visible_requests(user).filter(pk=asked.pk).exists():
        return [
            _("Request #%(id)d asks for a VM named %(name)s already; choose another name.")
            % {"id": asked.pk, "name": name}
        ]
    if asked is not None:
        return [
            _("Another request asks for a VM named %(name)s already; choose another name.")
            % {"name": name}
        ]
    return []


def _decidable(user: User, req: VMRequest) -> None:
    if not visible_requests(user).filter(pk=req.pk).exists():
        raise ActionRefused(_("No such request."), status=404)
    if not is_team_admin(user, req.team):
        raise ActionRefused(_("Only this team's admins may decide requests."), status=403)
    if req.state != RequestState.SUBMITTED:
        raise ActionRefused(
            _("Request #%(pk)d is %(state)s already.")
            % {"pk": req.pk, "state": req.get_state_display()}
        )


def approve_request(user: User, req: VMRequest, host: Host | None = None) -> VMRequest:
    """A team admin approves: the quota is checked again and provisioning is queued."""
    _decidable(user, req)
    targets = req.template.hosts.filter(enabled=True)
    host = host or targets.first()
    if host is None or not targets.filter(pk=host.pk).exists():
        message = _("%(template)s cannot go to that host.") % {"template": req.template.name}
        _refuse_provision(user, host, req.team, req.name, {"request": req.pk}, message)
    problems = quota_problems(
        req.team, req.vcpus, req.memory_mib, req.template.disk_gib, exclude=req
    )
    try:
        problems += create_problems(host, req.template, req.name, CreateChoice())
    except HypervisorError as exc:
        problems.append(exc.hint)
    if problems:
        _refuse_provision(user, host, req.team, req.name, {"request": req.pk}, " ".join(problems))
    try:
        with transaction.atomic():
            # Conditional, so that of two admins deciding at once only one does.
            decided = VMRequest.objects.filter(pk=req.pk, state=RequestState.SUBMITTED).update(
                state=RequestState.APPROVED, host=host, decided_by=user, decided_at=timezone.now()
            )
            if not decided:
                raise ActionRefused(_("Request #%(pk)d was decided meanwhile.") % {"pk": req.pk})
            req.refresh_from_db()
            audit(
                "request_approved", user, f"#{req.pk} {req.name} on {host}", team=req.team,
                request=req.pk, name=req.name, host=host.name,
            )  # fmt: skip
            op = _provision(
                user, req.template, host, req.team, req.name, req.vcpus, req.memory_mib,
                CreateChoice(persistent=True, start=True), request=req,
            )  # fmt: skip
            req.operation = op
            req.save(update_fields=["operation"])
    except ActionRefused as exc:
        # The approval rolled back; the refusal stays on record.
        req.refresh_from_db()
        _refuse_provision(user, host, req.team, req.name, {"request": req.pk}, exc.message)
    # The task went to the queue as the approval committed. A queue that did not answer
    # failed the operation there and then, before any worker had it: nothing will come of
    # this approval, so it is undone (the request waits for a decision again, its size no
    # longer held against the quota) and said, where it stayed "approved" for good.
    if Operation.objects.filter(
        pk=op.pk, status=OperationStatus.FAILED, started_at__isnull=True
    ).exists():
        VMRequest.objects.filter(pk=req.pk, state=RequestState.APPROVED, operation=op).update(
            state=RequestState.SUBMITTED, host=None, decided_by=None, decided_at=None,
            operation=None,
        )  # fmt: skip
        req.refresh_from_db()
        raise ActionRefused(Operation.objects.get(pk=op.pk).message)
    # Told only now, once the task is on its way (on commit: there is none to wait for).
    notify(
        req.requester,
        lambda: (
            _("Your request #%(pk)d for %(name)s was approved; it is being provisioned.")
            % {"pk": req.pk, "name": req.name}
        ),
        reverse("request_detail", args=[req.pk]),
    )
    return req


def reject_request(user: User, req: VMRequest, reason: str) -> VMRequest:
    """A team admin turns a request down, saying why; the requester is told."""
    _decidable(user, req)
    with transaction.atomic():
        now = timezone.now()
        decided = VMRequest.objects.filter(pk=req.pk, state=RequestState.SUBMITTED).update(
            state=RequestState.REJECTED, decided_by=user, decided_at=now, finished_at=now,
            reason=reason,
        )  # fmt: skip
        if not decided:
            raise ActionRefused(_("Request #%(pk)d was decided meanwhile.") % {"pk": req.pk})
        req.refresh_from_db()
        audit(
            "request_rejected", user, f"#{req.pk} {req.name}: {reason}", team=req.team,
            request=req.pk, name=req.name, reason=reason,
        )  # fmt: skip
        notify(
            req.requester,
            lambda: (
                _("Your request #%(pk)d for %(name)s was rejected: %(reason)s")
                % {"pk": req.pk, "name": req.name, "reason": reason}
            ),
            reverse("request_detail", args=[req.pk]),
        )
    return req


# --- creation --------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateChoice:
    persistent: bool = True
    start: bool = True
    paused: bool = False
    autodestroy: bool = False


def create_problems(host: Host, template: Template, name: str, choice: CreateChoice) -> list[str]:
    """What stops a creation before anything is sent to libvirt, in plain words."""
    problems = []
    if not NAME_RE.match(name):
        problems.append(_("A name is letters, digits, '.', '_' and '-'."))
    if not template.hosts.filter(pk=host.pk).exists():
        problems.append(_("%(template)s does not target %(host)s.") % {
            "template": template.name, "host": host.name})  # fmt: skip
    if not host.enabled:
        problems.append(_("%(host)s is disabled.") % {"host": host.name})
        return problems
    if choice.autodestroy:
        if choice.persistent:
            problems.append(_("Only a temporary VM can be destroyed automatically."))
        elif not hypervisor.capabilities(host.uri).autodestroy:
            problems.append(
                _("%(host)s cannot destroy VMs automatically; create it without that.")
                % {"host": host.name}
            )
    if template.method == Method.KERNEL and not choice.persistent:
        problems.append(_("Direct kernel boot installs in two phases and makes a permanent VM."))
    if hypervisor.domain_name_taken(host.uri, name):
        problems.append(_("%(host)s has a VM named %(name)s already.") % {
            "host": host.name, "name": name})  # fmt: skip
    elif template.method != Method.DISK and NAME_RE.match(name):
        # The new VM's own disk is named after it, and the task takes a volume already
        # there: a disk another VM keeps (renamed since), or one a deleted VM left, would
        # be the new VM's, with another team's data on it.
        own = disk_path(name)
        if hypervisor.volume_exists(host.uri, own) or taken_paths(
            [own], hypervisor.paths_in_use(host.uri)
        ):
            problems.append(
                _(
                    "%(host)s has a disk image %(path)s already (another VM's, or one left "
                    "behind), where this VM's own disk would go: choose another name."
                )
                % {"host": host.name, "path": own}
            )
    return problems


def template_path_problems(host: Host, xml: str) -> list[str]:
    """The host paths of a domain made from a template that lie outside what the host
    allows team admins (its storage pools and allowed folders)."""
    try:
        roots = (*hypervisor.pool_paths(host.uri), *host.allowed_folders)
    except HypervisorError as exc:
        return [exc.hint]
    return path_problems(domxml.read_domain_reach(xml), None, roots)


def _refuse_provision(user, host, team, name, params, message) -> None:
    """A creation turned down: on record as a refused provisioning, like every refused
    operation, then raised."""
    op = record_refusal(
        user, OperationKind.PROVISION, message, host=host, team=team, name=name, params=params
    )
    raise ActionRefused(message, op)


def create_domain(
    user: User,
    template: Template,
    host: Host,
    team: Team,
    name: str,
    vcpus: int,
    memory_mib: int,
    choice: CreateChoice,
) -> Operation:
    """A superuser or team admin creates a domain from a template for `team` (a
    provisioning operation: the task defines or creates it, and starts it if asked)."""
    if not is_team_admin(user, team):
        if teams_for(user, "view").filter(pk=team.pk).exists():
            raise ActionRefused(_("Only team admins may create VMs."), status=403)
        raise ActionRefused(_("No such team."), status=404)
    return _provision(user, template, host, team, name, vcpus, memory_mib, choice)


def _provision(
    user: User,
    template: Template,
    host: Host,
    team: Team,
    name: str,
    vcpus: int,
    memory_mib: int,
    choice: CreateChoice,
    request: VMRequest | None = None,
) -> Operation:
    params = {
        "template": template.pk,
        "template_name": template.name,
        "method": template.method,
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "persistent": choice.persistent,
        "start": choice.start,
        "paused": choice.paused,
        "autodestroy": choice.autodestroy,
        "request": request.pk if request else None,
        "disk_gib": template.disk_gib,
        "phase": "",
    }
    try:
        problems = create_problems(host, template, name, choice)
    except HypervisorError as exc:
        problems = [exc.hint]
    if request is None:
        problems += quota_problems(team, vcpus, memory_mib, template.disk_gib)
    uuid = str(uuidlib.uuid4())
    view = None
    if not problems:
        view = preview(template, host, name, vcpus, memory_mib, uuid)
        problems = view.problems
    if not problems and not user.is_superuser:
        # The template's files (ISO, kernel, base image, firmware) must lie where a team
        # admin may point on this host, as in a team admin's XML edit.
        problems = template_path_problems(host, view.xml)
    if not problems:
        with transaction.atomic():
            # Checked above on what libvirt and the database said a moment ago: two
            # creations at once (two admins, an approval and a creation) both found the
            # name free and the quota enough. So the name on the host and the team's row
            # are held while both are checked again and the operation written.
            problems = _made_meanwhile_problems(host, team, name)
            problems += quota_problems(team, vcpus, memory_mib, template.disk_gib, exclude=request)
            if not problems:
                op = Operation.objects.create(
                    kind=OperationKind.PROVISION,
                    user=user,
                    host=host,
                    domain_uuid=uuid,
                    domain_name=name,
                    team=team,
                    params=params,
                    xml_after=view.xml,
                    message=view.warning,
                    request_id=current_request_id.get(),
                    task_id=str(uuidlib.uuid4()),
                )
                send_on_commit(op)
                return op
    message = " ".join(problems)
    if request is not None:
        # Inside approval's transaction, which rolls back: the approval records it.
        raise ActionRefused(message)
    _refuse_provision(user, host, team, name, params, message)
    raise AssertionError("unreachable")


def _made_meanwhile_problems(host: Host, team: Team | None, name: str) -> list[str]:
    """Inside the transaction that writes a creation or a clone named `name` on `host`:
    hold the name there and the team's row (in this order, everywhere), then say whether
    the name was taken since libvirt was asked: by a VM the inventory has now, or one on
    its way (a creation or a clone queued or running)."""
    hold(f"vm-name:{host.pk}:{name}")
    lock_team(team)
    if Domain.objects.present().filter(host=host, name=name).exists():
        return [_("%(host)s has a VM named %(name)s already.") % {"host": host.name, "name": name}]
    coming = Operation.objects.filter(host=host, status__in=ACTIVE_STATUSES)
    if (
        coming.filter(kind=OperationKind.PROVISION, domain_name=name).exists()
        or coming.filter(kind=OperationKind.CLONE, params__name=name).exists()
    ):
        return [
            _("A VM named %(name)s is being made on %(host)s already; choose another name.")
            % {"host": host.name, "name": name}
        ]
    return []


def finish_request(op: Operation) -> None:
    """After the provisioning task: the request is ready or failed, and its requester told.

    Idempotent: it acts only on a finished operation and only on a request still being
    provisioned, so a redelivered task (whose claim found the operation running or done)
    neither fails a running request nor tells anybody twice.
    """
    if not op.is_finished or not op.params.get("request"):
        return
    succeeded = op.status == OperationStatus.SUCCEEDED
    with transaction.atomic():
        changed = VMRequest.objects.filter(
            pk=op.params["request"], state__in=PENDING_STATES
        ).update(
            state=RequestState.READY if succeeded else RequestState.FAILED,
            reason="" if succeeded else op.message,
            finished_at=timezone.now(),
        )
        if not changed:
            return
        req = VMRequest.objects.select_related("requester").get(pk=op.params["request"])
        url = reverse("request_detail", args=[req.pk])
        if succeeded:
            notify(req.requester, lambda: _("%(name)s is ready.") % {"name": req.name}, url)
        else:
            notify(
                req.requester,
                lambda: (
                    _("Provisioning %(name)s failed: %(why)s")
                    % {"name": req.name, "why": op.message}
                ),
                url,
            )


def mark_read(user: User) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


# --- clones ------------------------------------------------------------------------------

GIB = 2**30


def clone_domain(user: User, domain: Domain, name: str) -> Operation:
    """Copy a shut-off domain as `name` on its host, into its team, against the team's quota:
    new UUID and MAC addresses, its disks copied through the host's storage pool. A slow
    operation: the copy's progress shows, and a cancel stops it between disks (what was
    copied by then is removed)."""
    kind = OperationKind.CLONE
    name = name.strip()
    # Chosen now, so that the record names the clone before it exists.
    params = {"name": name, "clone_uuid": str(uuidlib.uuid4())}
    require(user, domain, kind, params)

    def check() -> str | None:
        if not NAME_RE.match(name):
            return _(
                "A name is letters, digits, '.', '_' and '-' (at most 63), starting with a "
                "letter or digit."
            )
        try:
            if hypervisor.domain_name_taken(domain.host.uri, name):
                return _("%(host)s has a VM named %(name)s already.") % {
                    "host": domain.host.name,
                    "name": name,
                }
            # What stops the copy (a disk outside the storage pools …) is said now.
            size = hypervisor.clone_size(domain.host.uri, str(domain.uuid), name)
        except HypervisorError as exc:
            return exc.message
        disk_gib = -(-size // GIB)  # rounded up
        # Kept with the operation: while it is on its way the clone counts against the
        # team's quota at this size (`usage`), and the check under the lock reads it.
        params.update(vcpus=domain.vcpus, memory_mib=domain.memory_kib // 1024, disk_gib=disk_gib)
        if domain.team is None:
            return None
        problems = quota_problems(domain.team, domain.vcpus, domain.memory_kib // 1024, disk_gib)
        return " ".join(problems) or None

    def locked_check(locked: Domain) -> str | None:
        # Asked a moment ago: again with the name and the team held (`_provision`).
        problems = _made_meanwhile_problems(locked.host, locked.team, name)
        if not problems and locked.team is not None:
            problems = quota_problems(
                locked.team, params["vcpus"], params["memory_mib"], params["disk_gib"]
            )
        return " ".join(problems) or None

    return queue_operation(user, domain, kind, params, check=check, locked_check=locked_check)
