"""Forms of the panel: filters read by GET, and the few small write forms.

Filter forms never fail a page: a value that does not validate is simply not applied, so a
hand-edited URL shows the unfiltered list instead of an error.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from .models import (
    LIST_FILTER_GROUPS,
    LIST_FILTERS,
    Host,
    OperationKind,
    OperationStatus,
    Role,
    Team,
)

# Titles of libvirt's filter groups, in the order of models.LIST_FILTER_GROUPS.
FILTER_GROUP_TITLES = [
    _("Activity"),
    _("Persistence"),
    _("State"),
    _("Managed save"),
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
}


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
    host = forms.ChoiceField(label=_("Host"), required=False)
    team = forms.ChoiceField(label=_("Team"), required=False)
    gone = forms.BooleanField(label=_("Show gone domains"), required=False)
    sort = forms.ChoiceField(
        required=False,
        choices=[(k, k) for k in DOMAIN_SORTS] + [(f"-{k}", f"-{k}") for k in DOMAIN_SORTS],
    )

    def __init__(self, data, hosts, teams):
        super().__init__(data)
        self.fields["host"].choices = [("", _("all hosts"))] + [(h.name, h.name) for h in hosts]
        self.fields["team"].choices = [("", _("all teams"))] + [(t.slug, t.name) for t in teams]

    def value(self, name: str, default=None):
        """The cleaned value of `name`, or `default` when missing or invalid."""
        if not self.is_valid() and name in self.errors:
            return default
        return self.cleaned_data.get(name, default) or default

    def filter_groups(self) -> list[dict]:
        """The checkboxes of the fourteen filters, grouped as libvirt groups them."""
        chosen = set(self.value("f", []))
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
    team = forms.ChoiceField(label=_("Team"), required=False)
    user = forms.CharField(label=_("User"), required=False, max_length=150)
    domain = forms.CharField(
        label=_("Domain"),
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"placeholder": _("name or UUID")}),
    )
    kind = forms.ChoiceField(
        label=_("Kind"),
        required=False,
        choices=[("", _("any kind")), *OperationKind.choices],
    )
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("any status")), *OperationStatus.choices],
    )

    def __init__(self, data, teams):
        super().__init__(data)
        self.fields["team"].choices = [("", _("all teams"))] + [(t.slug, t.name) for t in teams]

    def value(self, name: str) -> str:
        if not self.is_valid() and name in self.errors:
            return ""
        return (self.cleaned_data.get(name) or "").strip()


class HostForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = ["name", "uri", "enabled"]
        help_texts = {
            "name": _("A short label used in URLs: letters, digits, - and _."),
            "uri": _("For example qemu+ssh://root@kvm1/system. The panel connects to check it."),
            "enabled": _("A disabled host is not watched and takes no operations."),
        }
        widgets = {"uri": forms.TextInput(attrs={"size": 60})}


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
    team = forms.ModelChoiceField(
        label=_("Team"),
        queryset=Team.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label=_("(no team: superusers only)"),
    )
