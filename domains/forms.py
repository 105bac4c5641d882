"""Forms of the panel: filters read by GET, and the few small write forms.

Filter forms never fail a page: a value that does not validate is simply not applied, so a
hand-edited URL shows the unfiltered list instead of an error.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from types import MappingProxyType

from django import forms
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from vmpanel import fields as panel_fields

from .models import (
    LIST_FILTER_GROUPS,
    LIST_FILTERS,
    Host,
    OperationKind,
    OperationStatus,
    Role,
    Team,
)
from .rules import (
    DEFAULT_MIGRATION_FLAGS,
    console_address_problem,
    host_uri_problem,
    listen_address_problem,
    migrate_uri_problem,
)

# Titles of libvirt's filter groups, in the order of models.LIST_FILTER_GROUPS.
FILTER_GROUP_TITLES = [
    _("On or off"),
    _("Permanent or temporary"),
    _("State"),
    _("Hibernated"),
    _("Autostart"),
    _("Snapshots"),
]

# ?sort= keys of the domain list and the columns they order by.
DOMAIN_SORTS = {
    "name": "name",
    "host": "host__name",
    "state": "state",
    "id": "libvirt_id",
    "vcpus": "vcpus",
    "memory": "memory_kib",
    # The collector's last tick: "which VM is busy?" (domains not running come last).
    "cpu": "usage__cpu_pct",
    "used": "usage__memory_used_kib",
}


class KeptSelect(forms.Select):
    """A select whose HTML is rendered once per (name, value, attributes, choices,
    language) and kept. Django renders each option through a template; the activity
    page's two selects of ~35 options cost more than the rest of the page together."""

    _kept: dict[tuple, str] = {}
    _lock = threading.Lock()
    KEPT = 512

    def render(self, name, value, attrs=None, renderer=None):
        key = (
            name, str(value), tuple(sorted({**self.attrs, **(attrs or {})}.items())),
            tuple((str(k), str(v)) for k, v in self.choices), get_language(),
        )  # fmt: skip
        html = self._kept.get(key)
        if html is None:
            html = super().render(name, value, attrs, renderer)
            with self._lock:
                if len(self._kept) >= self.KEPT:  # a bound: URLs are anyone's to make
                    self._kept.clear()
                self._kept[key] = html
        return html


class LenientMultipleChoiceField(forms.MultipleChoiceField):
    """Drops unknown values instead of failing the whole field."""

    def to_python(self, value) -> list[str]:
        return [v for v in super().to_python(value) if self.valid_value(v)]


class DomainFilterForm(forms.Form):
    q = forms.CharField(
        label=_("Search"),
        required=False,
        max_length=200,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": _("name, UUID or ID"), "autocomplete": "off"}
        ),
    )
    f = LenientMultipleChoiceField(
        label=_("Filters"),
        required=False,
        choices=[(key, label) for key, (label, _q) in LIST_FILTERS.items()],
    )
    host = forms.ChoiceField(label=_("Host"), required=False, widget=KeptSelect)
    team = forms.ChoiceField(label=_("Team"), required=False, widget=KeptSelect)
    gone = forms.BooleanField(label=_("Show gone VMs"), required=False)
    sort = forms.ChoiceField(
        required=False,
        choices=[(k, k) for k in DOMAIN_SORTS] + [(f"-{k}", f"-{k}") for k in DOMAIN_SORTS],
    )

    def __init__(self, data, hosts: list[str], teams: list[tuple[str, str]]):
        """`hosts`: names; `teams`: (slug, name) pairs."""
        super().__init__(data)
        self.fields["host"].choices = [("", _("all hosts"))] + [(h, h) for h in hosts]
        self.fields["team"].choices = [("", _("all teams")), *teams]

    def value(self, name: str, default=None):
        """The cleaned value of `name`, or `default` when missing or invalid."""
        if not self.is_valid() and name in self.errors:
            return default
        return self.cleaned_data.get(name, default) or default

    @staticmethod
    @lru_cache(maxsize=1024)
    def values_of(query: str, hosts: tuple[str, ...], teams: tuple[tuple[str, str], ...]):
        """The cleaned values of the form for `query` (a query string) and these choices,
        read-only: what the list's query is built from. Parsed once per (query, choices)
        and kept (binding and cleaning a form was a fifth of a kept list page's time); the
        form itself is made only when its HTML is rendered."""
        form = DomainFilterForm(QueryDict(query), list(hosts), list(teams))
        values = {name: form.value(name) for name in form.fields}
        values["f"] = tuple(values["f"] or ())
        return MappingProxyType(values)

    @staticmethod
    def filter_groups(chosen) -> list[dict]:
        """The checkboxes of the fourteen filters, grouped as libvirt groups them; `chosen`:
        the ticked keys."""
        groups = []
        for index, group in enumerate(LIST_FILTER_GROUPS):
            title = FILTER_GROUP_TITLES[index] if index < len(FILTER_GROUP_TITLES) else ""
            options = [
                {"key": key, "label": label, "checked": key in chosen}
                for key, (label, _q) in group.items()
            ]
            groups.append({"title": title, "options": options})
        return groups


