import contextvars
import re
import uuid
from datetime import datetime

from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.utils import timezone

# The request id travels from the request into the Operation row and so into the task.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# When the request began, before it read anything: what a service was shown is no older
# (`domains.services.common.queue_operation` refuses an action on a VM whose operations
# changed it since). None outside a request (the worker, scripts, tests calling services).
current_request_started: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "request_started", default=None
)

# Paths anyone may open: the login page itself, probes and static files.
PUBLIC_PREFIXES = ("/login/", "/healthz", "/readyz", "/static/")


# What a request id from a proxy may be: it goes into Operation.request_id (64 characters),
# the logs and the answer's header, so letters, digits, dots, dashes and underscores only.
REQUEST_ID_MAX = 64
_REQUEST_ID_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{REQUEST_ID_MAX}}}")


def request_id_of(request) -> str:
    """The request's X-Request-Id if it is a usable one (see above), else a fresh id.
    An id longer than the column is cut to it, not refused: a proxy's long ids still tie
    the logs together by their beginning."""
    given = (request.headers.get("X-Request-Id") or "")[:REQUEST_ID_MAX]
    return given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex[:16]


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_of(request)
        request.request_id = request_id
        token = current_request_id.set(request_id)
        started = current_request_started.set(timezone.now())
        try:
            response = self.get_response(request)
        finally:
            current_request_started.reset(started)
            current_request_id.reset(token)
        response["X-Request-Id"] = request_id
        return response


class PermissionsPolicyMiddleware:
    """Sends settings.PERMISSIONS_POLICY as the Permissions-Policy header of every answer."""

    def __init__(self, get_response):
        from django.conf import settings

        self.policy = settings.PERMISSIONS_POLICY
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if self.policy:
            response.setdefault("Permissions-Policy", self.policy)
        return response


class LoginRequiredMiddleware:
    """Every page but login and the health probes needs a signed-in user."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated and not request.path.startswith(PUBLIC_PREFIXES):
            if request.headers.get("HX-Request"):
                # A fragment request after the session expired: send the whole page to the
                # login form instead of swapping the form into a table cell.
                response = HttpResponse(status=204)
                response["HX-Redirect"] = redirect_to_login(
                    request.headers.get("HX-Current-URL") or "/"
                ).url
                return response
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)
