"""Pages for templates, requests, quotas and notifications. Thin: look up, check the
form, call a service, render."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from domains import kept_pages
from domains.models import Operation, OperationKind, Team, is_team_admin, teams_for
from domains.services.common import ActionRefused
from domains.views import form_page_domain, htmx_partial, queue_from_form
from vmpanel.http import raise_for_refusal, see_other

from . import services
from .forms import (
    ApproveForm,
    CloneForm,
    CreateForm,
    QuotaForm,
    RejectForm,
    RequestForm,
    TemplateForm,
)
from .models import Notification, Quota, RequestState, Template, VMRequest

# --- templates -------------------------------------------------------------------------


@require_safe
def template_list(request: HttpRequest) -> HttpResponse:
    may_create = request.user.is_superuser or teams_for(request.user, "admin").exists()
    return render(
        request,
        "provisioning/template_list.html",
        {"templates": Template.objects.prefetch_related("hosts"), "may_create": may_create},
    )


@require_http_methods(["GET", "POST"])
def template_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    if not request.user.is_superuser:
        raise PermissionDenied(_("Only superusers manage templates."))
    obj = get_object_or_404(Template, pk=pk) if pk else None
    form = TemplateForm(request.POST or None, instance=obj)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save_template(
                request.user, form.save(commit=False), form.cleaned_data["hosts"]
            )
        except ActionRefused as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, _("Template %(name)s saved.") % {"name": saved.name})
            return see_other(reverse("template_list"))
    return render(request, "provisioning/template_form.html", {"form": form, "template": obj})


@require_http_methods(["GET", "HEAD", "POST"])
def template_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask, then delete a template (superusers)."""
    if not request.user.is_superuser:
        raise PermissionDenied(_("Only superusers manage templates."))
    template = get_object_or_404(Template, pk=pk)
    refusal, status = "", 200
    if request.method == "POST":
        try:
            services.delete_template(request.user, template)
        except ActionRefused as exc:
            refusal, status = exc.message, raise_for_refusal(exc)
        else:
            messages.success(request, _("Template %(name)s deleted.") % {"name": template.name})
            return see_other(reverse("template_list"))
    context = {"template": template, "refusal": refusal}
    return render(request, "provisioning/template_delete.html", context, status=status)


@require_http_methods(["GET", "POST"])
def template_create_domain(request: HttpRequest, pk: int) -> HttpResponse:
    """Fill in, preview the XML (with the low-memory warning), then create."""
    if not (request.user.is_superuser or teams_for(request.user, "admin").exists()):
        raise PermissionDenied(_("Only superusers and team admins create VMs."))
    template = get_object_or_404(Template, pk=pk)
    form = CreateForm(request.user, template, request.POST or None)
    context = {"form": form, "template": template}
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        choice = services.CreateChoice(
            persistent=d["persistent"],
            start=d["start"],
            paused=d["paused"],
            autodestroy=d["autodestroy"],
        )
        if "confirm" not in request.POST:
            context["preview"] = services.preview(
                template, d["host"], d["name"], d["vcpus"], d["memory_mib"]
            )
            return render(request, "provisioning/create_domain.html", context)
        try:
            op = services.create_domain(
                request.user, template, d["host"], d["team"], d["name"],
                d["vcpus"], d["memory_mib"], choice,
            )  # fmt: skip
        except ActionRefused as exc:
            status = raise_for_refusal(exc)
            context["refusal"] = exc.message
            return render(request, "provisioning/create_domain.html", context, status=status)
        return see_other(reverse("provision_detail", args=[op.pk]))
    return render(request, "provisioning/create_domain.html", context)


