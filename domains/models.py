"""Hosts, teams, the domain inventory, operations and audit events.

The models know nothing of libvirt: state codes are libvirt's numbers copied here as plain
constants so that the inventory can be filtered with SQL alone.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import kept_sql

# Folders libvirt itself uses for images, boot files, firmware and logs.
DEFAULT_ALLOWED_PATHS = "\n".join(
    [
        "/var/lib/libvirt/images",
        "/var/lib/libvirt/boot",
        "/var/lib/libvirt/qemu/nvram",
        "/usr/share/OVMF",
        "/usr/share/qemu",
        "/usr/share/seabios",
        "/var/log/libvirt",
    ]
)


class Host(models.Model):
    name = models.SlugField(_("name"), max_length=64, unique=True)
    uri = models.CharField(_("libvirt URI"), max_length=500)
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Written by the inventory watcher: when the host last answered and, if it does not
    # answer now, libvirt's error.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Where saved images go, as the host's libvirtd sees the path. Users name the file,
    # never the folder.
    save_dir = models.CharField(_("save folder"), max_length=500, blank=True)
    # How another host's libvirtd reaches this one for peer-to-peer migration (often not
    # the panel's own URI: a unix socket there, qemu+tcp://… here). Blank: the URI.
    migration_uri = models.CharField(_("migration URI"), max_length=500, blank=True)
    # The address QEMU's migration data goes to on this host, where it needs saying.
    migration_address = models.CharField(_("migration address"), max_length=100, blank=True)
    # What the host's libvirt can do (hypervisor.HostCapabilities.to_dict()), probed when
    # the inventory watcher (re)connects and when a superuser saves the host. For showing;
    # code that acts asks hypervisor.capabilities(), which is true for its own connection.
    capabilities = models.JSONField(_("capabilities"), default=dict, blank=True)
    capabilities_probed_at = models.DateTimeField(null=True, blank=True)
    # Where a team admin's domain XML may point on this host (one folder a line), besides
    # the host's storage pools: disks, ISOs, kernels, firmware, serial logs. Superusers
    # are not held to it.
    allowed_paths = models.TextField(
        _("folders team admins may use"), blank=True, default=DEFAULT_ALLOWED_PATHS
    )
    # This host's address on the management network, where the guests' displays listen for
    # the console proxy (and where templates make them listen). Blank: displays listen on
    # the host's 127.0.0.1 and the proxy reaches them through libvirt's own connection
    # (openGraphicsFD), which only a local connection (a unix socket) can do.
    console_address = models.CharField(_("console address"), max_length=45, blank=True)
    # Passing host devices (PCI, USB) through to guests is a superuser's decision per host.
    allow_hostdev = models.BooleanField(
        _("team admins may pass host devices through"), default=False
    )
    # The slow operations of this host (save, restore, hibernate, migrate, clone) go to
    # this Celery queue, so that only workers started with it (near the host, on its
    # network) run them. Blank: any worker; quick operations always go to any worker.
    celery_queue = models.CharField(
        _("worker queue for slow operations"),
        max_length=64,
        blank=True,
        validators=[
            RegexValidator(
                r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z",
                _("Letters, digits, dots, dashes and underscores; a letter or digit first."),
            )
        ],
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def allowed_folders(self) -> tuple[str, ...]:
        """`allowed_paths` as folders, without trailing slashes."""
        return tuple(
            line.strip().rstrip("/") or "/"
            for line in self.allowed_paths.splitlines()
            if line.strip()
        )

    def capability_rows(self) -> list[tuple[str, str]]:
        """The stored capabilities in plain words, for the host page; [] if never probed.

        The keys are HostCapabilities' fields; a key missing from an older row reads as
        "not known".
        """
        caps = self.capabilities or {}
        if not caps:
            return []
        unknown = _("not known yet (no VM on the host to ask)")

        def yes_no(key: str) -> str:
            value = caps.get(key)
            if value is None:
                return str(unknown)
            return str(_("yes") if value else _("no"))

        def listed(key: str, none: str) -> str:
            value = caps.get(key)
            if value is None:
                return str(unknown)
            return ", ".join(value) if value else none

        driver = caps.get("driver", "")
        version = caps.get("hypervisor_version", "")
        rows = [
            (_("Hypervisor"), f"{driver} {version}".strip() or "—"),
            (_("libvirt"), caps.get("libvirt_version") or "—"),
            (_("VM types it runs"), listed("domain_types", str(_("none")))),
            (_("Can destroy temporary VMs automatically"), yes_no("autodestroy")),
            (_("Can start VMs paused"), yes_no("start_paused")),
            (_("Statistics it reports for all VMs at once"), listed("bulk_stats", str(_("none")))),
            (_("Can take external (disk-only) snapshots"), yes_no("external_snapshots")),
            (_("Serial console through libvirt"), yes_no("console")),
            (_("Can migrate VMs"), yes_no("migration")),
            (_("Graphical consoles"), listed("graphics", str(_("none known")))),
        ]
        return [(str(label), value) for label, value in rows]


class Team(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    # How many snapshots one of the team's domains may hold (set with its quota).
    max_snapshots_per_domain = models.PositiveIntegerField(_("snapshots per VM"), default=10)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    VIEWER = "viewer", _("viewer")
    OPERATOR = "operator", _("operator")
    ADMIN = "admin", _("team admin")


# Which roles may do what. Superusers may do everything and see everything.
ACTION_ROLES: dict[str, set[str]] = {
    "view": {Role.VIEWER, Role.OPERATOR, Role.ADMIN},
    "operate": {Role.OPERATOR, Role.ADMIN},
    "admin": {Role.ADMIN},
}


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_role_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} as {self.role}"


def teams_for(user, action: str = "view"):
    """The teams in which `user` holds a role allowing `action`."""
    if user.is_superuser:
        return Team.objects.all()
    if not user.is_authenticated:
        return Team.objects.none()
    # (user, team) is unique in Membership, so this join cannot repeat a team.
    return Team.objects.filter(memberships__user=user, memberships__role__in=ACTION_ROLES[action])


def is_team_admin(user, team: Team | None) -> bool:
    """Whether `user` may manage `team` (its members, its requests): its admins and
    superusers."""
    if user.is_superuser:
        return True
    return team is not None and teams_for(user, "admin").filter(pk=team.pk).exists()


def actions_on(user, domain: Domain) -> frozenset[str]:
    """The ACTION_ROLES actions `user` holds on `domain` ("view", "operate", "admin"), in
    one query. It agrees with `Domain.objects.for_user` (tests hold it to that); a view asks
    once and passes the answer on instead of asking for each button."""
    if user.is_superuser:
        return frozenset(ACTION_ROLES)
    if not user.is_authenticated or domain.team_id is None:
        return frozenset()
    # Compiled once per (user, team): every domain page asks (kept_sql).
    found = kept_sql.rows(
        ("role", user.pk, domain.team_id),
        lambda: Membership.objects.filter(user=user, team_id=domain.team_id).values("role"),
    )
    role = found[0]["role"] if found else None
    return frozenset(action for action, roles in ACTION_ROLES.items() if role in roles)


# libvirt's virDomainState numbers.
class State(models.IntegerChoices):
    NOSTATE = 0, _("no state")
    RUNNING = 1, _("running")
    BLOCKED = 2, _("blocked")
    PAUSED = 3, _("paused")
    SHUTDOWN = 4, _("shutting down")
    SHUTOFF = 5, _("shut off")
    CRASHED = 6, _("crashed")
    PMSUSPENDED = 7, _("suspended by guest power management")


# The fourteen listAllDomains filters, in libvirt's groups. Inside a group the filters
# are alternatives (OR); across groups they must all hold (AND) — as libvirt combines
# VIR_CONNECT_LIST_DOMAINS_* flags.
LIST_FILTER_GROUPS: list[dict[str, tuple[str, Q]]] = [
    {
        "active": (_("on (running or paused)"), Q(libvirt_id__isnull=False)),
        "inactive": (_("off"), Q(libvirt_id__isnull=True)),
    },
    {
        "persistent": (_("permanent"), Q(persistent=True)),
        "transient": (_("temporary"), Q(persistent=False)),
    },
    {
        "running": (_("running"), Q(state=State.RUNNING)),
        "paused": (_("paused"), Q(state=State.PAUSED)),
        "shutoff": (_("shut off"), Q(state=State.SHUTOFF)),
        "other": (
            _("other state"),
            ~Q(state__in=[State.RUNNING, State.PAUSED, State.SHUTOFF]),
        ),
    },
    {
        "managed_save": (_("hibernated"), Q(has_managed_save=True)),
        "no_managed_save": (_("not hibernated"), Q(has_managed_save=False)),
    },
    {
        "autostart": (_("starts with its host"), Q(autostart=True)),
        "no_autostart": (_("does not"), Q(autostart=False)),
    },
    {
        "has_snapshot": (_("has snapshot"), Q(snapshot_count__gt=0)),
        "no_snapshot": (_("no snapshot"), Q(snapshot_count=0)),
    },
]
LIST_FILTERS = {key: item for group in LIST_FILTER_GROUPS for key, item in group.items()}


class DomainQuerySet(models.QuerySet):
    def for_user(self, user, action: str = "view") -> DomainQuerySet:
        """Narrow to the domains `user` may act on with `action`.

        The one place permission is decided (DESIGN rule 4). Domains of no team are for
        superusers only; staff without a team see nothing.
        """
        if user.is_superuser:
            return self
        if not user.is_authenticated:
            return self.none()
        # A subquery rather than a join: no duplicate rows, no DISTINCT over the list.
        return self.filter(team__in=teams_for(user, action).values("pk"))

    def present(self) -> DomainQuerySet:
        return self.filter(gone_at__isnull=True)

    def with_saved_image_count(self) -> DomainQuerySet:
        """Each row with `saved_image_count`: the images of its memory saved through the
        panel (a count per row on the index of SavedImage.domain, for a page of rows)."""
        images = (
            SavedImage.objects.filter(domain=OuterRef("pk"))
            .order_by()
            .values("domain")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return self.annotate(saved_image_count=Subquery(images))

    def with_list_filters(self, keys: list[str]) -> DomainQuerySet:
        """Apply listAllDomains filters the way libvirt combines them."""
        qs = self
        for group in LIST_FILTER_GROUPS:
            chosen = [group[k][1] for k in keys if k in group]
            if chosen:
                either = Q()
                for q in chosen:
                    either |= q
                qs = qs.filter(either)
        return qs


class Domain(models.Model):
    """One libvirt domain as last seen; identity is (host, UUID)."""

    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="domains")
    uuid = models.UUIDField(_("UUID"))
    name = models.CharField(_("name"), max_length=255)
    state = models.IntegerField(_("state"), choices=State.choices, default=State.NOSTATE)
    state_reason = models.CharField(_("reason"), max_length=64, blank=True)
    # libvirt's ID while the domain runs; None when it is inactive.
    libvirt_id = models.IntegerField(_("ID"), null=True, blank=True)
    vcpus = models.PositiveIntegerField(_("vCPUs"), default=0)
    memory_kib = models.PositiveBigIntegerField(_("memory"), default=0)
    max_memory_kib = models.PositiveBigIntegerField(_("maximum memory"), default=0)
    persistent = models.BooleanField(_("permanent"), default=True)
    autostart = models.BooleanField(_("autostart"), default=False)
    has_managed_save = models.BooleanField(_("hibernated"), default=False)
    snapshot_count = models.PositiveIntegerField(_("snapshots"), default=0)
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="domains"
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # Set when libvirt no longer knows the domain; the row and its history stay.
    gone_at = models.DateTimeField(null=True, blank=True)
    # Since when the domain is in its state (libvirt keeps no such time): set by the
    # inventory when the state it reads differs from the stored one, never by a pass that
    # finds it unchanged (`rules.state_goes_on`). Exact only when the panel saw the change
    # as it happened; otherwise (a row first seen, the field just added, a change the
    # watcher found after a silence) it is when the panel first saw the state: the state
    # began then or earlier.
    state_since = models.DateTimeField(default=timezone.now)
    state_since_exact = models.BooleanField(default=False)

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name", "host__name"]
        constraints = [models.UniqueConstraint(fields=["host", "uuid"], name="domain_identity")]
        indexes = [
            models.Index(fields=["name"]),
            models.Index(fields=["state"]),
            models.Index(fields=["team", "name"]),
            # The same guest on other hosts (its team, its running-since): asked for every
            # new row and every event's refresh; without it each asks the whole table.
            models.Index(fields=["uuid"], name="domain_uuid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} on {self.host.name}"

    @property
    def is_active(self) -> bool:
        return self.libvirt_id is not None

    @property
    def memory_mib(self) -> int:
        return self.memory_kib // 1024

    @property
    def max_memory_mib(self) -> int:
        return self.max_memory_kib // 1024


class OperationKind(models.TextChoices):
    START = "start", _("start")
    SHUTDOWN = "shutdown", _("shut down")
    DESTROY = "destroy", _("force off")
    REBOOT = "reboot", _("reboot")
    RESET = "reset", _("reset")
    SUSPEND = "suspend", _("pause")
    RESUME = "resume", _("resume")
    AUTOSTART_ON = "autostart_on", _("start with its host")
    AUTOSTART_OFF = "autostart_off", _("stop starting with its host")
    UNDEFINE = "undefine", _("delete definition")
    SAVE = "save", _("save to an image")
    RESTORE = "restore", _("restore from an image")
    MANAGED_SAVE = "managed_save", _("hibernate")
    MANAGED_SAVE_REMOVE = "managed_save_remove", _("discard hibernation")
    MIGRATE = "migrate", _("move to another host")
    PROVISION = "provision", _("create from a template")
    RESIZE = "resize", _("change vCPUs or memory")
    EDIT_XML = "edit_xml", _("edit XML")
    SNAPSHOT_CREATE = "snapshot_create", _("take snapshot")
    SNAPSHOT_REVERT = "snapshot_revert", _("revert to snapshot")
    SNAPSHOT_DELETE = "snapshot_delete", _("delete snapshot")
    CLONE = "clone", _("clone")


class OperationStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")
    # Turned down before any work: wrong state, no permission, host down, domain busy.
    REFUSED = "refused", _("refused")
    # The work ended without libvirt saying how (a migration whose source host stopped
    # answering): the domain stays busy until the keeper's reconcile finds where it runs.
    CHECKING = "checking", _("outcome unknown — checking")


ACTIVE_STATUSES = (OperationStatus.QUEUED, OperationStatus.RUNNING, OperationStatus.CHECKING)


class Operation(models.Model):
    """The record of one user action: its audit row and its progress."""

    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="operations",
    )
    domain = models.ForeignKey(
        Domain, null=True, on_delete=models.PROTECT, related_name="operations"
    )
    # The target as it was at the time: names change, hosts change on migration.
    host = models.ForeignKey(Host, null=True, on_delete=models.PROTECT)
    domain_uuid = models.UUIDField(null=True)
    domain_name = models.CharField(max_length=255, blank=True)
    team = models.ForeignKey(Team, null=True, on_delete=models.SET_NULL)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=OperationStatus.choices, default=OperationStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    # libvirt's job statistics as last read: processed/total/remaining bytes, speed, phase.
    progress_detail = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Written every few seconds by the worker running it: a running operation whose
    # heartbeat stops was orphaned by a dead worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The destination of a migration.
    target_host = models.ForeignKey(
        Host, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    message = models.TextField(blank=True)  # plain words for the user
    error = models.TextField(blank=True)  # libvirt's own message
    error_code = models.IntegerField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    xml_before = models.TextField(blank=True)
    xml_after = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["domain", "status"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.domain_name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in ACTIVE_STATUSES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class SavedImage(models.Model):
    """A memory image saved through the panel, in its host's save folder."""

    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="saved_images")
    path = models.CharField(max_length=1000)
    domain = models.ForeignKey(Domain, null=True, on_delete=models.SET_NULL, related_name="+")
    domain_uuid = models.UUIDField()
    domain_name = models.CharField(max_length=255)
    memory_kib = models.PositiveBigIntegerField(default=0)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL)
    operation = models.ForeignKey(
        Operation, null=True, on_delete=models.SET_NULL, related_name="saved_images"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["host", "path"], name="one_image_per_path")]

    def __str__(self) -> str:
        return self.path

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class AuditEvent(models.Model):
    """What happened that is not an operation on a domain: logins, roles, hosts."""

    kind = models.CharField(max_length=32)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL)
    summary = models.CharField(max_length=500)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.summary}"


