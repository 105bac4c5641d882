"""Changing vCPUs and memory, live and/or in the saved configuration, and their maximums."""

from __future__ import annotations

from dataclasses import asdict

from django.contrib.auth.models import User

from .. import hypervisor
from ..hypervisor import HypervisorError, ResizeLimits
from ..models import Domain, Operation, OperationKind
from ..rules import ResizeRequest, resize_problems
from .common import queue_operation


def resize_limits(domain: Domain) -> ResizeLimits:
    """The domain's counts and maximums, live and saved, read from its host now."""
    return hypervisor.resize_limits(domain.host.uri, str(domain.uuid))


def resize_domain(user: User, domain: Domain, req: ResizeRequest) -> Operation:
    """Change the vCPUs and memory, live and/or in the saved configuration, and their
    maximums (saved configuration only); every limit checked in plain words first
    (`rules.resize_problems`). The task plans the calls again against the state it finds."""

    def check() -> str | None:
        try:
            limits = resize_limits(domain)
        except HypervisorError as exc:
            return exc.message
        return " ".join(resize_problems(domain, limits, req)) or None

    return queue_operation(user, domain, OperationKind.RESIZE, asdict(req), check=check)
