"""The panel's pages.

Views stay thin (DESIGN rule 2): find what the user may see, read a form, call one service,
render. Every page works without JavaScript; when htmx asks (`request.htmx`), the same view
answers with the fragment that changed only (NetBox's `htmx_partial`).
"""

from __future__ import annotations

import re
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.functional import SimpleLazyObject
from django.utils.html import escape
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from vmpanel.http import raise_for_refusal, see_other

from . import audit_words, hypervisor, kept_pages, kept_sql, screens, uptime, usage, usage_data
from .forms import (
    DOMAIN_SORTS,
    ActivityFilterForm,
    AssignForm,
    DomainFilterForm,
    HostForm,
    MembershipForm,
    MigrateForm,
    ResizeForm,
    RestoreForm,
    SaveForm,
    SnapshotCreateForm,
    SnapshotDeleteForm,
    SnapshotRevertForm,
    XmlEditForm,
)
from .hypervisor import HypervisorError
from .kinds import BUTTON_KINDS, KINDS, panel_actions, wrong_state_message
from .leases import host_owners
from .liveness import worker_alive
from .models import (
    ACTION_ROLES,
    AuditEvent,
    Domain,
    Host,
    Membership,
    Operation,
    OperationKind,
    OperationStatus,
    Role,
    SavedImage,
    Team,
    actions_on,
    is_team_admin,
    teams_for,
)
from .rows import DomainRow, OperationRow
from .rules import MigrationChoice, ResizeRequest
from .services import (
    consoles,
    hosts,
    images,
    migration,
    operations,
    resize,
    snapshots,
    xmledit,
)
from .services.common import ActionRefused, require

PAGE_SIZE = 50
HISTORY_SIZE = 50
# What a domain page shows of each saved image.
SAVED_IMAGE_VALUES = (
    "pk", "path", "host__name", "created_at", "memory_kib", "operation__user__username",
)  # fmt: skip
# libvirt IDs are C ints: a longer number is not an ID (it may be a dash-less UUID).
_ID_RE = re.compile(r"\d{1,10}")
_MAX_ID = 2**31 - 1


# --- helpers -----------------------------------------------------------------------


def htmx_partial(request: HttpRequest) -> bool:
    """Whether to answer with the fragment only: an htmx request that swaps a part.

    Boosted requests and history restores replace the whole page, so they get it all.
    """
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


def _render(
    request: HttpRequest,
    page: str,
    fragment: str,
    context: dict,
    status: int = 200,
) -> HttpResponse:
    """Render `page`, or only `fragment` for htmx; the answer varies with HX-Request."""
    partial = htmx_partial(request)
    context["fragment"] = partial
    response = render(request, fragment if partial else page, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _parse_uuid(value: str) -> uuidlib.UUID:
    try:
        return uuidlib.UUID(value)
    except (ValueError, AttributeError):
        raise Http404(_("Not a valid UUID: %(value)s") % {"value": value}) from None


def _visible_domain(request: HttpRequest, host: str, uuid: str) -> Domain:
    """The domain (host name, UUID) if the user may see it, else 404 (DESIGN rule 4)."""
    parsed = _parse_uuid(uuid)
    user = request.user
    # Whether the user may see it: one query, compiled once per (user, host, UUID); then the
    # row by its key (a permission subquery and two joins at once cost twice as much).
    visible = kept_sql.rows(
        ("visible_domain", user.pk, user.is_superuser, host, parsed),
        lambda: (
            Domain.objects.for_user(user, "view").filter(host__name=host, uuid=parsed).values("pk")
        ),
    )
    try:
        if not visible:
            raise Domain.DoesNotExist
        return Domain.objects.select_related("host", "team").get(pk=visible[0]["pk"])
    except Domain.DoesNotExist:
        raise Http404(_("No such VM.")) from None


def _require_superuser(request: HttpRequest) -> None:
    if not request.user.is_superuser:
        raise PermissionDenied(_("Only superusers may manage hosts."))


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "on", "yes", "true")


def _domain_url(domain: Domain) -> str:
    return reverse("domain_detail", args=[domain.host.name, str(domain.uuid)])


# --- domain list -------------------------------------------------------------------


def _search(qs, q: str):
    """One box: an ID (per host, so every host's match), a UUID, or part of a name."""
    q = q.strip()
    if not q:
        return qs
    if _ID_RE.fullmatch(q) and int(q) <= _MAX_ID:
        return qs.filter(libvirt_id=int(q))
    try:
        return qs.filter(uuid=uuidlib.UUID(q))
    except ValueError:
        return qs.filter(name__icontains=q)


def _ordering(sort: str) -> list:
    """ORDER BY for a ?sort= key; ties broken by name, then by primary key.

    By name alone the order is (name, pk), which the index on name serves as it stands,
    so the first page is read without sorting the whole inventory. Inactive domains have
    no ID: they come last either way, on SQLite and PostgreSQL alike.
    """
    descending = sort.startswith("-")
    column = DOMAIN_SORTS[sort.lstrip("-")]
    keys: list = [column, "pk"] if column == "name" else [column, "name", "pk"]
    if descending:
        keys[0] = f"-{keys[0]}"
        if column == "name":
            keys[1] = "-pk"
    if column in ("libvirt_id", "usage__cpu_pct", "usage__memory_used_kib"):
        field = F(column)
        keys[0] = field.desc(nulls_last=True) if descending else field.asc(nulls_last=True)
    return keys


def _host_names() -> tuple[str, ...]:
    return tuple(h["name"] for h in kept_sql.rows(("hosts",), lambda: Host.objects.values("name")))


def _team_choices(user) -> tuple[tuple[str, str], ...]:
    """(slug, name) of the teams `user` sees, for a filter's choices."""
    teams = kept_sql.rows(
        ("teams", user.pk, user.is_superuser), lambda: teams_for(user).values("slug", "name")
    )
    return tuple((t["slug"], t["name"]) for t in teams)


class _EveryTeam(dict):
    """A superuser's actions in any team (and on domains of none): all of them."""

    def get(self, _team, _default=None):
        return frozenset(ACTION_ROLES)


def _team_actions(user) -> dict[str, frozenset[str]] | None:
    """Team name → what `user` may do there, for the list's row buttons and check boxes;
    None when they may operate nothing (the list has neither)."""
    if user.is_superuser:
        return _EveryTeam()
    memberships = kept_sql.rows(
        ("memberships", user.pk),
        lambda: Membership.objects.filter(user=user).values("team__name", "role"),
    )
    table = {
        m["team__name"]: frozenset(a for a, roles in ACTION_ROLES.items() if m["role"] in roles)
        for m in memberships
    }
    return table if any("operate" in actions for actions in table.values()) else None


