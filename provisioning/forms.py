"""Forms of the provisioning pages; choices narrowed to what the user may pick."""

from __future__ import annotations

import copy

from django import forms
from django.core.validators import MinValueValidator
from django.forms.models import construct_instance
from django.utils.translation import gettext_lazy as _

from domains.models import Host, teams_for
from vmpanel import fields as panel_fields

from .models import Method, Quota, Template
from .services import template_problems

# The template form's sections, in order, and the fields of each. The install method is a
# section of its own: its choices, each with the fields only that method uses.
TEMPLATE_SECTIONS = (
    (_("Basics"), ("name", "description", "hosts", "domain_type")),
    (_("Resources"), ("vcpus_current", "vcpus_max", "vcpu_placement", "cpuset", "memory_mib",
                      "current_memory_mib", "hotplug_memory_mib", "memory_slots")),
    (_("Firmware and boot"), ("firmware", "loader", "nvram_template", "smbios_mode",
                              "boot_menu", "boot_menu_timeout_ms", "bios_useserial",
                              "bios_reboot_timeout_ms", "clock_offset", "on_poweroff",
                              "on_reboot", "on_crash")),
    (_("Install method"), ("method",)),
    (_("Disks"), ("disk_gib", "disk_format", "disk_bus")),
    (_("Network"), ("net_type", "net_source", "net_model")),
    (_("Devices"), ("vnc", "tablet", "balloon", "balloon_period", "serial_console",
                    "serial_log")),
    (_("Limits for requests"), ("min_vcpus", "max_vcpus", "min_memory_mib", "max_memory_mib")),
)  # fmt: skip
# Each install method: what it does, in a line, and the fields only it uses.
METHODS = {
    Method.CDROM: (_("Boots an installer from an ISO image on the host, then the VM's own "
                     "disk."), ("iso_path",)),
    Method.PXE: (_("Boots an installer from the network (a PXE server on the VM's network); "
                   "needs a network connection."), ()),
    Method.KERNEL: (_("Boots an installer's kernel and initial RAM disk from files on the "
                      "host, then the VM's own disk."), ("kernel", "initrd", "cmdline")),
    Method.DISK: (_("Boots from an existing disk image on the host; nothing to install."),
                  ("base_image",)),
}  # fmt: skip

