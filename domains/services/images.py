"""Saved images: save to a named image and restore from it, libvirt's managed save, and
forgetting an image. Save, restore and managed save are long jobs with progress."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from django.db import transaction
from django.utils.translation import gettext as _

from .. import hypervisor
from ..hypervisor import HypervisorError
from ..models import (
    ACTIVE_STATUSES,
    Domain,
    Host,
    Operation,
    OperationKind,
    SavedImage,
    teams_for,
)
from .common import ActionRefused, audit, hold, queue_operation

# A saved image's file name: the user names it, the folder is the host's.
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def save_path(host: Host, image_name: str) -> str:
    """Where an image named `image_name` goes on `host`, as its libvirtd sees the path."""
    name = image_name if image_name.endswith(".save") else f"{image_name}.save"
    return f"{host.save_dir.rstrip('/')}/{name}"


def save_domain(user: User, domain: Domain, image_name: str) -> Operation:
    """Save the domain's memory to an image named `image_name` in its host's save folder.

    The domain stops; its disks are not saved, so they must stay unchanged until restore.
    """
    image_name = image_name.strip()

    def check() -> str | None:
        if not domain.host.save_dir:
            return _("Host %(host)s has no save folder; a superuser can set one.") % {
                "host": domain.host
            }
        if not _IMAGE_NAME.fullmatch(image_name):
            return _(
                "An image name uses letters, digits, dots, dashes and underscores only "
                "(at most 100), and starts with a letter or digit."
            )
        path = save_path(domain.host, image_name)
        if SavedImage.objects.filter(host=domain.host, path=path).exists():
            return _("An image named %(name)s exists already on %(host)s.") % {
                "name": image_name,
                "host": domain.host,
            }
        return None

    def locked_check(locked: Domain) -> str | None:
        # Two VMs saved to one name at once both found it free above, and libvirt writes
        # the second image over the first: so the path is held while it is checked and the
        # operation written, and a save on its way to it counts as taken.
        path = save_path(locked.host, image_name)
        hold(f"image:{locked.host_id}:{path}")
        if SavedImage.objects.filter(host_id=locked.host_id, path=path).exists():
            return _("An image named %(name)s exists already on %(host)s.") % {
                "name": image_name,
                "host": locked.host,
            }
        saving = Operation.objects.filter(
            kind=OperationKind.SAVE,
            host_id=locked.host_id,
            params__path=path,
            status__in=ACTIVE_STATUSES,
        )
        if saving.exists():
            # Not which VM, nor the operation's number: it may be another team's.
            return _(
                "An image named %(name)s is being saved on %(host)s already; choose another name."
            ) % {"name": image_name, "host": locked.host}
        return None

    return queue_operation(
        user,
        domain,
        OperationKind.SAVE,
        {"image": image_name, "path": save_path(domain.host, image_name)},
        check=check,
        locked_check=locked_check,
    )


def restore_domain(user: User, image: SavedImage) -> Operation:
    """Start the image's domain from the image (memory only; disks must be unchanged)."""
    domain = image.domain
    if domain is None:
        raise ActionRefused(_("This image's VM is unknown to the panel."), status=404)

    def check() -> str | None:
        if image.host_id != domain.host_id:
            return _("The image is on %(image_host)s but the VM is now on %(host)s.") % {
                "image_host": image.host,
                "host": domain.host,
            }
        try:
            facts = hypervisor.domain_facts(domain.host.uri, str(domain.uuid))
        except HypervisorError as exc:
            if exc.no_such_domain:
                return None  # a transient domain, saved away: restore brings it back
            return exc.message
        if facts.id is not None:
            return _("%(name)s is running already; shut it down before restoring.") % {
                "name": facts.name
            }
        return None

    return queue_operation(
        user,
        domain,
        OperationKind.RESTORE,
        {"image_id": image.pk, "path": image.path},
        check=check,
    )


def forget_saved_image(user: User, image: SavedImage) -> None:
    """Forget an image the panel made (the file goes when its host's folder is cleaned):
    operators of the image's team, and superusers."""
    if not user.is_superuser and not (
        image.team and teams_for(user, "operate").filter(pk=image.team_id).exists()
    ):
        raise ActionRefused(_("Your role does not allow this."), status=403)
    with transaction.atomic():
        audit("image_forgotten", user, image.path, team=image.team, host=image.host.name)
        image.delete()