class ActivityFilterForm(forms.Form):
    team = forms.ChoiceField(label=_("Team"), required=False, widget=KeptSelect)
    user = forms.CharField(label=_("User"), required=False, max_length=150)
    domain = forms.CharField(
        label=_("VM"),
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"placeholder": _("name or UUID")}),
    )
    kind = forms.ChoiceField(
        label=_("Action"),
        required=False,
        choices=[("", _("any action")), *OperationKind.choices],
        widget=KeptSelect,
    )
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("any status")), *OperationStatus.choices],
        widget=KeptSelect,
    )
    quiet = forms.BooleanField(label=_("Hide sign-ins and sign-outs"), required=False)

    def __init__(self, data, teams: list[tuple[str, str]]):
        """`teams`: (slug, name) pairs."""
        super().__init__(data)
        self.fields["team"].choices = [("", _("all teams")), *teams]

    def value(self, name: str) -> str:
        if not self.is_valid() and name in self.errors:
            return ""
        value = self.cleaned_data.get(name)
        if isinstance(value, bool):
            return "1" if value else ""
        return (value or "").strip()

    @staticmethod
    @lru_cache(maxsize=1024)
    def values_of(query: str, teams: tuple[tuple[str, str], ...]):
        """The cleaned values for `query` and these team choices, read-only, parsed once
        per (query, choices) and kept, as `DomainFilterForm.values_of`."""
        form = ActivityFilterForm(QueryDict(query), list(teams))
        return MappingProxyType({name: form.value(name) for name in form.fields})


class HostForm(forms.ModelForm):
    class Meta:
        model = Host
        formfield_callback = panel_fields.formfield
        fields = [
            "name", "uri", "enabled", "save_dir", "migration_uri", "migration_address",
            "console_address", "allowed_paths", "allow_hostdev", "celery_queue",
        ]  # fmt: skip
        help_texts = {
            "name": _("A short label used in URLs: letters, digits, - and _."),
            "uri": _(
                "qemu+ssh://root@kvm1/system, qemu+tls://…/system, qemu+tcp://…/system or "
                "qemu:///system. The panel connects to check it."
            ),
            "enabled": _("A disabled host is not watched and takes no operations."),
            "save_dir": _(
                "The folder saved images go to, as the host sees it. Users name the file, "
                "never the folder. Blank: saving is off on this host."
            ),
            "migration_uri": _(
                "How other hosts' libvirtd reach this one for peer-to-peer migration, "
                "e.g. qemu+tcp://10.0.0.2/system. Blank: the URI above."
            ),
            "migration_address": _(
                "The address migration data is sent to on this host, where the hosts need "
                "saying (e.g. 10.0.0.2)."
            ),
            "console_address": _(
                "This host's IP address on the management network, e.g. 10.0.0.2: VMs made "
                "from templates show their screen there, and the console proxy connects to "
                "it (keep that network to the panel's machines). Blank: screens stay on the "
                "host's own 127.0.0.1, which the proxy reaches only for a host on the "
                "panel's machine (a qemu:///system or unix-socket URI)."
            ),
            "allowed_paths": _(
                "One folder a line. A team admin's XML edits and VMs made from templates may "
                "use host files only there and in the host's storage pools (disks, ISOs, "
                "kernels, firmware, serial logs). Superusers may use any path."
            ),
            "allow_hostdev": _(
                "Whether team admins may give a VM a PCI or USB device of this host."
            ),
            "celery_queue": _(
                "A name such as rack-2: saving, restoring, hibernating, moving and cloning "
                "VMs of this host are then run only by the workers started for that queue "
                "(celery worker -Q celery,rack-2), e.g. on a machine near the host. Blank: "
                "any worker. Quick actions always run on any worker."
            ),
        }
        widgets = {
            "uri": forms.TextInput(attrs={"size": 60}),
            "save_dir": forms.TextInput(attrs={"size": 60}),
            "migration_uri": forms.TextInput(attrs={"size": 60}),
        }

    def clean_uri(self) -> str:
        uri = self.cleaned_data["uri"].strip()
        problem = host_uri_problem(uri)
        if problem:
            raise forms.ValidationError(problem)
        return uri

    def clean_migration_uri(self) -> str:
        uri = self.cleaned_data["migration_uri"].strip()
        problem = host_uri_problem(uri) if uri else None
        if problem:
            raise forms.ValidationError(problem)
        return uri

    def clean_migration_address(self) -> str:
        address = self.cleaned_data["migration_address"].strip()
        problem = listen_address_problem(address)
        if problem:
            raise forms.ValidationError(problem)
        return address

    def clean_console_address(self) -> str:
        address = self.cleaned_data["console_address"].strip()
        problem = console_address_problem(address)
        if problem:
            raise forms.ValidationError(problem)
        return address

    def clean_allowed_paths(self) -> str:
        lines = [line.strip() for line in self.cleaned_data["allowed_paths"].splitlines()]
        lines = [line for line in lines if line]
        for line in lines:
            if not line.startswith("/") or ".." in line.split("/"):
                raise forms.ValidationError(
                    _("%(line)s: an absolute folder without “..”, please.") % {"line": line}
                )
        return "\n".join(lines)

    def clean_save_dir(self) -> str:
        path = self.cleaned_data["save_dir"].strip()
        if path and (not path.startswith("/") or "/../" in f"{path}/"):
            raise forms.ValidationError(_("An absolute folder without “..”, please."))
        return path.rstrip("/")