TEMPLATE_LABELS = {
    "name": _("Name"),
    "description": _("Description"),
    "hosts": _("Hosts"),
    "domain_type": _("Kind of virtualisation"),
    "vcpus_current": _("vCPUs"),
    "vcpus_max": _("Maximum vCPUs"),
    "vcpu_placement": _("CPU placement"),
    "cpuset": _("Host CPUs"),
    "memory_mib": _("Memory (MiB)"),
    "current_memory_mib": _("Memory in use at start (MiB)"),
    "hotplug_memory_mib": _("Maximum memory (MiB)"),
    "memory_slots": _("Memory slots"),
    "firmware": _("Firmware"),
    "loader": _("UEFI firmware file"),
    "nvram_template": _("UEFI settings template"),
    "smbios_mode": _("System information (SMBIOS)"),
    "boot_menu": _("Show a boot menu"),
    "boot_menu_timeout_ms": _("Boot menu wait (ms)"),
    "bios_useserial": _("Start-up messages on the serial console"),
    "bios_reboot_timeout_ms": _("Retry booting after (ms)"),
    "clock_offset": _("Clock"),
    "on_poweroff": _("When the VM powers off"),
    "on_reboot": _("When the VM restarts"),
    "on_crash": _("When the VM crashes"),
    "method": _("Install method"),
    "iso_path": _("ISO image"),
    "kernel": _("Kernel"),
    "initrd": _("Initial RAM disk (initrd)"),
    "cmdline": _("Kernel options"),
    "base_image": _("Disk image"),
    "disk_gib": _("Disk size (GiB)"),
    "disk_format": _("Disk format"),
    "disk_bus": _("Disk connection"),
    "net_type": _("Network connection"),
    "net_source": _("Network or bridge name"),
    "net_model": _("Network card model"),
    "vnc": _("Screen (VNC)"),
    "tablet": _("USB tablet"),
    "balloon": _("Memory balloon"),
    "balloon_period": _("Memory statistics every (s)"),
    "serial_console": _("Serial console"),
    "serial_log": _("Keep a log of the serial console"),
    "min_vcpus": _("Fewest vCPUs"),
    "max_vcpus": _("Most vCPUs"),
    "min_memory_mib": _("Least memory (MiB)"),
    "max_memory_mib": _("Most memory (MiB)"),
}
TEMPLATE_HELP = {
    "name": _("How the template is listed when people ask for a VM."),
    "description": _("A sentence on what its VMs are for, shown in the list of templates."),
    "hosts": _("The hosts its VMs may be made on."),
    "domain_type": _("KVM is fast and needs the host's hardware support; a host without it "
                     "uses QEMU, slower, instead."),
    "vcpus_current": _("The virtual CPUs a VM starts with."),
    "vcpus_max": _("The most virtual CPUs a VM can be given while running, without a "
                   "restart."),
    "vcpu_placement": _("Fixed: the VM runs on the host CPUs below (or any). Automatic: the "
                        "host chooses."),
    "cpuset": _("Which host CPUs it may run on, as in 1-4,^3,6. Empty: any."),
    "memory_mib": _("The memory a VM boots with."),
    "current_memory_mib": _("Usually the same as the memory; less lets the balloon give the "
                            "rest back to the host."),
    "hotplug_memory_mib": _("The most memory this VM can be given while running without a "
                            "restart. Empty: no more than its memory."),
    "memory_slots": _("How many memory modules can be added while running (1 to 255); "
                      "needed with a maximum memory."),
    "firmware": _("BIOS suits most systems; UEFI is needed by some newer ones and for "
                  "Secure Boot."),
    "loader": _("Only for UEFI: the path on the host of the UEFI code, such as "
                "/usr/share/OVMF/OVMF_CODE.fd."),
    "nvram_template": _("Only for UEFI: the path on the host of the file each VM's UEFI "
                        "settings start from. Empty: libvirt's default."),
    "smbios_mode": _("What the VM is told about its maker and model; libvirt's default "
                     "suits almost every system."),
    "boot_menu": _("Lets someone at the console choose what to boot from."),
    "boot_menu_timeout_ms": _("How long the boot menu waits for a choice (0 to 65535). "
                              "Empty: the default."),
    "bios_useserial": _("Shows the start-up text on the serial console too; needs the "
                        "serial console."),
    "bios_reboot_timeout_ms": _("When nothing boots, try again after this long; -1: never. "
                                "Empty: the default."),
    "clock_offset": _("UTC for Linux and most systems; local time for Windows."),
    "on_poweroff": _("What the host does when the VM's system shuts down."),
    "on_reboot": _("What the host does when the VM's system restarts."),
    "on_crash": _("What the host does when the VM's system crashes."),
    "method": _("How a new VM gets its system."),
    "iso_path": _("The path on the host of the installer's ISO image, such as "
                  "/var/lib/libvirt/images/debian.iso."),
    "kernel": _("The path on the host of the installer's kernel."),
    "initrd": _("The path on the host of the installer's initial RAM disk."),
    "cmdline": _("Options given to the kernel, such as console=ttyS0; may be empty."),
    "base_image": _("The path on the host of the disk image the VM boots from."),
    "disk_gib": _("The size of each new VM's own disk; not used with an existing disk "
                  "image."),
    "disk_format": _("qcow2 grows as it fills and allows snapshots; raw is a little faster."),
    "disk_bus": _("virtio is fastest; SATA or IDE for systems without virtio drivers."),
    "net_type": _("How the VM reaches the network. None: no network card."),
    "net_source": _("The libvirt network (such as default) or host bridge (such as br0); "
                    "not used otherwise."),
    "net_model": _("virtio is fastest; e1000 or rtl8139 for systems without virtio "
                   "drivers."),
    "vnc": _("A screen for each VM, which can be opened as a console in the panel."),
    "tablet": _("Keeps the mouse pointer in step on the screen."),
    "balloon": _("Lets the host take back memory the VM does not use, and read its memory "
                 "use."),
    "balloon_period": _("How often the VM reports its memory use; 0: never."),
    "serial_console": _("A text console, for systems without a screen and for start-up "
                        "messages."),
    "serial_log": _("Writes everything the serial console shows to a file on the host."),
    "min_vcpus": _("The fewest virtual CPUs someone may ask for."),
    "max_vcpus": _("The most virtual CPUs someone may ask for."),
    "min_memory_mib": _("The least memory someone may ask for."),
    "max_memory_mib": _("The most memory someone may ask for."),
}  # fmt: skip
# Choices in words; the values stay those `domxml` validates (models._choices).
CHOICE_WORDS = {
    "domain_type": {"kvm": _("KVM (fast)"), "qemu": _("QEMU (slower, runs anywhere)"),
                    "test": _("test (libvirt's test driver)")},
    "vcpu_placement": {"static": _("fixed"), "auto": _("automatic (the host chooses)")},
    "smbios_mode": {"emulate": _("emulated"), "host": _("copied from the host"),
                    "sysinfo": _("from the system information")},
    "clock_offset": {"utc": "UTC", "localtime": _("local time")},
    "on_poweroff": {"destroy": _("stop it"), "restart": _("start it again"),
                    "preserve": _("keep it stopped for inspection"),
                    "rename-restart": _("start it again under a new name"),
                    "coredump-destroy": _("save a memory dump, then stop it"),
                    "coredump-restart": _("save a memory dump, then start it again")},
    "disk_format": {"qcow2": _("qcow2 (grows as it fills)"), "raw": _("raw")},
    "disk_bus": {"virtio": _("virtio (fastest)"), "sata": "SATA", "ide": _("IDE (old systems)"),
                 "scsi": "SCSI"},
    "net_type": {"": _("none"), "network": _("a libvirt network"),
                 "bridge": _("a host bridge"), "user": _("user-mode (no setup, slower)"),
                 "ethernet": _("a host tap device (ethernet)")},
}  # fmt: skip
CHOICE_WORDS["on_reboot"] = CHOICE_WORDS["on_crash"] = CHOICE_WORDS["on_poweroff"]