@require_safe
def domain_list(request: HttpRequest) -> HttpResponse:
    """The inventory: database only, a constant handful of queries whatever its size, each
    compiled once per shape (`kept_sql`); the page rendered once per content
    (`kept_pages`)."""
    user = request.user
    host_names = _host_names()
    teams = _team_choices(user)
    values = DomainFilterForm.values_of(request.GET.urlencode(), host_names, teams)
    team_actions = _team_actions(user)

    def build():
        qs = Domain.objects.for_user(user, "view")
        if not values["gone"]:
            qs = qs.present()
        qs = qs.with_list_filters(values["f"])
        if values["host"]:
            qs = qs.filter(host__name=values["host"])
        if values["team"]:
            qs = qs.filter(team__slug=values["team"])
        qs = _search(qs, values["q"] or "").with_saved_image_count()
        # Only what the rows show, as plain values: no model instances for a page of rows.
        return qs.order_by(*_ordering(values["sort"] or "name")).values(*DomainRow.VALUES)

    # Everything `build` reads: who asks, and every value of the form.
    shape = ("domain_list", user.pk, user.is_superuser, tuple(values.items()))
    page = Paginator(kept_sql.Pages(shape, build), PAGE_SIZE).get_page(request.GET.get("page"))
    choices_key = "|".join(host_names + tuple(f"{slug}:{name}" for slug, name in teams))
    context = {
        # Made only if rendered: the filter form's HTML is kept per query and choices.
        "form": SimpleLazyObject(lambda: DomainFilterForm(request.GET, host_names, teams)),
        "filter_groups": SimpleLazyObject(lambda: DomainFilterForm.filter_groups(values["f"])),
        # What the filter form offers besides the query: its kept HTML is keyed on it.
        "choices_key": choices_key,
        "page": page,
        "domains": page.object_list,
        "sort": values["sort"] or "name",
        "filtered": any(values[k] for k in ("q", "f", "host", "team", "gone")),
        "team_actions": team_actions,
        "selectable": team_actions is not None,
        "live_path": kept_pages.page_path(request),
        "bulk_kinds": [(k, KINDS[k].label) for k in BULK_KINDS],
        # Under the table, a line for each kind of badge its rows show (from the rows).
        "legend_hibernated": any(
            v["has_managed_save"] and v["gone_at"] is None for v in page.object_list
        ),
        "legend_images": any(v["saved_image_count"] for v in page.object_list),
    }
    # All the page shows from the database: its rows, where it is, what the form offers,
    # and what the viewer may do in each team (the rows' buttons).
    facts = (
        "domain_list", tuple(DomainRow.of_values(v) for v in page.object_list),
        page.number, page.paginator.count, choices_key,
        "all" if isinstance(team_actions, _EveryTeam)
        else tuple(sorted((team_actions or {}).items())),
    )  # fmt: skip
    return kept_pages.render_kept(
        request,
        htmx_partial(request),
        facts,
        lambda: _render(request, "domains/domain_list.html", "domains/_domain_table.html", context),
    )


# --- domain detail and actions -------------------------------------------------------


# The live read of a domain page, kept VMPANEL_LIVE_CACHE_SECONDS per process: under load,
# many people on the same page share one libvirt read. The key holds what an operation or
# the inventory changes (state, ID, the latest operation and its status), so a page after an
# action never shows the facts from before it.
_live_cache: dict[tuple, tuple[float, hypervisor.DomainDetail]] = {}
_live_cache_lock = threading.Lock()


def _live_detail(domain: Domain, secure: bool, latest: dict | None):
    """`latest`: the domain's latest operation (OperationRow.VALUES), if any."""
    key = (
        domain.host.uri, str(domain.uuid), secure, domain.state, domain.libvirt_id,
        latest["pk"] if latest else None, latest["status"] if latest else None,
    )  # fmt: skip
    now = time.monotonic()
    with _live_cache_lock:
        hit = _live_cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
    live = hypervisor.domain_detail(domain.host.uri, str(domain.uuid), secure=secure)
    with _live_cache_lock:
        if len(_live_cache) > 1000:  # a bound on memory: old keys go at once
            _live_cache.clear()
        _live_cache[key] = (now + settings.VMPANEL_LIVE_CACHE_SECONDS, live)
    return live


def _detail_context(request: HttpRequest, domain: Domain, rng: usage.Range | None = None) -> dict:
    """Everything the detail page shows; the only libvirt call is a read."""
    user = request.user
    may = actions_on(user, domain)  # asked once; every button below follows from it
    live = None
    live_error = None
    # Only what the rows show (not the XML copies and parameters), compiled once.
    history = kept_sql.rows(
        ("history", domain.pk),
        lambda: Operation.objects.filter(domain=domain).values(*OperationRow.VALUES)[:HISTORY_SIZE],
    )
    # A gone domain has nothing live to read, and a disabled host is left alone.
    if domain.gone_at is None and domain.host.enabled:
        try:
            live = _live_detail(domain, "admin" in may, history[0] if history else None)
        except HypervisorError as exc:
            live_error = exc.message
    context = {
        "domain": domain,
        "live": live,
        "live_error": live_error,
        "actions": panel_actions(domain, may),
        "history": history,
        "may_restore": KINDS["restore"].role in may,
        # The XML names host paths and devices: for team admins and superusers.
        "show_xml": "admin" in may,
        "saved_images": kept_sql.rows(
            ("saved_images", domain.pk),
            lambda: SavedImage.objects.filter(domain=domain).values(*SAVED_IMAGE_VALUES)[
                :HISTORY_SIZE
            ],
        ),
        "usage_section": _usage_section(
            domain, rng or usage_data.parse_range(None), live.vcpu_cpus if live else {}
        ),
        # "Running for 3 hours, 12 minutes, since 14:05": words that change with time, so
        # they are facts of the kept page (see `uptime`).
        "state_since": uptime.state_since(domain),
    }
    # The list above stops at HISTORY_SIZE; the count on the badge does not.
    images = context["saved_images"]
    context["saved_image_count"] = (
        SavedImage.objects.filter(domain=domain).count()
        if len(images) >= HISTORY_SIZE
        else len(images)
    )
    if user.is_superuser and domain.gone_at is None:
        context["assign_form"] = AssignForm(initial={"team": domain.team})
    return context


def _usage_section(domain: Domain, rng: usage.Range, vcpu_cpus: dict) -> SafeString:
    """The Usage section of a domain's page (also what the page polls), kept per content."""
    facts, context = usage_data.domain_usage(domain, rng, vcpu_cpus)
    return kept_pages.section(
        "domains/_domain_usage.html",
        (domain.host.name, str(domain.uuid), domain.vcpus, *facts),
        lambda: {"domain": domain, "usage": context()},
    )