class MembershipForm(forms.Form):
    username = forms.CharField(label=_("Username"), max_length=150)
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.VIEWER)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(
                _("There is no user named “%(username)s”."), params={"username": username}
            )
        self.cleaned_data["member"] = user
        return username


class AssignForm(forms.Form):
    team = panel_fields.ModelChoiceField(
        label=_("Team"),
        queryset=Team.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label=_("(no team: superusers only)"),
    )


class SaveForm(forms.Form):
    image_name = forms.CharField(
        label=_("Image name"),
        max_length=100,
        help_text=_("Letters, digits, dots, dashes and underscores; “.save” is added."),
    )


class SnapshotCreateForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        required=False,
        max_length=100,
        help_text=_("Blank: the date and time, e.g. snapshot-2026-11-29-153000."),
    )
    description = forms.CharField(
        label=_("Description"),
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("What it is for, e.g. “before the upgrade to version 5”."),
    )
    disk_only = forms.TypedChoiceField(
        label=_("What it keeps"),
        choices=[
            (
                "",
                _(
                    "Everything: the disks, and the memory of a running VM (it comes back "
                    "running where it was). Needs qcow2 disks."
                ),
            ),
            ("yes", _("The disks only, in new files beside them (disk-only). Where the host can.")),
        ],  # fmt: skip
        coerce=bool,
        empty_value=False,
        required=False,
        widget=forms.RadioSelect,
    )
    quiesce = forms.BooleanField(
        label=_("Ask the guest agent to freeze the file systems first (disk-only)"),
        required=False,
    )


class SnapshotRevertForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.HiddenInput)
    then = forms.ChoiceField(
        label=_("Afterwards the VM is"),
        choices=[
            ("", _("as the snapshot holds it")),
            ("running", _("running")),
            ("paused", _("paused")),
        ],
        required=False,
        widget=forms.RadioSelect,
    )
    force = forms.BooleanField(
        label=_("Force (only when libvirt asks for it: see below)"), required=False
    )


class SnapshotDeleteForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.HiddenInput)
    mode = forms.ChoiceField(
        label=_("Delete"),
        choices=[
            ("one", _("this snapshot (its children stay, under its parent)")),
            ("with_children", _("this snapshot and all its children")),
            ("children_only", _("only its children (this one stays)")),
        ],
        initial="one",
        widget=forms.RadioSelect,
    )


class RestoreForm(forms.Form):
    """The restore confirmation's button: a POST without it (an old page's button) only
    shows the confirmation again."""

    confirm = forms.BooleanField(widget=forms.HiddenInput)