# --- usage (the collector's figures; see domains.usage and domains.collector) -----------


class UsageFigures(models.Model):
    """One row of usage history: the average and maximum over `step` seconds from `at`
    (unix seconds, a multiple of `step`). Coarser rows are rolled up from finer ones."""

    step = models.PositiveIntegerField()
    at = models.BigIntegerField()
    cpu_avg = models.FloatField(null=True)  # % (of the domain's vCPUs; of the host's CPUs)
    cpu_max = models.FloatField(null=True)
    mem_avg = models.BigIntegerField(null=True)  # KiB used
    mem_max = models.BigIntegerField(null=True)

    FIGURES = ("cpu", "mem")

    class Meta:
        abstract = True


class DomainUsageSample(UsageFigures):
    # The inventory row: a domain that migrates keeps one history.
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="usage_samples")
    disk_rd_avg = models.FloatField(null=True)  # bytes/s, all disks
    disk_rd_max = models.FloatField(null=True)
    disk_wr_avg = models.FloatField(null=True)
    disk_wr_max = models.FloatField(null=True)
    net_rx_avg = models.FloatField(null=True)  # bits/s, all interfaces
    net_rx_max = models.FloatField(null=True)
    net_tx_avg = models.FloatField(null=True)
    net_tx_max = models.FloatField(null=True)

    FIGURES = ("cpu", "mem", "disk_rd", "disk_wr", "net_rx", "net_tx")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["domain", "step", "at"], name="one_domain_sample")
        ]
        indexes = [models.Index(fields=["step", "at"], name="domain_sample_age")]

    def __str__(self) -> str:
        return f"domain {self.domain_id} {self.step} s at {self.at}"