def _bad_request(request: HttpRequest, message: str, back: str) -> HttpResponse:
    """A 400 that says what was wrong in plain words (a page, or the fragment for htmx)."""
    if htmx_partial(request):
        html = f'<div class="banner banner-error" role="alert">{escape(message)}</div>'
        return HttpResponse(html, status=400)
    return render(request, "400.html", {"message": message, "back": back}, status=400)


def _detail_facts(domain: Domain, context: dict) -> tuple | None:
    """All a domain's page shows from the database and libvirt (hashable: the page is kept
    per content), or None when it must be rendered afresh: a superuser's page offers every
    team in its assignment form."""
    if "assign_form" in context:
        return None
    live = context["live"]
    return (
        "domain_detail",
        tuple(getattr(domain, f.attname) for f in Domain._meta.concrete_fields),
        domain.host.name, domain.host.enabled, domain.team.name if domain.team else None,
        (
            live.facts, live.os_type, live.max_vcpus, live.xml, live.disks, live.disk_sizes,
            live.nics, live.addresses,
        ) if live else None,
        context["live_error"], context["show_xml"],
        tuple(spec.kind for spec in context["actions"]), context["may_restore"],
        tuple(tuple(row.values()) for row in context["history"]),
        tuple(tuple(image.values()) for image in context["saved_images"]),
        context["saved_image_count"], context["state_since"],
        context["usage_section"],
    )  # fmt: skip