# Each migration flag of the guide, with what it does in one line.
MIGRATION_FLAG_HELP = {
    "LIVE": _("Keep the guest running while its memory is copied (no downtime but a pause)."),
    "PEER2PEER": _("The source host talks to the destination itself, not through the panel."),
    "TUNNELLED": _("Send the data through libvirtd's own connection (needs peer-to-peer)."),
    "PERSIST_DEST": _("Define the VM on the destination so it outlives a power-off there."),
    "UNDEFINE_SOURCE": _("Remove the VM's definition from the source once it has moved."),
    "PAUSED": _("Leave the VM paused on the destination."),
    "NON_SHARED_DISK": _("Copy whole disks to the destination (no shared storage)."),
    "NON_SHARED_INC": _("Copy only what differs from a shared backing image."),
    "CHANGE_PROTECTION": _("Refuse changes to the VM's configuration while it moves."),
    "UNSAFE": _("Migrate even where libvirt thinks it unsafe (e.g. disk caching)."),
    "OFFLINE": _("Move only the definition of a shut-off VM; nothing runs."),
}

# The plain choices people make first, and the flags each stands for. The flags they do
# not cover are the "Advanced" fold's, for team admins and superusers; everyone else moves
# with the defaults there (the VM then belongs to the destination).
MIGRATION_HOW = {
    "live": frozenset({"LIVE"}),
    "paused": frozenset(),
    "offline": frozenset({"OFFLINE"}),
}
COPY_DISKS_FLAG = "NON_SHARED_DISK"
PLAIN_MIGRATION_FLAGS = frozenset({"LIVE", "OFFLINE", COPY_DISKS_FLAG})
ADVANCED_MIGRATION_FLAGS = tuple(k for k in MIGRATION_FLAG_HELP if k not in PLAIN_MIGRATION_FLAGS)
DEFAULT_ADVANCED_FLAGS = DEFAULT_MIGRATION_FLAGS - PLAIN_MIGRATION_FLAGS


class MigrateForm(forms.Form):
    destination = panel_fields.ModelChoiceField(
        label=_("Move to host"),
        queryset=Host.objects.none(),
        to_field_name="name",
        required=False,
        empty_label=_("(choose a host)"),
    )
    how = forms.ChoiceField(
        label=_("How"),
        required=False,
        widget=forms.RadioSelect,
        choices=[
            ("live", _("Move while it runs: the guest keeps working and stops only for a "
                       "moment at the end.")),
            ("paused", _("Pause it for the move: simpler, but the guest stops until it has "
                         "arrived.")),
            ("offline", _("Move only its definition: for a VM that is shut off.")),
        ],
    )  # fmt: skip
    copy_disks = forms.BooleanField(
        label=_("Also copy the disks"),
        required=False,
        help_text=_("Needed when the two hosts do not share storage; takes longer."),
    )
    bandwidth_mib_s = panel_fields.IntegerField(
        label=_("Limit the speed (MiB/s)"),
        min_value=0,
        max_value=100000,
        initial=0,
        required=False,
        help_text=_("0 for no limit. A limit leaves room on the network for others."),
    )
    new_name = forms.CharField(
        label=_("New name on the destination"),
        required=False,
        max_length=100,
        help_text=_("Blank: it keeps its name."),
    )
    # Advanced (team admins and superusers).
    destination_uri = forms.CharField(
        label=_("Or a destination URI"),
        required=False,
        max_length=500,
        help_text=_("Superusers only: any libvirt URI, instead of one of the panel's hosts."),
    )
    flags = forms.MultipleChoiceField(
        label=_("libvirt flags"),
        required=False,
        choices=[(k, k) for k in MIGRATION_FLAG_HELP],
        widget=forms.CheckboxSelectMultiple,
    )
    migrate_uri = forms.CharField(
        label=_("Migration URI"),
        required=False,
        max_length=200,
        help_text=_("Where the data goes, e.g. tcp://10.0.0.2 (blank: the host's setting)."),
    )
    listen_address = forms.CharField(
        label=_("Listen address"),
        required=False,
        max_length=100,
        help_text=_("The address the destination listens on (blank: the host's setting)."),
    )

    ADVANCED_FIELDS = ("destination_uri", "flags", "migrate_uri", "listen_address")

    def __init__(self, data, domain, user, advanced: bool):
        super().__init__(data)
        self.advanced = advanced
        self.fields["destination"].queryset = Host.objects.filter(enabled=True).exclude(
            pk=domain.host_id
        )
        # Only the ways that fit the VM's state now (the service checks again on submit).
        fitting = ("live", "paused") if domain.is_active else ("offline",)
        how = self.fields["how"]
        how.choices = [(k, label) for k, label in how.choices if k in fitting]
        how.initial = fitting[0]
        self.fields["flags"].initial = sorted(DEFAULT_ADVANCED_FLAGS)
        if not user.is_superuser:
            del self.fields["destination_uri"]

    def clean_destination_uri(self) -> str:
        uri = self.cleaned_data["destination_uri"].strip()
        problem = host_uri_problem(uri) if uri else None
        if problem:
            raise forms.ValidationError(problem)
        return uri

    def clean_migrate_uri(self) -> str:
        uri = self.cleaned_data["migrate_uri"].strip()
        problem = migrate_uri_problem(uri)
        if problem:
            raise forms.ValidationError(problem)
        if uri and not self.advanced:
            raise forms.ValidationError(_("Only a team admin may set the migration URI."))
        return uri

    def clean_listen_address(self) -> str:
        address = self.cleaned_data["listen_address"].strip()
        problem = listen_address_problem(address)
        if problem:
            raise forms.ValidationError(problem)
        if address and not self.advanced:
            raise forms.ValidationError(_("Only a team admin may set the listen address."))
        return address

    def clean_flags(self) -> list[str]:
        flags = self.cleaned_data["flags"]
        beyond = sorted(set(flags) - PLAIN_MIGRATION_FLAGS - DEFAULT_ADVANCED_FLAGS)
        if beyond and not self.advanced:
            raise forms.ValidationError(
                _("Only a team admin may choose these libvirt flags: %(flags)s."),
                params={"flags": ", ".join(beyond)},
            )
        return flags

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("destination") and not cleaned.get("destination_uri"):
            raise forms.ValidationError(_("Choose a destination."))
        # The flags libvirt gets: the plain choices', then the advanced fold's ticks (its
        # defaults for whoever does not see it). A post with raw flags and no plain choice
        # (scripts, older pages) is taken as it is.
        flags = set(cleaned.get("flags") or ())
        how = cleaned.get("how")
        if how:
            flags |= MIGRATION_HOW[how]
            if not self.advanced:
                flags |= DEFAULT_ADVANCED_FLAGS
        if cleaned.get("copy_disks"):
            flags.add(COPY_DISKS_FLAG)
        cleaned["flags"] = sorted(flags)
        return cleaned

    @property
    def flag_rows(self):
        """The advanced fold's flags, ticked as posted or by default."""
        checked = set(self["flags"].value() or [])
        return [
            {"name": k, "help": MIGRATION_FLAG_HELP[k], "checked": k in checked}
            for k in ADVANCED_MIGRATION_FLAGS
        ]