class HostUsageSample(UsageFigures):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="usage_samples")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "step", "at"], name="one_host_sample")
        ]
        indexes = [models.Index(fields=["step", "at"], name="host_sample_age")]

    def __str__(self) -> str:
        return f"host {self.host_id} {self.step} s at {self.at}"


class DomainUsage(models.Model):
    """A running domain's usage now (the collector's last tick): what the list sorts by and
    the detail page shows beside its graphs."""

    domain = models.OneToOneField(
        Domain, primary_key=True, on_delete=models.CASCADE, related_name="usage"
    )
    at = models.DateTimeField()
    cpu_pct = models.FloatField(null=True)
    memory_used_kib = models.BigIntegerField(null=True)
    memory_source = models.CharField(max_length=8, blank=True)  # "guest" or "host"
    # Per vCPU, disk and interface: {"vcpus": [...], "disks": [...], "nets": [...]}.
    detail = models.JSONField(default=dict)
    # The last hour's CPU %, a value a minute (None: no data), for the list's sparkline.
    spark = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"usage of domain {self.domain_id} at {self.at}"


class HostUsage(models.Model):
    """A host's own CPU and memory use now."""

    host = models.OneToOneField(
        Host, primary_key=True, on_delete=models.CASCADE, related_name="usage"
    )
    at = models.DateTimeField()
    cpu_pct = models.FloatField(null=True)
    memory_used_kib = models.BigIntegerField(null=True)
    memory_total_kib = models.BigIntegerField(null=True)
    cpus = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"usage of host {self.host_id} at {self.at}"


# --- each person's own choices ---------------------------------------------------------


class Profile(models.Model):
    """What a person chose for themselves: the language of their pages, notifications and
    e-mails. Made on first need (domains.language), so a user without one is simply one
    who chose nothing."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    # Blank: follow the browser.
    language = models.CharField(
        _("language"), max_length=15, blank=True, choices=settings.LANGUAGES
    )
    # The browser's language as seen at the last login: what e-mails and notifications
    # use for someone who chose nothing (they are written where no browser is asking).
    browser_language = models.CharField(max_length=15, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user_id}"
