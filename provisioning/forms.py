"""Forms of the provisioning pages; choices narrowed to what the user may pick."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from domains.models import Host, teams_for
from vmpanel import fields as panel_fields

from .models import Quota, Template


class TemplateForm(forms.ModelForm):
    class Meta:
        model = Template
        fields = [f.name for f in Template._meta.get_fields() if f.concrete and f.editable
                  and f.name not in ("id", "created_at")]  # fmt: skip
        widgets = {"hosts": forms.CheckboxSelectMultiple}
        formfield_callback = panel_fields.formfield


class QuotaForm(forms.ModelForm):
    # The team's own setting, edited with its limits.
    max_snapshots_per_domain = panel_fields.IntegerField(
        label=_("snapshots per domain"),
        min_value=0,
        max_value=1000,
        required=False,
        help_text=_("How many snapshots each of the team's VMs may hold. Blank: unchanged."),
    )

    class Meta:
        model = Quota
        fields = ["max_domains", "max_vcpus", "max_memory_mib", "max_disk_gib"]
        formfield_callback = panel_fields.formfield

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["max_snapshots_per_domain"].initial = team.max_snapshots_per_domain


class RequestForm(forms.Form):
    team = panel_fields.ModelChoiceField(queryset=None, label=_("team"))
    template = panel_fields.ModelChoiceField(queryset=Template.objects.all(), label=_("template"))
    name = forms.CharField(max_length=64, label=_("name"))
    vcpus = panel_fields.IntegerField(min_value=1, label=_("vCPUs"))
    memory_mib = panel_fields.IntegerField(min_value=1, label=_("memory (MiB)"))
    purpose = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label=_("purpose"))

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for(user, "view")


class ApproveForm(forms.Form):
    host = panel_fields.ModelChoiceField(
        queryset=Host.objects.none(), required=False, label=_("host")
    )

    def __init__(self, template: Template, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].queryset = template.hosts.filter(enabled=True)


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=500, label=_("reason"))


class CreateForm(forms.Form):
    team = panel_fields.ModelChoiceField(queryset=None, label=_("team"))
    host = panel_fields.ModelChoiceField(queryset=Host.objects.none(), label=_("host"))
    name = forms.CharField(max_length=64, label=_("name"))
    vcpus = panel_fields.IntegerField(min_value=1, label=_("vCPUs"))
    memory_mib = panel_fields.IntegerField(min_value=1, label=_("memory (MiB)"))
    persistent = forms.BooleanField(required=False, initial=True, label=_("persistent"))
    start = forms.BooleanField(required=False, initial=True, label=_("start it"))
    paused = forms.BooleanField(required=False, label=_("started paused"))
    autodestroy = forms.BooleanField(
        required=False,
        label=_("destroy automatically when the panel's connection closes (transient only)"),
    )

    def __init__(self, user, template: Template, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for(user, "admin")
        self.fields["host"].queryset = template.hosts.filter(enabled=True)
        self.fields["vcpus"].initial = template.vcpus_current
        self.fields["memory_mib"].initial = template.memory_mib


class CloneForm(forms.Form):
    name = forms.CharField(
        label=_("Name of the copy"),
        max_length=63,
        help_text=_("Letters, digits, '.', '_' and '-', starting with a letter or digit."),
    )