class ResizeForm(forms.Form):
    """vCPUs and memory with their maximums; the service checks every limit (and records
    a refusal), so the fields only insist on whole numbers of a sane size."""

    vcpus = panel_fields.IntegerField(label=_("vCPUs"), max_value=1_000_000)
    vcpus_max = panel_fields.IntegerField(
        label=_("Maximum vCPUs"),
        max_value=1_000_000,
        help_text=_("Saved configuration only; takes effect at the next boot."),
    )
    memory_mib = panel_fields.IntegerField(label=_("Memory (MiB)"), max_value=2**40)
    memory_max_mib = panel_fields.IntegerField(
        label=_("Maximum memory (MiB)"),
        max_value=2**40,
        help_text=_("Saved configuration only; takes effect at the next boot."),
    )
    live = forms.BooleanField(label=_("Change the running VM now (live)"), required=False)
    config = forms.BooleanField(
        label=_("Change the saved configuration (used from the next boot)"), required=False
    )


# Characters XML 1.0 does not allow in a document: C0 controls but tab, newline and
# carriage return, and U+FFFE, U+FFFF (lxml refuses them with a ValueError, not a parse
# error; PostgreSQL refuses the NUL byte).
_NOT_XML_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class XmlEditForm(forms.Form):
    xml = forms.CharField(
        label=_("XML definition"),
        strip=False,
        widget=forms.Textarea(attrs={"rows": 30, "cols": 100, "spellcheck": "false"}),
    )

    def clean_xml(self) -> str:
        xml = self.cleaned_data["xml"]
        bad = _NOT_XML_CHARS.search(xml)
        if bad:
            raise forms.ValidationError(
                _("Character U+%(code)04X at position %(pos)s is not allowed in XML."),
                params={"code": ord(bad.group()), "pos": bad.start() + 1},
            )
        return xml
