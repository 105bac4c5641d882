"""Templates to build domains from, self-service requests, team quotas, notifications.

Data only: the XML is built from a template by `domains.domxml` (through
`template_to_spec`), never here.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from domains import domxml
from domains.models import Host, Operation, Team


def _choices(values: tuple[str, ...], labels: dict | None = None) -> list[tuple[str, str]]:
    """Choices from the values `domxml.validate_spec` accepts: a template can hold only what
    builds, and a value domxml learns is offered here without a second list to update."""
    labels = labels or {}
    return [(value, labels.get(value, value)) for value in values]


class Method(models.TextChoices):
    CDROM = "cdrom", _("CD-ROM / ISO install")
    PXE = "pxe", _("PXE boot")
    KERNEL = "kernel", _("direct kernel boot")
    DISK = "disk", _("existing disk image")


class Template(models.Model):
    """What a new domain is made of; superusers manage them."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.TextField(_("description"), blank=True)
    hosts = models.ManyToManyField(Host, related_name="templates", verbose_name=_("target hosts"))
    method = models.CharField(_("install method"), max_length=8, choices=Method.choices)
    # kvm needs hardware virtualisation; qemu (TCG) runs anywhere, slowly.
    # A host that does not run the type gets its own first (a kvm template makes a qemu
    # domain on a host without KVM): see provisioning.services.template_to_spec.
    domain_type = models.CharField(
        max_length=8,
        choices=_choices(
            domxml.DOMAIN_TYPES, {"qemu": _("qemu (TCG)"), "test": _("test (libvirt test driver)")}
        ),
        default="kvm",
    )
    # Resources: the defaults a creation uses, and the bounds of a request.
    vcpus_max = models.PositiveIntegerField(_("maximum vCPUs"), default=2)
    vcpus_current = models.PositiveIntegerField(_("vCPUs"), default=1)
    vcpu_placement = models.CharField(
        max_length=8, choices=_choices(domxml.VCPU_PLACEMENTS), default="static"
    )
    cpuset = models.CharField(_("cpuset"), max_length=100, blank=True)
    memory_mib = models.PositiveIntegerField(_("memory (MiB)"), default=1024)
    current_memory_mib = models.PositiveIntegerField(_("current memory (MiB)"), default=1024)
    hotplug_memory_mib = models.PositiveIntegerField(
        _("maximum memory for hot-plug (MiB)"), null=True, blank=True
    )
    memory_slots = models.PositiveIntegerField(_("memory slots"), null=True, blank=True)
    boot_menu = models.BooleanField(_("boot menu"), default=False)
    boot_menu_timeout_ms = models.PositiveIntegerField(null=True, blank=True)
    firmware = models.CharField(
        max_length=8,
        choices=_choices(domxml.FIRMWARES, {"bios": "BIOS", "uefi": "UEFI"}),
        default="bios",
    )
    loader = models.CharField(_("UEFI loader"), max_length=500, blank=True)
    nvram_template = models.CharField(_("nvram template"), max_length=500, blank=True)
    smbios_mode = models.CharField(
        max_length=10,
        blank=True,
        choices=_choices(domxml.SMBIOS_MODES, {"": _("libvirt's default")}),
    )
    bios_useserial = models.BooleanField(_("BIOS output on serial"), default=False)
    bios_reboot_timeout_ms = models.IntegerField(null=True, blank=True)
    clock_offset = models.CharField(
        max_length=12, choices=_choices(domxml.CLOCK_OFFSETS), default="utc"
    )
    on_poweroff = models.CharField(
        max_length=20, choices=_choices(domxml.POWEROFF_ACTIONS), default="destroy"
    )
    on_reboot = models.CharField(
        max_length=20, choices=_choices(domxml.REBOOT_ACTIONS), default="restart"
    )
    on_crash = models.CharField(
        max_length=20, choices=_choices(domxml.CRASH_ACTIONS), default="destroy"
    )
    # Method-specific sources, as the target hosts' libvirtd sees the paths.
    iso_path = models.CharField(_("ISO path"), max_length=500, blank=True)
    kernel = models.CharField(max_length=500, blank=True)
    initrd = models.CharField(max_length=500, blank=True)
    cmdline = models.CharField(_("kernel command line"), max_length=1000, blank=True)
    base_image = models.CharField(_("base image path"), max_length=500, blank=True)
    # The domain's own disk.
    disk_gib = models.PositiveIntegerField(_("disk size (GiB)"), default=10)
    disk_format = models.CharField(
        max_length=8, choices=_choices(domxml.DISK_FORMATS), default="qcow2"
    )
    disk_bus = models.CharField(max_length=8, choices=_choices(domxml.DISK_BUSES), default="virtio")
    # Devices.
    # Blank: no network interface.
    net_type = models.CharField(
        max_length=10, blank=True, choices=_choices(domxml.INTERFACE_TYPES), default="network"
    )
    net_source = models.CharField(max_length=100, blank=True, default="default")
    # Free text (virtio, e1000, rtl8139 …): domxml checks the form of a model name, not a
    # list, since QEMU's list depends on its version and the machine type.
    net_model = models.CharField(max_length=20, default="virtio")
    vnc = models.BooleanField(_("VNC graphics"), default=True)
    tablet = models.BooleanField(_("USB tablet"), default=True)
    balloon = models.BooleanField(_("memory balloon"), default=True)
    balloon_period = models.PositiveIntegerField(_("balloon stats period (s)"), default=10)
    serial_console = models.BooleanField(_("serial console"), default=True)
    # The serial console also written to /var/log/libvirt/<name>-serial.log on the host.
    serial_log = models.BooleanField(_("log the serial console to a file"), default=False)
    # What a self-service request may ask for.
    min_vcpus = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_vcpus = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1)])
    min_memory_mib = models.PositiveIntegerField(default=256)
    max_memory_mib = models.PositiveIntegerField(default=4096)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Quota(models.Model):
    """A team's limits. No row: no limits."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="quota")
    max_domains = models.PositiveIntegerField(_("VMs"), default=10)
    max_vcpus = models.PositiveIntegerField(_("vCPUs"), default=16)
    max_memory_mib = models.PositiveIntegerField(_("memory (MiB)"), default=16384)
    max_disk_gib = models.PositiveIntegerField(_("disk (GiB)"), default=200)

    def __str__(self) -> str:
        return f"quota of {self.team}"


class RequestState(models.TextChoices):
    SUBMITTED = "submitted", _("submitted")
    APPROVED = "approved", _("approved")
    REJECTED = "rejected", _("rejected")
    PROVISIONING = "provisioning", _("provisioning")
    READY = "ready", _("ready")
    FAILED = "failed", _("failed")


# Requests whose resources count against the quota although no Domain row shows them yet.
PENDING_STATES = (RequestState.APPROVED, RequestState.PROVISIONING)


class VMRequest(models.Model):
    """A team member's request for a new domain from a template."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="requests")
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="requests")
    name = models.CharField(_("name"), max_length=64)
    vcpus = models.PositiveIntegerField(_("vCPUs"))
    memory_mib = models.PositiveIntegerField(_("memory (MiB)"))
    purpose = models.TextField(_("purpose"))
    state = models.CharField(
        max_length=16, choices=RequestState.choices, default=RequestState.SUBMITTED
    )
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.PROTECT)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"request #{self.pk} {self.name} ({self.state})"


class Notification(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    text = models.CharField(max_length=500)
    url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.text
