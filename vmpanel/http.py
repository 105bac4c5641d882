"""Small answers every app's views share."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect


def see_other(url: str) -> HttpResponse:
    """A 303: after a POST, the browser fetches the next page with GET."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def raise_for_refusal(exc) -> int:
    """Turn a service's refusal (`domains.services.common.ActionRefused`) into the page's
    answer: a 404 for what the user may not see, a 403 for a role too small (both raised);
    otherwise the status the page shows the refusal with (409, or 400 for bad input)."""
    if exc.status == 404:
        raise Http404(exc.message) from None
    if exc.status == 403:
        raise PermissionDenied(exc.message) from None
    return exc.status
