import contextvars
import uuid

from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse

# The request id travels from the request into the Operation row and so into the task.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# Paths anyone may open: the login page itself, probes and static files.
PUBLIC_PREFIXES = ("/login/", "/healthz", "/readyz", "/static/")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
        request.request_id = request_id
        token = current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["X-Request-Id"] = request_id
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