class TemplateForm(forms.ModelForm):
    """A template in titled sections, each field with a label and a line of help. Every
    rule between fields is `services.template_problems`' (the template's own, then the
    spec's), its message beside the field it concerns."""

    class Meta:
        model = Template
        fields = [name for _title, names in TEMPLATE_SECTIONS for name in names] + [
            name for _words, names in METHODS.values() for name in names
        ]
        widgets = {
            "hosts": forms.CheckboxSelectMultiple,
            "method": forms.RadioSelect,
            "description": forms.Textarea(attrs={"rows": 2}),
        }
        labels = TEMPLATE_LABELS
        help_texts = TEMPLATE_HELP
        formfield_callback = panel_fields.formfield

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A method is always chosen: radio buttons without a "---------" one.
        self.fields["method"].choices = Method.choices
        for name, words in CHOICE_WORDS.items():
            field = self.fields[name]
            field.choices = [(value, words.get(value, label)) for value, label in field.choices]
        # Nothing is made of none: a VM has at least a vCPU and a MiB.
        for name in ("vcpus_current", "vcpus_max", "memory_mib", "current_memory_mib",
                     "min_memory_mib"):  # fmt: skip
            field = self.fields[name]
            field.min_value = 1
            field.validators.append(MinValueValidator(1))
            field.widget.attrs["min"] = 1

    def clean(self):
        data = super().clean()
        if self.errors:  # a field without a value of its own: its rules wait for one
            return data
        candidate = construct_instance(self, copy.copy(self.instance))
        for field, message in template_problems(candidate):
            self.add_error(field, message)
        return data

    def sections(self) -> list[dict]:
        """The sections as the page shows them: a title and its fields; the method's as
        its choices, each with what it does and its own fields."""
        shown = []
        for title, names in TEMPLATE_SECTIONS:
            if names == ("method",):
                choices = [
                    {"radio": radio, "words": METHODS[radio.data["value"]][0],
                     "fields": [self[n] for n in METHODS[radio.data["value"]][1]]}
                    for radio in self["method"]
                ]  # fmt: skip
                shown.append({"title": title, "method": self["method"], "choices": choices})
            else:
                shown.append({"title": title, "fields": [self[n] for n in names]})
        return shown


class QuotaForm(forms.ModelForm):
    # The team's own setting, edited with its limits.
    max_snapshots_per_domain = panel_fields.IntegerField(
        label=_("snapshots per VM"),
        min_value=0,
        max_value=1000,
        required=False,
        help_text=_("How many snapshots each of the team's VMs may hold. Blank: unchanged."),
    )

    class Meta:
        model = Quota
        fields = ["max_domains", "max_vcpus", "max_memory_mib", "max_disk_gib"]
        # Said as written: Django would capitalise the field's name into "VCPUs" (in
        # Chinese too: "VCPU 数").
        labels = {"max_vcpus": _("vCPUs")}
        formfield_callback = panel_fields.formfield

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["max_snapshots_per_domain"].initial = team.max_snapshots_per_domain


class RequestForm(forms.Form):
    team = panel_fields.ModelChoiceField(
        queryset=None,
        label=_("team"),
        empty_label=_("(choose a team)"),
        help_text=_("The VM belongs to this team and counts against its quota."),
    )
    template = panel_fields.ModelChoiceField(
        queryset=Template.objects.all(),
        label=_("template"),
        empty_label=_("(choose a template)"),
        help_text=_("What the VM is made from: its system, disk and network."),
    )
    name = forms.CharField(
        max_length=64,
        label=_("name"),
        help_text=_("Letters, digits, dots, dashes and underscores; not taken by another VM."),
    )
    # Django capitalises a label's first letter: "vCPUs" would show as "VCPUs".
    vcpus = panel_fields.IntegerField(
        min_value=1,
        label=_("number of vCPUs"),
        help_text=_("Virtual processors, within the template's limits."),
    )
    memory_mib = panel_fields.IntegerField(
        min_value=1,
        label=_("memory (MiB)"),
        help_text=_("1024 MiB is 1 GiB; within the template's limits."),
    )
    purpose = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        label=_("purpose"),
        help_text=_("What it is for: the team's admins read this before they approve."),
    )

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
    vcpus = panel_fields.IntegerField(min_value=1, label=_("number of vCPUs"))
    memory_mib = panel_fields.IntegerField(min_value=1, label=_("memory (MiB)"))
    persistent = forms.BooleanField(
        required=False,
        initial=True,
        label=_("permanent (libvirt keeps its definition while it is off)"),
    )
    start = forms.BooleanField(required=False, initial=True, label=_("start it"))
    paused = forms.BooleanField(required=False, label=_("started paused"))
    autodestroy = forms.BooleanField(
        required=False,
        label=_("destroy automatically when the panel's connection closes (temporary VMs only)"),
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
