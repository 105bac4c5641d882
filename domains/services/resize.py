"""Changing vCPUs and memory, live and/or in the saved configuration, and their maximums."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from django.contrib.auth.models import User

from .. import hypervisor
from ..hypervisor import HypervisorError, ResizeLimits
from ..models import Domain, Operation, OperationKind
from ..rules import ResizeRequest, resize_problems
from .common import queue_operation

# Limits other rooms set on a VM's size, each `check(domain, vcpus, memory_mib)` → problems
# in words, given the counts the VM would have. Provisioning adds its team quota here when
# it loads (provisioning.apps): domains does not import provisioning. Each is asked before
# the host is, then again inside the transaction that queues the resize (the domain's row
# locked): a check that counts what other VMs use locks what it counts there (the quota
# locks the team's row), so that two resizes at once are counted one after the other.
SIZE_CHECKS: list[Callable[[Domain, int, int], list[str]]] = []


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
        problems = resize_problems(domain, limits, req)
        if not problems:
            problems = _size_problems(domain, req)
        return " ".join(problems) or None

    def locked_check(locked: Domain) -> str | None:
        return " ".join(_size_problems(locked, req)) or None

    return queue_operation(
        user, domain, OperationKind.RESIZE, asdict(req), check=check, locked_check=locked_check
    )


def _size_problems(domain: Domain, req: ResizeRequest) -> list[str]:
    """What the `SIZE_CHECKS` say of `domain` at the size `req` asks for."""
    vcpus = req.vcpus if req.vcpus is not None else domain.vcpus
    memory_mib = req.memory_mib if req.memory_mib is not None else domain.memory_kib // 1024
    problems: list[str] = []
    for size_check in SIZE_CHECKS:
        problems += size_check(domain, vcpus, memory_mib)
    return problems
