"""Pages and sections rendered once per content and kept: the domain list, the activity
page, and a domain's Usage section (what an open domain page polls).

These are what people leave open (they poll themselves) and what a crowd loads at once;
after `kept_sql` made their queries cheap, rendering was most of their cost. A page is kept
under the facts it shows, as `rows` keeps a row: the view passes what it read from the
database (the rows as frozen copies, the counts, the choices offered), and this module adds
what comes from the request: the full path (every filter and page number), whether htmx
asked for the fragment only, the language and time zone, who is signed in, and the
session's CSRF secret (the page carries a token made from it, valid for that session
only). A fact that changed is a new key, so a kept page never shows anything stale.

Not kept: pages with a message to show once, pages while the inventory banner is up (it
shows the time since the watcher's last pass), requests without a CSRF cookie yet, and
anything but a plain 200. Per process, at most KEPT pages and KEPT sections.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from django.contrib.messages import get_messages
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

from . import liveness

KEPT = 256


class _Kept:
    """At most KEPT values, the least recently used going first; for many threads."""

    def __init__(self):
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._values[key] = value
            while len(self._values) > KEPT:
                self._values.popitem(last=False)


_pages = _Kept()
_sections = _Kept()


def page_path(request: HttpRequest) -> str:
    """The request's path and query without `since` (a poll's version of what it shows)."""
    query = request.GET.copy()
    query.pop(SINCE, None)
    return f"{request.path}?{query.urlencode()}" if query else request.path


def _request_facts(request: HttpRequest, partial: bool) -> tuple | None:
    """What the page shows from the request, or None when it must be rendered afresh."""
    secret = request.META.get("CSRF_COOKIE")
    if not secret or len(get_messages(request)) or liveness.watcher_stale():
        return None
    user = request.user
    return (
        page_path(request), partial, get_language(),
        timezone.get_current_timezone_name(),
        user.pk, user.get_username(), user.is_superuser, secret,
    )  # fmt: skip


# A page that updates itself polls with `?since=<its version>`: the answer is 204 (nothing
# to swap) while what it shows is unchanged, else the new page, carrying its new version.
SINCE = "since"


def _version(facts: tuple) -> str:
    # Not hash(): Python salts it per process, and a page polls whichever worker answers.
    return hashlib.blake2b(repr(facts).encode(), digest_size=8).hexdigest()


def render_kept(
    request: HttpRequest, partial: bool, facts: tuple, render: Callable[[], HttpResponse]
) -> HttpResponse:
    """`render()`'s answer, or the one kept for the same request facts and `facts` (all the
    view read from the database that the page shows; hashable). `request.page_version` is
    set for the template: what a poll sends back as `since`."""
    request_facts = _request_facts(request, partial)
    if request_facts is None:
        request.page_version = ""
        return render()
    key = (*request_facts, *facts)
    hit = _pages.get(key)
    # The same for the whole page and its fragment (what a poll asks for), and without
    # the session's secret: only what the page shows.
    path, _partial, *who, _secret = request_facts
    version = hit[2] if hit is not None else _version((path, *who, facts))
    if request.GET.get(SINCE) == version:
        return HttpResponse(status=204)  # unchanged: the page keeps what it shows
    if hit is not None:
        # The kept page's CSRF token is valid: it was made from this session's secret. (Not
        # renewing the cookie here is harmless: it lives a year, and a render renews it.)
        response = HttpResponse(hit[0], content_type=hit[1])
        patch_vary_headers(response, ["HX-Request"])
        return response
    request.page_version = version
    response = render()
    if response.status_code == 200 and not response.streaming:
        _pages.put(key, (response.content, response["Content-Type"], version))
    return response


def section(template_name: str, facts: tuple, context: Callable[[], dict]) -> SafeString:
    """`template_name` rendered with `context()`, or as kept for the same `facts` (all the
    section shows; hashable), language and time zone. The section must not depend on the
    request (no CSRF token, no user): it is rendered without one."""
    key = (template_name, get_language(), timezone.get_current_timezone_name(), *facts)
    html = _sections.get(key)
    if html is None:
        html = mark_safe(render_to_string(template_name, context()))  # noqa: S308 (rendered)
        _sections.put(key, html)
    return html