@require_safe
def provision_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A provisioning operation: its phase as it goes, then its domain.

    The shared operation page finds operations through their domain, which a provisioning
    operation has only once it is done; this one goes by the team instead.
    """
    op = (
        Operation.objects.select_related("host", "team", "user", "domain")
        .filter(pk=pk, kind=OperationKind.PROVISION)
        .first()
    )
    visible = op is not None and (
        request.user.is_superuser
        or (op.team_id and teams_for(request.user, "view").filter(pk=op.team_id).exists())
    )
    if not visible:
        raise Http404(_("No such operation."))
    partial = bool(getattr(request, "htmx", False))
    page = "provisioning/_provision_status.html" if partial else "provisioning/provision.html"
    response = render(request, page, {"op": op})
    response["Vary"] = "HX-Request"
    return response


# --- requests --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def request_new(request: HttpRequest) -> HttpResponse:
    if not teams_for(request.user, "view").exists():
        raise PermissionDenied(_("Requests are made for a team, and you are in none."))
    form = RequestForm(request.user, request.POST or None)
    context: dict = {"form": form}
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            req = services.submit_request(
                request.user, d["team"], d["template"], d["name"],
                d["vcpus"], d["memory_mib"], d["purpose"],
            )  # fmt: skip
        except ActionRefused as exc:
            status = raise_for_refusal(exc)
            context["refusal"] = exc.message
            return render(request, "provisioning/request_form.html", context, status=status)
        messages.success(request, _("Request #%(pk)d submitted.") % {"pk": req.pk})
        return see_other(reverse("request_detail", args=[req.pk]))
    return render(request, "provisioning/request_form.html", context)


@require_safe
def request_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    mine = VMRequest.objects.filter(requester=user).select_related("team", "template")
    admin_teams = Team.objects.all() if user.is_superuser else teams_for(user, "admin")
    to_decide = VMRequest.objects.filter(
        team__in=admin_teams.values("pk"), state=RequestState.SUBMITTED
    ).select_related("team", "template", "requester")
    return render(request, "provisioning/request_list.html", {"mine": mine, "to_decide": to_decide})


def _visible_request(request: HttpRequest, pk: int) -> VMRequest:
    req = (
        services.visible_requests(request.user)
        .select_related("team", "template", "requester", "decided_by", "host")
        .filter(pk=pk)
        .first()
    )
    if req is None:
        raise Http404(_("No such request."))
    return req


def _request_page(
    request: HttpRequest, req: VMRequest, approve_form: ApproveForm | None = None, status=200
) -> HttpResponse:
    """The request's page; as it stands (no form with errors), it updates itself: kept per
    content and polled (`kept_pages`), so a decision made by someone else shows."""
    may_decide = req.state == RequestState.SUBMITTED and is_team_admin(request.user, req.team)
    as_it_stands = approve_form is None
    # The hosts the approval may choose (while it waits for this person's decision).
    targets = tuple(req.template.hosts.filter(enabled=True).values_list("pk", "name"))
    if approve_form is None:
        approve_form = ApproveForm(
            req.template, initial={"host": targets[0][0] if targets else None}
        )
    partial = htmx_partial(request)
    context = {
        "req": req,
        "may_decide": may_decide,
        "approve_form": approve_form,
        "reject_form": RejectForm(),
        "live_path": kept_pages.page_path(request) if as_it_stands else "",
    }

    def render_page() -> HttpResponse:
        page = "provisioning/_request_panel.html" if partial else "provisioning/request_detail.html"
        response = render(request, page, context, status=status)
        patch_vary_headers(response, ["HX-Request"])
        return response

    if not as_it_stands:
        return render_page()
    # All the page shows from the database: the request, the names it links, the choices.
    facts = (
        "request_detail", tuple(getattr(req, f.attname) for f in VMRequest._meta.concrete_fields),
        req.team.name, req.template.name, req.template.disk_gib,
        req.requester.username if req.requester else None,
        req.decided_by.username if req.decided_by else None,
        req.host.name if req.host else None, may_decide, targets if may_decide else (),
    )  # fmt: skip
    return kept_pages.render_kept(request, partial, facts, render_page)


@require_safe
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _request_page(request, _visible_request(request, pk))


@require_POST
def request_approve(request: HttpRequest, pk: int) -> HttpResponse:
    req = _visible_request(request, pk)
    form = ApproveForm(req.template, request.POST)
    if not form.is_valid():
        # A host the template does not target (or no host at all) is the form's error,
        # never "the first host" instead; said only to those who may decide.
        if not is_team_admin(request.user, req.team):
            raise PermissionDenied(_("Only this team's admins may decide requests."))
        return _request_page(request, req, form, status=400)
    host = form.cleaned_data["host"]
    try:
        services.approve_request(request.user, req, host)
    except ActionRefused as exc:
        raise_for_refusal(exc)
        messages.error(request, exc.message)
    return see_other(reverse("request_detail", args=[req.pk]))


@require_POST
def request_reject(request: HttpRequest, pk: int) -> HttpResponse:
    req = _visible_request(request, pk)
    form = RejectForm(request.POST)
    if not is_team_admin(request.user, req.team):
        raise PermissionDenied(_("Only this team's admins may decide requests."))
    if not form.is_valid():
        messages.error(request, _("Say why the request is rejected."))
        return see_other(reverse("request_detail", args=[req.pk]))
    try:
        services.reject_request(request.user, req, form.cleaned_data["reason"])
    except ActionRefused as exc:
        raise_for_refusal(exc)
        messages.error(request, exc.message)
    return see_other(reverse("request_detail", args=[req.pk]))


# --- notifications and quotas ----------------------------------------------------------


@require_safe
def notification_list(request: HttpRequest) -> HttpResponse:
    items = Notification.objects.filter(user=request.user)[:100]
    return render(request, "provisioning/notification_list.html", {"items": items})


@require_safe
def nav_counts(request: HttpRequest) -> HttpResponse:
    """The navigation's counts (unread notifications, requests waiting for the user's
    decision), loaded by each page after it shows (htmx), so that the page itself stays
    the same for everyone and can be kept."""
    unread, waiting = services.waiting_counts(request.user)
    context = {"unread": unread, "waiting": waiting}
    response = render(request, "provisioning/_nav_counts.html", context)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def notification_read(request: HttpRequest) -> HttpResponse:
    services.mark_read(request.user)
    return see_other(reverse("notification_list"))


@require_http_methods(["GET", "POST"])
def team_quota(request: HttpRequest, team: str) -> HttpResponse:
    obj = teams_for(request.user, "view").filter(slug=team).first()
    if obj is None:
        raise Http404(_("No such team."))
    quota = Quota.objects.filter(team=obj).first()
    form = None
    if request.user.is_superuser:
        form = QuotaForm(request.POST or None, instance=quota, team=obj)
    if request.method == "POST":
        if form is None:
            raise PermissionDenied(_("Only superusers may change quotas."))
        if form.is_valid():
            services.set_quota(request.user, obj, **form.cleaned_data)
            messages.success(request, _("Quota of %(team)s saved.") % {"team": obj.name})
            return see_other(reverse("team_quota", args=[obj.slug]))
    context = {
        "team": obj,
        "quota": quota,
        "usage": services.usage(obj),
        "form": form,
        "overruns": services.quota_overruns(obj),
    }
    return render(request, "provisioning/team_quota.html", context)


# --- clones --------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
def domain_clone(request: HttpRequest, host: str, uuid: str) -> HttpResponse:
    """Copy a shut-off domain into its team (against the team's quota)."""
    domain = form_page_domain(request, host, uuid, OperationKind.CLONE)
    form = CloneForm(request.POST or None, initial={"name": f"{domain.name}-copy"[:63]})
    queued, status = queue_from_form(
        request, form,
        lambda data: services.clone_domain(request.user, domain, data["name"]),
        "name",
    )  # fmt: skip
    if queued:
        return queued
    quota = Quota.objects.filter(team=domain.team).first() if domain.team else None
    context = {"domain": domain, "form": form, "quota": quota}
    return render(request, "provisioning/domain_clone.html", context, status=status)