@require_safe
def domain_detail(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    domain = _visible_domain(request, host, uuid)
    try:
        rng = usage_data.parse_range(request.GET.get("range"))
    except usage_data.UnknownRange as exc:
        return _bad_request(request, str(exc), request.path)
    context = _detail_context(request, domain, rng)
    context["live_path"] = kept_pages.page_path(request)

    def render_page() -> HttpResponse:
        return _render(request, "domains/domain_detail.html", "domains/_domain_panel.html", context)

    facts = _detail_facts(domain, context)
    if facts is None:
        return render_page()
    # The state's elapsed time moves on without a write: a poll is confirmed unchanged only
    # until its words change; nor for longer than the live read is shared (a change in
    # libvirt that the inventory does not hold writes nothing either).
    bounds = (uptime.unchanged_for(context["state_since"]), settings.VMPANEL_LIVE_CACHE_SECONDS)
    return kept_pages.render_kept(
        request, htmx_partial(request), facts, render_page,
        live_for=min(b for b in bounds if b is not None),
    )  # fmt: skip


@require_safe
def domain_screenshot(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """The guest's screen as a small PNG (everyone who may see the domain)."""
    domain = _visible_domain(request, host, uuid)
    if domain.libvirt_id is None or not domain.host.enabled:
        return HttpResponse(_("Not running: no screen."), status=404, content_type="text/plain")
    try:
        png = screens.thumbnail(domain.host.uri, str(domain.uuid))
    except HypervisorError as exc:
        return HttpResponse(exc.message, status=404, content_type="text/plain")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response


@require_safe
def domain_console(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """The console page: the guest's screen (?kind=vnc) or its serial console."""
    domain = _visible_domain(request, host, uuid)
    kind = request.GET.get("kind", "vnc")
    if kind not in ("vnc", "serial"):
        back = reverse("domain_detail", args=[domain.host.name, str(domain.uuid)])
        return _bad_request(request, _("Unknown kind of console: choose vnc or serial."), back)
    context = {
        "domain": domain,
        "kind": kind,
        "view_only": "operate" not in actions_on(request.user, domain),
        "running": domain.libvirt_id is not None and domain.gone_at is None,
    }
    return render(request, "domains/domain_console.html", context)


@require_POST
def console_ticket(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """A one-time ticket for the console proxy (JSON), or why not ({"error": …})."""
    try:
        domain = _visible_domain(request, host, uuid)
        answer = consoles.open_console(
            request.user, domain, request.GET.get("kind", "vnc"), request.session.session_key
        )
    except Http404:
        return JsonResponse({"error": _("No such VM.")}, status=404)
    except ActionRefused as exc:
        return JsonResponse({"error": exc.message}, status=exc.status)
    response = JsonResponse(answer)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def domain_usage(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """The Usage section alone: what the page polls, and the range links load."""
    domain = _visible_domain(request, host, uuid)
    try:
        rng = usage_data.parse_range(request.GET.get("range"))
    except usage_data.UnknownRange as exc:
        back = reverse("domain_detail", args=[domain.host.name, str(domain.uuid)])
        return _bad_request(request, str(exc), back)
    live_cpus = {}
    if domain.gone_at is None and domain.libvirt_id is not None and domain.host.enabled:
        try:  # the same shared, bounded live read as the page's
            live_cpus = _live_detail(domain, False, None).vcpu_cpus
        except HypervisorError:
            pass  # the figures stand without it
    response = HttpResponse(_usage_section(domain, rng, live_cpus))
    patch_vary_headers(response, ["HX-Request"])
    return response


@require_safe
def domain_confirm(request: HttpRequest, host: str, uuid: str, action: str) -> HttpResponse:
    """Ask before forcing off or undefining; the form posts to domain_action."""
    domain = _visible_domain(request, host, uuid)
    spec = KINDS.get(action)
    if spec is None or not spec.confirm:
        raise Http404(_("This action needs no confirmation."))
    context = {
        "domain": domain,
        "action": action,
        "spec": spec,
        "available": spec in panel_actions(domain, actions_on(request.user, domain)),
    }
    return render(request, "domains/domain_confirm.html", context)


def _wait_briefly(op: Operation) -> Operation:
    """Give a quick operation a moment to finish so the answer can say how it went."""
    deadline = time.monotonic() + settings.VMPANEL_QUICK_WAIT_SECONDS
    while not op.is_finished and time.monotonic() < deadline:
        time.sleep(0.1)
        op.refresh_from_db()
    return op


def _flash_result(request: HttpRequest, op: Operation) -> None:
    params = {"id": op.pk, "kind": op.get_kind_display(), "status": op.get_status_display()}
    if op.status == "succeeded":
        text = _("Operation #%(id)s %(kind)s: %(status)s.") % params
        if op.message:
            text = f"{text} {op.message}"
        messages.success(request, text)
        return
    text = _("Operation #%(id)s %(kind)s: %(status)s.") % params
    if op.message:
        text = f"{text} {op.message}"
    if op.error:
        text = f"{text} " + _("libvirt said: %(error)s") % {"error": op.error}
    messages.error(request, text)


# What may be done to several domains at once from the list: one operation each.
BULK_KINDS = ("start", "shutdown", "reboot", "suspend", "resume")
BULK_MAX = 100


def _local_next(request: HttpRequest) -> str | None:
    """The page to go back to after a list's button (`next`), if it is one of ours."""
    url = request.POST.get("next", "")
    if url.startswith("/domains/") and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}
    ):
        return url
    return None


@require_POST
def domain_bulk(request: HttpRequest) -> HttpResponse:
    """Act on several domains ticked in the list: each through its kind's service, as
    its own button would (one operation each, refusals on record); each outcome said."""
    action = request.POST.get("action", "")
    if action not in BULK_KINDS:
        messages.error(request, _("Choose what to do with the ticked VMs."))
        return see_other(_local_next(request) or reverse("domain_list"))
    picks = request.POST.getlist("pick")[:BULK_MAX]
    if not picks:
        messages.error(request, _("Tick the VMs to act on first."))
    spec = KINDS[action]
    for pick in picks:
        host, _slash, uuid = pick.partition("/")
        try:
            domain = _visible_domain(request, host, uuid)
        except Http404:
            messages.error(request, _("%(pick)s: no such VM.") % {"pick": pick[:80]})
            continue
        try:
            op = spec.service_function(request.user, domain)
        except ActionRefused as exc:
            messages.error(request, f"{domain.name}: {exc.message}")
            continue
        # Sent as the service's transaction committed, before it returned: a task queue
        # that did not answer has failed it already, and "queued" was untrue.
        op.refresh_from_db(fields=["status", "message"])
        if op.status == OperationStatus.FAILED:
            messages.error(request, f"{domain.name}: {op.message}")
            continue
        messages.info(
            request,
            _("%(name)s: %(kind)s queued (operation #%(id)s).")
            % {"name": domain.name, "kind": op.get_kind_display(), "id": op.pk},
        )
    return see_other(_local_next(request) or reverse("domain_list"))


@require_POST
def domain_action(request: HttpRequest, host: str, uuid: str, action: str) -> HttpResponse:
    """A plain button: the kind's service, with the check boxes its form may post."""
    domain = _visible_domain(request, host, uuid)
    spec = KINDS.get(action)
    if spec is None or action not in BUTTON_KINDS:
        raise Http404(_("No such action."))
    if spec.confirm and request.POST.get("confirm") != "yes":
        return see_other(
            reverse("domain_confirm", args=[domain.host.name, str(domain.uuid), action])
        )
    options = {name: _truthy(request.POST.get(name)) for name in spec.options}
    try:
        op = spec.service_function(request.user, domain, **options)
    except ActionRefused as exc:
        return _refusal_page(request, domain, exc)

    op = _wait_briefly(op)
    if not op.is_finished:
        messages.info(
            request,
            _("Operation #%(id)s %(kind)s is still running.")
            % {"id": op.pk, "kind": op.get_kind_display()},
        )
        url = reverse("operation_detail", args=[op.pk])
        if htmx_partial(request):
            return HttpResponseClientRedirect(url)
        return see_other(url)
    _flash_result(request, op)
    if back := _local_next(request):
        return see_other(back)  # a button of the list: back to the list
    if htmx_partial(request):
        # Answer with the refreshed panel straight away instead of a redirect to follow.
        domain = Domain.objects.select_related("host", "team").get(pk=domain.pk)
        return _render(
            request,
            "domains/domain_detail.html",
            "domains/_domain_panel.html",
            _detail_context(request, domain),
        )
    return see_other(_domain_url(domain))


@require_POST
def domain_assign(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    domain = _visible_domain(request, host, uuid)
    if not request.user.is_superuser:
        raise PermissionDenied(_("Only superusers may assign VMs to teams."))
    form = AssignForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("No such team."))
        return see_other(_domain_url(domain))
    try:
        hosts.assign_domain(request.user, domain, form.cleaned_data["team"])
    except ActionRefused as exc:
        raise_for_refusal(exc)
    team = form.cleaned_data["team"]
    if team is None:
        messages.success(request, _("%(name)s now belongs to no team.") % {"name": domain.name})
    else:
        messages.success(
            request,
            _("%(name)s now belongs to team %(team)s.") % {"name": domain.name, "team": team},
        )
    return see_other(_domain_url(domain))


# --- operations and activity ---------------------------------------------------------


@require_safe
def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    op = get_object_or_404(
        Operation.objects.select_related("user", "host", "domain", "domain__host", "team"),
        pk=pk,
    )
    user = request.user
    if op.domain_id is not None:
        visible = Domain.objects.for_user(user, "view").filter(pk=op.domain_id).exists()
    else:
        # Not yet tied to a domain (a provisioning in progress, or one that failed): the
        # team it was for may see it.
        visible = op.team_id is not None and teams_for(user).filter(pk=op.team_id).exists()
    visible = visible or user.is_superuser
    if not visible:
        raise Http404(_("No such operation."))
    context = {
        "op": op,
        # An XML edit's diff is shown as a block of its own, not among the parameters.
        "params": sorted((k, v) for k, v in op.params.items() if k != "diff"),
        "diff": op.params.get("diff", ""),
        # Asked only while the operation waits or runs: a finished one needs no worker.
        "worker_alive": True if op.is_finished else worker_alive(),
        "may_cancel": not op.is_finished
        and (KINDS[op.kind].long or op.status == OperationStatus.QUEUED)
        and op.domain is not None
        and "operate" in actions_on(user, op.domain),
        # A save of XML that libvirt refused: back to the editor with that text.
        "may_edit_again": op.kind == OperationKind.EDIT_XML
        and op.status == OperationStatus.FAILED
        and bool(op.xml_after)
        and op.domain is not None
        and op.domain.gone_at is None
        and KINDS[op.kind].role in actions_on(user, op.domain),
    }
    return _render(
        request, "domains/operation_detail.html", "domains/_operation_status.html", context
    )


@require_safe
def activity(request: HttpRequest) -> HttpResponse:
    """Operations and audit events the user may see, newest first; queries compiled once
    per shape (`kept_sql`), the page rendered once per content (`kept_pages`)."""
    user = request.user
    teams = _team_choices(user)
    values = ActivityFilterForm.values_of(request.GET.urlencode(), teams)
    team, username = values["team"], values["user"]

    def build_operations():
        ops = Operation.objects.all()
        if not user.is_superuser:
            ops = ops.filter(team__in=teams_for(user))
        if team:
            ops = ops.filter(team__slug=team)
        if username:
            ops = ops.filter(user__username__iexact=username)
        if target := values["domain"]:
            match = Q(domain_name__icontains=target) | Q(domain__name__icontains=target)
            try:
                match |= Q(domain_uuid=uuidlib.UUID(target))
            except ValueError:
                match |= Q(domain_uuid__icontains=target)
            ops = ops.filter(match)
        if values["kind"]:
            ops = ops.filter(kind=values["kind"])
        if values["status"]:
            ops = ops.filter(status=values["status"])
        return ops.values(*OperationRow.VALUES)

    def build_events():
        events = AuditEvent.objects.all()
        if not user.is_superuser:
            events = events.filter(team__in=teams_for(user, "admin"))
        if team:
            events = events.filter(team__slug=team)
        if username:
            events = events.filter(user__username__iexact=username)
        if values["quiet"]:
            events = events.exclude(kind__in=audit_words.SIGN_INS)
        return events.values(
            "pk", "created_at", "user__username", "kind", "team__name", "summary", "detail"
        )

    # Everything the builders read: who asks, and every value of the form.
    shape = (user.pk, user.is_superuser, tuple(values.items()))
    show_events = user.is_superuser or bool(
        kept_sql.rows(
            ("team_admin", user.pk),
            lambda: Membership.objects.filter(user=user, role=Role.ADMIN).values("pk")[:1],
        )
    )
    ops_page = Paginator(kept_sql.Pages(("activity", *shape), build_operations), PAGE_SIZE)
    ops_page = ops_page.get_page(request.GET.get("page"))
    events_page = None
    if show_events:
        events_page = Paginator(kept_sql.Pages(("events", *shape), build_events), PAGE_SIZE)
        events_page = events_page.get_page(request.GET.get("epage"))
        for event in events_page.object_list:
            event["topic"] = audit_words.topic(event["kind"])
            event["sentence"] = audit_words.sentence(
                event["kind"], event["user__username"], event["team__name"],
                event.pop("detail"), event["summary"],
            )  # fmt: skip
    context = {
        "form": SimpleLazyObject(lambda: ActivityFilterForm(request.GET, teams)),
        "ops_page": ops_page,
        "show_events": show_events,
        "events_page": events_page,
        "live_path": kept_pages.page_path(request),
    }
    # All the page shows from the database: the rows of both tables and where they are.
    facts = (
        "activity", teams,
        tuple(OperationRow.of_values(v, True) for v in ops_page.object_list),
        ops_page.number, ops_page.paginator.count,
        events_page and tuple(tuple(v.values()) for v in events_page.object_list),
        events_page and (events_page.number, events_page.paginator.count),
    )  # fmt: skip
    return kept_pages.render_kept(
        request,
        htmx_partial(request),
        facts,
        lambda: _render(
            request, "domains/activity.html", "domains/_activity_results.html", context
        ),
    )


# --- hosts (superusers) --------------------------------------------------------------


def _host_health(host: Host, now) -> tuple[str, str]:
    """(css modifier, words) for how the host answered the watcher lately."""
    stale_after = timedelta(seconds=max(60, 3 * settings.VMPANEL_RECONCILE_SECONDS))
    if not host.enabled:
        return "shutoff", _("disabled")
    if host.last_error:
        return "failed", _("does not answer")
    if host.last_seen_at is None:
        return "other", _("not seen yet")
    if now - host.last_seen_at > stale_after:
        return "paused", _("no news lately")
    return "running", _("answers")


@require_safe
def host_list(request: HttpRequest) -> HttpResponse:
    _require_superuser(request)
    now = timezone.now()
    hosts = list(
        Host.objects.annotate(
            domain_count=Count("domains", filter=Q(domains__gone_at__isnull=True))
        ).order_by("name")
    )
    for host in hosts:
        host.health_class, host.health = _host_health(host, now)
    # Which watcher process holds each host's lease (Redis), and since when.
    owners = host_owners([h.pk for h in hosts])
    for host in hosts:
        host.owner = None if owners is None else owners.get(host.pk)
    context = {"hosts": hosts, "owners_known": owners is not None}
    return render(request, "domains/host_list.html", context)


def _host_form_page(request: HttpRequest, host: Host | None) -> HttpResponse:
    form = HostForm(request.POST or None, instance=host)
    if request.method == "POST" and form.is_valid():
        new = form.save(commit=False)
        try:
            hosts.save_host(request.user, new)
        except ActionRefused as exc:
            raise_for_refusal(exc)
            form.add_error("uri", exc.message)
        else:
            messages.success(request, _("Host %(name)s saved.") % {"name": new.name})
            return see_other(reverse("host_detail", args=[new.name]))
    return render(request, "domains/host_form.html", {"form": form, "host": host})


@require_http_methods(["GET", "HEAD", "POST"])
def host_create(request: HttpRequest) -> HttpResponse:
    _require_superuser(request)
    return _host_form_page(request, None)


@require_http_methods(["GET", "HEAD", "POST"])
def host_edit(request: HttpRequest, host: str) -> HttpResponse:
    _require_superuser(request)
    return _host_form_page(request, get_object_or_404(Host, name=host))


@require_safe
def host_detail(request: HttpRequest, host: str) -> HttpResponse:
    _require_superuser(request)
    obj = get_object_or_404(Host, name=host)
    facts = None
    error = None
    if obj.enabled:
        try:
            facts = hypervisor.host_facts(obj.uri)
        except HypervisorError as exc:
            error = exc.message
    try:
        rng = usage_data.parse_range(request.GET.get("range"))
    except usage_data.UnknownRange as exc:
        return _bad_request(request, str(exc), request.path)
    obj.health_class, obj.health = _host_health(obj, timezone.now())
    owners = host_owners([obj.pk])
    obj.owner = None if owners is None else owners.get(obj.pk)
    context = {
        "owners_known": owners is not None,
        "usage": usage_data.host_usage(obj, rng),
        "host": obj,
        "facts": facts,
        "error": error,
        "domain_count": obj.domains.filter(gone_at__isnull=True).count(),
        "gone_count": obj.domains.filter(gone_at__isnull=False).count(),
        "images": _saved_images_of(obj),
    }
    return render(request, "domains/host_detail.html", context)


def _saved_images_of(host: Host) -> list[dict]:
    """The host's saved images, each checked live: what libvirt reads inside it."""
    rows = []
    for image in SavedImage.objects.filter(host=host).select_related("domain", "domain__host"):
        inside, problem = None, ""
        if host.enabled:
            try:
                inside = hypervisor.saved_image(host.uri, image.path)
            except HypervisorError as exc:
                problem = exc.message
        rows.append({"image": image, "inside": inside, "problem": problem})
    return rows


@require_POST
def host_set_enabled(request: HttpRequest, host: str) -> HttpResponse:
    _require_superuser(request)
    obj = get_object_or_404(Host, name=host)
    enabled = _truthy(request.POST.get("enabled"))
    try:
        hosts.set_host_enabled(request.user, obj, enabled)
    except ActionRefused as exc:
        raise_for_refusal(exc)
    if enabled:
        messages.success(request, _("Host %(name)s enabled.") % {"name": obj.name})
    else:
        messages.success(request, _("Host %(name)s disabled.") % {"name": obj.name})
    return see_other(reverse("host_detail", args=[obj.name]))


# --- teams ---------------------------------------------------------------------------


@require_safe
def team_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    teams = Team.objects.all()
    if not user.is_superuser:
        # A subquery, not a join: the member count below must count every member.
        teams = teams.filter(pk__in=Membership.objects.filter(user=user).values("team"))
    my_role = Membership.objects.filter(team=OuterRef("pk"), user=user).values("role")[:1]
    teams = teams.annotate(
        my_role=Subquery(my_role),
        member_count=Count("memberships", distinct=True),
        domain_count=Count("domains", filter=Q(domains__gone_at__isnull=True), distinct=True),
    ).order_by("name")
    return render(request, "domains/team_list.html", {"teams": teams})


def _visible_team(request: HttpRequest, slug: str) -> tuple[Team, Membership | None]:
    """The team if the user is a member or a superuser (else 404), and their membership."""
    team = get_object_or_404(Team, slug=slug)
    membership = Membership.objects.filter(team=team, user=request.user).first()
    if membership is None and not request.user.is_superuser:
        raise Http404(_("No such team."))
    return team, membership


def _team_page(
    request: HttpRequest,
    team: Team,
    membership: Membership | None,
    form: MembershipForm | None = None,
    status: int = 200,
) -> HttpResponse:
    can_admin = is_team_admin(request.user, team)
    context = {
        "team": team,
        "membership": membership,
        "members": team.memberships.select_related("user").order_by("user__username"),
        "can_admin": can_admin,
        "form": (form or MembershipForm()) if can_admin else None,
        "domain_count": team.domains.filter(gone_at__isnull=True).count(),
        "usage": usage_data.team_usage(team.domains.all()),
        "quota": getattr(team, "quota", None),
    }
    return render(request, "domains/team_detail.html", context, status=status)


@require_safe
def team_detail(request: HttpRequest, team: str) -> HttpResponse:
    obj, membership = _visible_team(request, team)
    return _team_page(request, obj, membership)


@require_POST
def team_member_set(request: HttpRequest, team: str) -> HttpResponse:
    obj, membership = _visible_team(request, team)
    if not is_team_admin(request.user, obj):
        # Before the form, so that a viewer learns nothing from its errors.
        raise PermissionDenied(_("Only this team's admins may change its members."))
    form = MembershipForm(request.POST)
    if not form.is_valid():
        return _team_page(request, obj, membership, form, status=400)
    member = form.cleaned_data["member"]
    role = form.cleaned_data["role"]
    try:
        hosts.set_membership(request.user, obj, member, role)
    except ActionRefused as exc:
        raise_for_refusal(exc)
    messages.success(
        request,
        _("%(user)s is now %(role)s in %(team)s.")
        % {"user": member.username, "role": Role(role).label, "team": obj.name},
    )
    return see_other(reverse("team_detail", args=[obj.slug]))


@require_POST
def team_member_remove(request: HttpRequest, team: str, user_id: int) -> HttpResponse:
    obj, _membership = _visible_team(request, team)
    # Only this team's members: anyone else's number is a 404, never their name.
    member = get_object_or_404(get_user_model(), pk=user_id, memberships__team=obj)
    try:
        hosts.remove_membership(request.user, obj, member)
    except ActionRefused as exc:
        raise_for_refusal(exc)
    messages.success(
        request,
        _("%(user)s removed from %(team)s.") % {"user": member.username, "team": obj.name},
    )
    return see_other(reverse("team_detail", args=[obj.slug]))


# --- save, restore, migrate, cancel (the slow operations) --------------------------


def _refusal_page(request, domain: Domain, exc: ActionRefused) -> HttpResponse:
    """The domain's page (or panel) with the refusal in plain words, at its status."""
    status = raise_for_refusal(exc)
    context = _detail_context(request, domain)
    context["refusal"] = exc.message
    context["refused_operation"] = exc.operation
    return _render(
        request,
        "domains/domain_detail.html",
        "domains/_domain_panel.html",
        context,
        status=status,
    )


def after_queue(request: HttpRequest, op: Operation) -> HttpResponse:
    """A slow operation goes straight to its page, where progress shows."""
    url = reverse("operation_detail", args=[op.pk])
    if htmx_partial(request):
        return HttpResponseClientRedirect(url)
    return see_other(url)


def form_page_domain(request: HttpRequest, host: str, uuid: str, kind: str) -> Domain:
    """The domain of a kind's form page, if the user's role allows the kind (else 404 or
    403). A refused POST is on record; a GET of the form is not an attempt."""
    domain = _visible_domain(request, host, uuid)
    try:
        require(request.user, domain, kind, record=request.method == "POST")
    except ActionRefused as exc:
        raise_for_refusal(exc)
    return domain


def queue_from_form(
    request: HttpRequest, form, queue: Callable[[dict], Operation], field: str | None = None
) -> tuple[HttpResponse | None, int]:
    """A kind's form page: when posted, the form's values to `queue` (its service).
    (The operation's page, 200) when queued; else (None, the page's status): 200 for a GET,
    400 for a form that is not valid (nothing is recorded: not even a name, say), or the
    refusal's status with its words beside `field` (None: above the form)."""
    if request.method != "POST":
        return None, 200
    if not form.is_valid():
        return None, 400
    try:
        op = queue(form.cleaned_data)
    except ActionRefused as exc:
        form.add_error(field, exc.message)
        return None, raise_for_refusal(exc)
    return after_queue(request, op), 200


@require_http_methods(["GET", "HEAD", "POST"])
def domain_save(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """Save the memory to an image in the host's save folder; the guide's warnings shown."""
    domain = form_page_domain(request, host, uuid, "save")
    form = SaveForm(request.POST or None)
    queued, status = queue_from_form(
        request, form,
        lambda data: images.save_domain(request.user, domain, data["image_name"]),
        "image_name",
    )  # fmt: skip
    if queued:
        return queued
    context = {"domain": domain, "form": form}
    return render(request, "domains/domain_save.html", context, status=status)


# --- snapshots -------------------------------------------------------------------------


@require_safe
def domain_snapshots(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """The domain's snapshots as a tree, as libvirt lists them now; what each holds; links
    to take, revert and delete them for those whose role allows."""
    domain = _visible_domain(request, host, uuid)
    may = actions_on(request.user, domain)
    tree, error = [], None
    if domain.gone_at is None and domain.host.enabled:
        try:
            tree = [
                # Indented up to five levels (CSS classes): deeper is told by "after …".
                (min(depth, 5), snap, datetime.fromtimestamp(snap.created_at, tz=UTC))
                for depth, snap in snapshots.snapshot_tree(domain)
            ]
        except HypervisorError as exc:
            error = exc.message
    context = {
        "domain": domain,
        "tree": tree,
        "error": error,
        "may_create": KINDS["snapshot_create"].role in may,
        "may_change": KINDS["snapshot_revert"].role in may,
        "show_xml": "admin" in may,
        "limit": domain.team.max_snapshots_per_domain if domain.team else None,
    }
    return render(request, "domains/domain_snapshots.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
def domain_snapshot_create(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    domain = form_page_domain(request, host, uuid, "snapshot_create")
    form = SnapshotCreateForm(request.POST or None)
    queued, status = queue_from_form(
        request, form,
        lambda data: snapshots.create_snapshot(
            request.user, domain, data["name"], data["description"],
            disk_only=data["disk_only"], quiesce=data["quiesce"],
        ),
    )  # fmt: skip
    if queued:
        return queued
    context = {"domain": domain, "form": form, "default_name": snapshots.default_name()}
    return render(request, "domains/domain_snapshot_create.html", context, status=status)


def _snapshot_page(request, host: str, uuid: str, kind: str, form_class, template: str):
    """A confirmation page for one snapshot (revert, delete) and its POST."""
    domain = form_page_domain(request, host, uuid, kind)
    form = form_class(request.POST or None, initial={"name": request.GET.get("name", "")})
    name = request.POST.get("name") if request.method == "POST" else request.GET.get("name")
    snapshot = None
    try:
        snapshot = next(
            (s for _depth, s in snapshots.snapshot_tree(domain) if s.name == name), None
        )
    except HypervisorError:
        pass  # the service says so on POST; the page shows what it can

    def queue(data: dict) -> Operation:
        if kind == "snapshot_revert":
            return snapshots.revert_snapshot(
                request.user, domain, data["name"], then=data["then"], force=data["force"]
            )
        return snapshots.delete_snapshot(request.user, domain, data["name"], mode=data["mode"])

    queued, status = queue_from_form(request, form, queue)
    if queued:
        return queued
    if request.method != "POST" and snapshot is None:
        raise Http404(_("No such snapshot."))
    context = {"domain": domain, "form": form, "snapshot": snapshot, "name": name}
    return render(request, template, context, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
def domain_snapshot_revert(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """Revert to a snapshot: the page says what will be lost before anything happens."""
    return _snapshot_page(
        request, host, uuid, "snapshot_revert", SnapshotRevertForm,
        "domains/domain_snapshot_revert.html",
    )  # fmt: skip


@require_http_methods(["GET", "HEAD", "POST"])
def domain_snapshot_delete(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    return _snapshot_page(
        request, host, uuid, "snapshot_delete", SnapshotDeleteForm,
        "domains/domain_snapshot_delete.html",
    )  # fmt: skip


def _image_of_visible_domain(request: HttpRequest, image_id: int, **lookup) -> SavedImage:
    """The saved image if the user may see its domain (superusers: any image), else 404."""
    image = get_object_or_404(
        SavedImage.objects.select_related("host", "domain", "domain__host"),
        pk=image_id,
        **lookup,
    )
    domain = image.domain
    visible = domain is not None and "view" in actions_on(request.user, domain)
    if not visible and not request.user.is_superuser:
        raise Http404(_("No such image."))
    return image


def _restore_situation(image: SavedImage, domain: Domain) -> dict:
    """What the restore confirmation says besides the save page's warnings: who saved the
    image, what libvirt reads inside it now, and what restoring does to the VM as it is
    now (running, gone, on another host, started since the save, defined elsewhere)."""
    inside, inside_error = None, ""
    if image.host.enabled:
        try:
            inside = hypervisor.saved_image(image.host.uri, image.path)
        except HypervisorError as exc:
            inside_error = exc.message
    # The panel's own record of the VM running again after the save: its disks moved on.
    ran_since = Operation.objects.filter(
        domain=domain,
        kind__in=(OperationKind.START, OperationKind.RESTORE, OperationKind.SNAPSHOT_REVERT),
        status=OperationStatus.SUCCEEDED,
        created_at__gt=image.created_at,
    )
    return {
        "saved_by": SavedImage.objects.filter(pk=image.pk)
        .values_list("operation__user__username", flat=True)
        .first(),
        "inside": inside,
        "inside_error": inside_error,
        "ran_since": ran_since.order_by("created_at").first(),
        "elsewhere": list(
            Domain.objects.filter(uuid=domain.uuid, gone_at__isnull=True)
            .exclude(host_id=image.host_id)
            .values_list("host__name", flat=True)
        ),
        "moved": domain.host_id != image.host_id,
        "available": domain.host_id == image.host_id and KINDS["restore"].allowed(domain),
    }


@require_http_methods(["GET", "HEAD", "POST"])
def image_restore(request: HttpRequest, host: str, image_id: int) -> HttpResponse:
    """Restore a VM from a saved image. The page (GET) repeats the save page's warnings
    and says what restoring does now; its button posts here, which queues the restore.
    Works without JavaScript; a GET changes nothing."""
    image = _image_of_visible_domain(request, image_id, host__name=host)
    domain = image.domain
    if domain is None:
        raise Http404(_("This image's VM is unknown to the panel."))
    # As a kind's form page: a viewer gets a 403, on record only when they post.
    try:
        require(request.user, domain, "restore", record=request.method == "POST")
    except ActionRefused as exc:
        raise_for_refusal(exc)
    form = RestoreForm(request.POST or None)
    queued, status = queue_from_form(
        request, form, lambda _data: images.restore_domain(request.user, image)
    )
    if queued:
        return queued
    context = {"image": image, "domain": domain, "form": form}
    context.update(_restore_situation(image, domain))
    return render(request, "domains/image_restore.html", context, status=status)


@require_POST
def image_forget(request: HttpRequest, host: str, image_id: int) -> HttpResponse:
    # The host in the address must be the image's: another host's name is a 404.
    image = _image_of_visible_domain(request, image_id, host__name=host)
    try:
        images.forget_saved_image(request.user, image)
    except ActionRefused as exc:
        raise_for_refusal(exc)
    messages.success(request, _("Image %(path)s forgotten.") % {"path": image.path})
    if image.domain is not None:
        return see_other(_domain_url(image.domain))
    return see_other(reverse("host_detail", args=[host]))


@require_http_methods(["GET", "HEAD", "POST"])
def domain_migrate(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """Every flag of the guide, checked in plain words before libvirt is asked."""
    domain = form_page_domain(request, host, uuid, "migrate")
    problems: list[str] = []
    status = 200
    # libvirt's own flags and addresses are for team admins and superusers.
    advanced = request.user.is_superuser or is_team_admin(request.user, domain.team)
    form = MigrateForm(request.POST if request.method == "POST" else None, domain,
                       request.user, advanced=advanced)  # fmt: skip
    if request.method == "POST" and not form.is_valid():
        status = 400
    elif request.method == "POST":
        data = form.cleaned_data
        choice = MigrationChoice(
            destination=data.get("destination"),
            destination_uri=(data.get("destination_uri") or "").strip(),
            flags=frozenset(data["flags"]),
            bandwidth_mib_s=data.get("bandwidth_mib_s") or 0,
            new_name=data["new_name"].strip(),
            migrate_uri=data["migrate_uri"].strip(),
            listen_address=data["listen_address"].strip(),
        )
        try:
            op = migration.migrate_domain(request.user, domain, choice)
        except ActionRefused as exc:
            status = raise_for_refusal(exc)
            problems = [exc.message]
        else:
            return after_queue(request, op)
    context = {"domain": domain, "form": form, "problems": problems, "advanced": advanced}
    return render(request, "domains/domain_migrate.html", context, status=status)


@require_POST
def operation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    op = get_object_or_404(Operation.objects.select_related("domain"), pk=pk)
    try:
        op = operations.cancel_operation(request.user, op)
    except ActionRefused as exc:
        raise_for_refusal(exc)
        messages.error(request, exc.message)
    else:
        messages.info(request, _("Cancel requested for operation #%(id)s.") % {"id": op.pk})
    return see_other(reverse("operation_detail", args=[op.pk]))


# --- resize and raw XML ------------------------------------------------------------


def _resize_limits(domain: Domain) -> tuple[hypervisor.ResizeLimits | None, str]:
    """The domain's counts and limits read live, or why they cannot be read now."""
    if domain.gone_at is not None:
        return None, _("This VM no longer exists.")
    if not domain.host.enabled:
        return None, _("Host %(host)s is disabled.") % {"host": domain.host}
    try:
        return resize.resize_limits(domain), ""
    except HypervisorError as exc:
        return None, exc.message


def _resize_initial(limits: hypervisor.ResizeLimits | None) -> dict:
    """The form's defaults: the running values of a running domain, the saved ones else."""
    if limits is None:
        return {}
    # A domain is running, persistent or both: one of each pair is always known.
    live = limits.active
    saved = limits.persistent
    memory = limits.memory_live_kib if live else limits.memory_config_kib
    memory_max = limits.memory_max_config_kib if saved else limits.memory_max_live_kib
    return {
        "vcpus": limits.vcpus_live if live else limits.vcpus_config,
        "vcpus_max": limits.vcpus_max_config if saved else limits.vcpus_max_live,
        "memory_mib": (memory or 0) // 1024,
        "memory_max_mib": (memory_max or 0) // 1024,
        "live": live,
        "config": saved,
    }


@require_http_methods(["GET", "HEAD", "POST"])
def domain_resize(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """vCPUs and memory, live and/or saved, with the limits explained before submitting."""
    domain = form_page_domain(request, host, uuid, "resize")
    limits, limits_error = _resize_limits(domain)
    problems: list[str] = []
    status = 200
    if request.method == "POST":
        form = ResizeForm(request.POST)
        if form.is_valid():
            try:
                op = resize.resize_domain(request.user, domain, ResizeRequest(**form.cleaned_data))
            except ActionRefused as exc:
                status = raise_for_refusal(exc)
                problems = [exc.message]
            else:
                return after_queue(request, op)
        else:
            status = 400
    else:
        form = ResizeForm(initial=_resize_initial(limits))
    context = {
        "domain": domain,
        "form": form,
        "limits": limits,
        "limits_error": limits_error,
        "problems": problems,
    }
    return render(request, "domains/domain_resize.html", context, status=status)


# An operation's number in "?again=": digits within an integer column, else ignored.
_AGAIN_RE = re.compile(r"[0-9]{1,9}")


@require_http_methods(["GET", "HEAD", "POST"])
def domain_xml_edit(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """The saved configuration as XML, for team admins: preview the diff, then save."""
    domain = form_page_domain(request, host, uuid, "edit_xml")
    problems: list[str] = []
    diff = None
    read_error = libvirt_refusal = ""
    status = 200
    if request.method == "POST":
        form = XmlEditForm(request.POST)
        if not form.is_valid():
            # Not text XML could hold (a NUL byte, another control character): the form
            # says so, and nothing is recorded.
            status = 400
        else:
            xml = form.cleaned_data["xml"]
            try:
                if "save" in request.POST:
                    op = xmledit.edit_domain_xml(request.user, domain, xml)
                    return after_queue(request, op)
                preview = xmledit.preview_domain_xml(request.user, domain, xml)
            except ActionRefused as exc:
                status = raise_for_refusal(exc)
                problems = [exc.message]
            else:
                diff = preview.diff
                problems = [preview.problem] if preview.problem else []
    else:
        xml = ""
        if not KINDS["edit_xml"].allowed(domain):
            read_error = wrong_state_message(KINDS["edit_xml"], domain)
        elif domain.gone_at is not None:
            read_error = _("This VM no longer exists.")
        elif not domain.host.enabled:
            read_error = _("Host %(host)s is disabled.") % {"host": domain.host}
        else:
            try:
                # "Edit again" from a save libvirt refused: that text, not the saved one.
                again = _AGAIN_RE.fullmatch(request.GET.get("again", ""))
                refused = again and xmledit.refused_edit(request.user, domain, int(again[0]))
                if refused:
                    xml, libvirt_refusal = refused.xml, refused.problem
                else:
                    xml = xmledit.current_domain_xml(domain)
            except HypervisorError as exc:
                read_error = exc.message
        form = XmlEditForm(initial={"xml": xml})
    context = {
        "domain": domain,
        "form": form,
        "problems": problems,
        "libvirt_refusal": libvirt_refusal,
        "diff": diff,
        "read_error": read_error,
    }
    return render(request, "domains/domain_xml_edit.html", context, status=status)
